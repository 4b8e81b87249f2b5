"""Watching a run: repeatable evaluation, the base's cost, the evaluate / plot / record commands on tiny runs."""

from __future__ import annotations

import doctest
import json
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from gymnasium import spaces
from PIL import Image
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure

import sb3_vla.bases.backends.module as module_backend
import sb3_vla.bases.shared
import sb3_vla.evaluation
import sb3_vla.frames
import sb3_vla.threads
import sb3_vla.wrappers.engine
from sb3_vla.base_cost import BaseCostCallback, find_engines
from sb3_vla.bases import ZeroBase
from sb3_vla.bases.backends.module import ModuleBase
from sb3_vla.bases.base import BaseModel, VLABatch
from sb3_vla.bases.shared import SharedBase
from sb3_vla.evaluate import main as evaluate_main
from sb3_vla.evaluation import (
    EpisodeResults,
    ZeroResidualPolicy,
    evaluate_episodes,
    wilson_interval,
)
from sb3_vla.experiment import shared_base
from sb3_vla.plot import load_curve, plot_runs
from sb3_vla.record import record
from sb3_vla.train import build_parser, train
from sb3_vla.wrappers import VecResidualActionWrapper, VecVLAObservationWrapper
from tests._helpers import CountingChunkBase, ToyDictEnv

pytestmark = pytest.mark.filterwarnings("ignore:n_timesteps .* <= learning_starts")

ENV_ID = "Sb3VlaRenderToy-v0"
FRAME = (24, 32)


class RenderToyEnv(ToyDictEnv):
    """:class:`ToyDictEnv` (noise in every step, success flag) that renders a frame whose colour follows the state."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, horizon: int = 8) -> None:
        super().__init__(image_size=8, n_points=4, action_dim=2, horizon=horizon)
        self.render_mode = render_mode

    def render(self) -> np.ndarray:
        frame = np.zeros((*FRAME, 3), np.uint8)
        frame[..., 0] = int(127 * (self._state[0] + 1))
        frame[: FRAME[0] // 2, : FRAME[1] // 2, 1] = 255
        return frame


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=RenderToyEnv)


def _conf(tmp_path: Path, learning_starts: int) -> Path:
    entry = {
        "n_timesteps": 48,
        "policy": "sb3_vla.policies.ResidualSACPolicy",
        "env_wrapper": [
            {"sb3_vla.wrappers.VLAObservationWrapper": {"base": "zero", "drop_keys": ["rgb", "pcd"]}},
            {"sb3_vla.wrappers.ResidualActionWrapper": {"residual_scale": 0.5}},
        ],
        "learning_starts": learning_starts,
        "buffer_size": 200,
        "batch_size": 8,
        "policy_kwargs": "dict(net_arch=[8])",
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "sac.yml"
    path.write_text(yaml.safe_dump({ENV_ID: entry}))
    return path


def _train(tmp_path: Path, *extra: str, learning_starts: int = 1000, seed: int = 0) -> Path:
    args = build_parser().parse_args(
        [
            "--algo",
            "sac",
            "--env",
            ENV_ID,
            "--conf-file",
            str(_conf(tmp_path, learning_starts)),
            "-f",
            str(tmp_path / "logs"),
            "--eval-freq",
            "16",
            "--eval-episodes",
            "5",
            "--seed",
            str(seed),
            "--save-freq",
            "0",
            "--no-progress",
            "--device",
            "cpu",
            "--verbose",
            "0",
            *extra,
        ]
    )
    return train(args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An untrained run, and two seeds of a run that trains (tiny budgets)."""
    root = tmp_path_factory.mktemp("watch")
    return {
        "untrained": _train(root / "u"),
        "seed0": _train(root / "t", learning_starts=16, seed=0),
        "seed1": _train(root / "t", learning_starts=16, seed=1),
    }


# ------------------------------------------------------------------ repeatable evaluation


def test_untrained_policy_scores_identically_at_every_evaluation_and_equals_the_base(runs):
    data = np.load(runs["untrained"] / "evaluations.npz")
    assert list(data["timesteps"]) == [16, 32, 48]
    assert list(data["seeds"]) == [10_000 + j for j in range(5)]
    results = data["results"]
    assert len(set(np.round(results[:, 0], 9))) == 1 and np.ptp(results[0]) > 0  # episodes differ, evaluations don't
    np.testing.assert_array_equal(results, np.tile(results[0], (3, 1)))
    # the zero-initialised residual policy executes the base: same episodes, same returns as the step-0 reference
    np.testing.assert_allclose(results[0], data["base_results"], rtol=1e-6)
    assert data["successes"].shape == (3, 5) and data["base_successes"].shape == (5,)


def test_episode_seeds_do_not_depend_on_the_number_of_eval_envs():
    def make(n: int) -> Any:
        venv = VecVLAObservationWrapper(make_vec_env(ENV_ID, n_envs=n), base="zero", drop_keys=["rgb", "pcd"])
        return VecResidualActionWrapper(venv, residual_scale=0.5)

    one, three = make(1), make(3)
    a = evaluate_episodes(ZeroResidualPolicy(one.action_space), one, 7, seed=5)
    b = evaluate_episodes(ZeroResidualPolicy(three.action_space), three, 7, seed=5)
    np.testing.assert_allclose(a.returns, b.returns)
    assert list(a.seeds) == list(range(5, 12)) and a.lengths.tolist() == [8] * 7
    again = evaluate_episodes(ZeroResidualPolicy(one.action_space), one, 7, seed=5)
    np.testing.assert_array_equal(a.returns, again.returns)


def test_wilson_interval_and_summary():
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0.15 < hi < 0.18  # the 95% upper bound of 0/20 is 16.1%
    res = EpisodeResults(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]), np.full(4, 10), np.array([1, 1, 0, 0], bool))
    s = res.summary()
    assert s["success_rate"] == 0.5 and s["success_ci"][0] < 0.5 < s["success_ci"][1]
    assert s["mean_return"] == 2.5 and s["return_ci"][0] < 2.5 < s["return_ci"][1]
    assert res.score() == (0.5, 2.5)
    assert "success 50% (2/4" in res.describe()


def test_best_model_follows_the_fixed_seed_evaluation(runs):
    data = np.load(runs["seed0"] / "evaluations.npz")
    rates = data["successes"].mean(axis=1)
    assert (runs["seed0"] / "best_model.zip").is_file()
    assert rates.shape == (3,) and data["results"].shape == (3, 5)


def test_doctests_of_the_new_modules():
    modules = (
        sb3_vla.evaluation,
        sb3_vla.frames,
        sb3_vla.threads,
        sb3_vla.bases.shared,
        sb3_vla.wrappers.engine,
        module_backend,
    )
    for module in modules:
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ------------------------------------------------------------------ evaluate CLI


def test_evaluate_cli_on_a_base_and_on_a_run(runs, tmp_path, capsys):
    out = tmp_path / "base.json"
    conf = str(_conf(tmp_path, 1000))
    evaluate_main(["--env", ENV_ID, "--base", "zero", "--conf-file", conf, "--episodes", "5", "--json", str(out)])
    base = json.loads(out.read_text())
    reference = np.load(runs["untrained"] / "evaluations.npz")["base_results"]
    np.testing.assert_allclose(base["base"]["returns"], reference, rtol=1e-6)  # the run's step-0 base reference
    assert base["seeds"] == [10_000, 10_004] and 0 <= base["base"]["success_ci"][0] <= base["base"]["success_ci"][1]

    evaluate_main([str(runs["untrained"]), "--episodes", "5", "--json", str(out)])
    both = json.loads(out.read_text())
    np.testing.assert_allclose(both["policy"]["returns"], both["base"]["returns"], rtol=1e-6)
    assert "final policy: success" in capsys.readouterr().out

    with pytest.raises(SystemExit) as e:
        evaluate_main(["--episodes", "3"])
    assert e.value.code == 2
    assert "exactly one of RUN_DIR" in capsys.readouterr().err


# ------------------------------------------------------------------ plot and record


def test_plot_overlays_runs_with_a_seed_band_and_the_base(runs, tmp_path):
    curve = load_curve(runs["seed0"])
    assert curve.steps.tolist() == [16, 32, 48] and curve.base is not None and 0 <= curve.base <= 100
    path = plot_runs([runs["seed0"], runs["seed1"], runs["untrained"]], tmp_path / "curve.png", figsize=(4, 3), dpi=50)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (150, 200, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # curves, band, text: not a blank canvas
    with pytest.raises(ValueError, match="evaluations.npz"):
        plot_runs([tmp_path], tmp_path / "x.png")


def test_record_writes_a_captioned_gif_of_an_evaluation_episode(runs, tmp_path):
    info = record(runs["seed0"], tmp_path / "roll.gif", which="best", fps=4)
    assert info["frames"] == 9 + 2 and len(info["successes"]) == 1  # reset + 8 steps, outcome held 2 frames
    gif = Image.open(info["path"])
    assert gif.n_frames == 9  # Pillow merges the held (identical) frames into the last one's duration
    frame = np.asarray(gif.convert("RGB"))
    assert frame.shape[1] == FRAME[1] and frame.shape[0] > FRAME[0] + 10  # the caption band below the frame
    band = frame[FRAME[0] :]
    assert band.max() > 200 and band.min() < 30  # white text on black
    base = record(runs["seed0"], tmp_path / "base.gif", base_only=True, episodes=2, fps=4)
    assert base["frames"] == 2 * 11 and len(base["returns"]) == 2


def test_record_writes_an_mp4(runs, tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    info = record(runs["untrained"], tmp_path / "roll.mp4", fps=4)
    n_frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(info["path"]))
    assert n_frames == info["frames"] == 11 and seconds == pytest.approx(11 / 4, abs=0.3)


def test_record_refuses_an_unknown_suffix(runs, tmp_path):
    with pytest.raises(ValueError, match=".gif or .mp4"):
        record(runs["untrained"], tmp_path / "roll.avi")


# ------------------------------------------------------------------ the base's cost


def test_base_cost_metrics_are_logged_with_plausible_values(tmp_path):
    venv = make_vec_env("Pendulum-v1", n_envs=4, seed=0)
    base = CountingChunkBase(action_dim=1, chunk_size=4, embedding_dim=0, key="obs")
    venv = VecResidualActionWrapper(VecVLAObservationWrapper(venv, base=base, query_interval=2), 0.5)
    model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, device="cpu", seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    cost = BaseCostCallback()
    model.learn(128, callback=cost)
    s = cost.last
    # one batched call for the 4 envs every 2 steps: 1/8 calls and 1/2 observations per env step
    assert s["calls_per_step"] == pytest.approx(1 / 8) and s["rows_per_step"] == pytest.approx(0.5)
    assert s["env_steps"] == 128 and s["calls"] == 16 == base.calls - 1  # the reset query came before training
    assert 0 < s["ms_per_call"] < 100 and 0 < s["time_share"] < 1
    import csv

    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert float(rows[-1]["vla/base_calls_per_step"]) == pytest.approx(1 / 8)
    assert float(rows[-1]["vla/base_ms_per_call"]) > 0 and 0 < float(rows[-1]["vla/base_time_share"]) < 1
    assert "0.12 forward calls per env step" in cost.describe()
    assert find_engines(venv)[0] is venv.venv.engine


def test_base_cost_reads_per_env_wrappers_of_a_dummy_vec_env():
    from sb3_vla.wrappers import VLAObservationWrapper

    venv = make_vec_env("Pendulum-v1", n_envs=2, wrapper_class=lambda e: VLAObservationWrapper(e, base="zero"))
    venv.reset()
    engines = find_engines(venv)
    assert len(engines) == 2 and all(e.cost_stats()["calls"] == 1 for e in engines)


class _TinyModule(th.nn.Module):
    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        return th.zeros(obs["obs"].shape[0], 1)


class _StatefulBase(BaseModel):
    stateless = False

    def __init__(self) -> None:
        self.action_space = spaces.Box(-2, 2, (1,))

    def reset(self, env_ids: Any = None) -> None:
        pass

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, None]:
        return np.zeros((len(batch), 1), np.float32), None


def test_train_and_eval_envs_share_one_base_and_close_it_once():
    pendulum = make_vec_env("Pendulum-v1", n_envs=2)
    module = ModuleBase(_TinyModule(), action_space=pendulum.action_space, device="cpu")
    train_env = VecVLAObservationWrapper(pendulum, module)
    lent = shared_base(VecResidualActionWrapper(train_env, 0.5))
    assert isinstance(lent, SharedBase) and lent.inner is train_env.base
    eval_env = VecVLAObservationWrapper(make_vec_env("Pendulum-v1", n_envs=1), lent)
    eval_env.reset()
    eval_env.close()  # must not release the train env's model
    assert hasattr(train_env.base, "module")
    train_env.close()  # ModuleBase.close deletes the module: a second close would raise
    assert shared_base(VecVLAObservationWrapper(make_vec_env("Pendulum-v1", n_envs=1), _StatefulBase())) is None
    assert shared_base(make_vec_env("Pendulum-v1", n_envs=1)) is None
    with pytest.raises(ValueError, match="per-env state"):
        SharedBase(_StatefulBase())
    assert SharedBase(ZeroBase(spaces.Box(-1, 1, (1,)))).stateless


def test_train_summary_reports_base_and_policy_on_the_same_episodes_and_the_cost(tmp_path, capsys):
    _train(tmp_path, "--verbose", "1")
    out = capsys.readouterr().out
    assert "Evaluation on the same 5 seeded episodes (seeds 10000-10004)" in out
    assert "base alone:    success" in out and "final policy:  success" in out
    assert "forward calls per env step" in out and "% of wall time" in out


# ------------------------------------------------------------------ the module: contract, as the README writes it


def test_readme_module_example_builds_a_module_base_from_its_spec(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("**The `module:` contract.**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    code = [x for x in lines if x.strip()]  # ruff formats README code blocks: blank lines do not count
    assert len(code) <= 11 and lines[0].startswith("class TinyVLA")
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text("import torch as th\n\n" + "\n".join(x for x in lines if "th.save" not in x))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"th": th}
    exec("from my_pkg.nets import TinyVLA\n" + next(x for x in lines if "th.save" in x), namespace)
    from sb3_vla.bases import make_base

    pendulum = gym.make("Pendulum-v1")
    base = make_base(
        "module:my_pkg.nets.TinyVLA@tiny.pt",
        observation_space=pendulum.observation_space,
        action_space=pendulum.action_space,
        device="cpu",
    )
    obs = {"obs": np.ones((3, 3), np.float32)}
    action, emb = base.predict(VLABatch(obs=obs, env_ids=np.arange(3)))
    assert action.shape == (3, 1) and np.all(np.abs(action) <= 2) and emb.shape == (3, 2)
    assert base.embedding_dim == 2 and base.action_space is pendulum.action_space


# ------------------------------------------------------------------ threads under rl-zoo


@pytest.mark.skipif(th.cuda.is_available(), reason="the one-thread default applies to CPU-only machines")
def test_under_rl_zoo_sb3_vla_sets_one_thread_unless_the_user_chose(monkeypatch, capsys):
    import sys
    import types

    from sb3_vla.threads import apply_zoo_thread_default, running_under_rl_zoo

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert not running_under_rl_zoo() and not apply_zoo_thread_default()  # pytest is not rl-zoo
    monkeypatch.setitem(sys.modules, "rl_zoo3.train", types.ModuleType("rl_zoo3.train"))  # rl-zoo's CLI imported us
    th.set_num_threads(2)
    try:
        assert apply_zoo_thread_default()
        assert th.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"  # for subprocess workers too
        assert "torch uses 1 CPU thread under rl_zoo3" in capsys.readouterr().err
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice wins
        th.set_num_threads(2)
        assert not apply_zoo_thread_default() and th.get_num_threads() == 2
    finally:
        th.set_num_threads(1)
