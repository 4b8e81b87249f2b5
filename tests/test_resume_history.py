"""Resume keeps history and the run's own config: evaluations, monitor logs and TensorBoard continue across two
resumes; an edited YAML is refused unless asked for; a corrupt newest checkpoint falls back to the previous one."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml
from gymnasium import spaces
from stable_baselines3 import SAC

from sb3_vla.bases import VLABatch, make_base
from sb3_vla.bases.backends.sb3_files import POLICY_SPEC, VEC_NORMALIZE_NPZ, ObsNormalizer
from sb3_vla.checkpoint import latest_checkpoint
from sb3_vla.core.residual_math import compose_action
from sb3_vla.train import build_parser, train

ENV = "Pendulum-v1"


def _args(log: Path, *extra: str):
    argv = ["--algo", "sac", "--env", ENV, "--base", "zero", "--log-folder", str(log), "--no-progress"]
    argv += ["--eval-freq", "100", "--eval-episodes", "1", "--save-freq", "100", "--verbose", "0", "--seed", "2"]
    return build_parser().parse_args([*argv, *extra])


def _conf(tmp_path: Path, **hp) -> Path:
    entry = {"learning_starts": 50, "buffer_size": 2000, "batch_size": 16, "policy_kwargs": "dict(net_arch=[16])"}
    entry["env_kwargs"] = {"max_episode_steps": 50}  # short episodes: several per run, cheap evaluations
    path = tmp_path / "sac.yml"
    path.write_text(yaml.safe_dump({ENV: {**entry, **hp}}))
    return path


def _resume(run: Path, *extra: str):
    return build_parser().parse_args(["--resume", str(run), "--no-progress", *extra])


def _monitor_rows(run: Path) -> list[str]:
    lines = (run / "monitor" / "0.monitor.csv").read_text().splitlines()
    assert lines[0].startswith("#") and lines[1] == "r,l,t"
    assert sum(line == "r,l,t" for line in lines) == 1  # appended, no second header
    return lines[2:]


def test_history_survives_two_resumes(tmp_path: Path) -> None:
    th.set_num_threads(1)
    run = train(_args(tmp_path / "logs", "-n", "200", "--conf-file", str(_conf(tmp_path)), "-params", "normalize:true"))
    first = dict(np.load(run / "evaluations.npz"))
    rows1 = _monitor_rows(run)
    assert first["timesteps"].tolist() == [100, 200] and len(rows1) == 4
    # plain files beside the model: the policy spec and VecNormalize statistics as arrays
    assert (run / ENV / POLICY_SPEC).is_file() and (run / ENV / VEC_NORMALIZE_NPZ).is_file()

    train(_resume(run, "-n", "300"))
    train(_resume(run, "-n", "400"))
    final = dict(np.load(run / "evaluations.npz"))
    assert final["timesteps"].tolist() == [100, 200, 300, 400]
    np.testing.assert_array_equal(final["results"][:2], first["results"])  # earlier evaluations untouched
    rows3 = _monitor_rows(run)
    assert rows3[: len(rows1)] == rows1 and len(rows3) == 8  # 50-step episodes, appended
    events = sorted((run / "tb").rglob("events.out.tfevents.*"))
    assert len(events) == 3 and {e.parent.name for e in events} == {"run_1"}  # one TensorBoard run, continued
    meta = json.loads((latest_checkpoint(run / "checkpoints") / "meta.json").read_text())
    assert meta["num_timesteps"] == 400
    _replays_as_sb3_base(run)


def _replays_as_sb3_base(run: Path) -> None:
    """The run's model loads as an ``sb3:`` base from its plain files and acts as SB3 + VecNormalize would."""
    low, high = np.array([-2.0], np.float32), np.array([2.0], np.float32)
    spec = f"sb3:{run / f'{ENV}.zip'}?inner_base='zero'&residual_scale=0.1"
    base = make_base(spec, action_space=spaces.Box(low, high), device="cpu")
    assert isinstance(base.vec_normalize, ObsNormalizer)
    obs = np.random.default_rng(0).uniform(-1, 1, (4, 3)).astype(np.float32)
    with open(run / ENV / "vecnormalize.pkl", "rb") as f:  # our own file, unpickled only to compute the reference
        vn = pickle.load(f)
    policy_obs = vn.normalize_obs({"obs": obs, "vla_action": np.zeros((4, 1), np.float32)})
    residual, _ = SAC.load(run / f"{ENV}.zip", device="cpu").predict(policy_obs, deterministic=True)
    expected = compose_action(np.zeros((4, 1)), residual, 0.1, low, high)
    action, _ = base.predict(VLABatch(obs={"obs": obs}, env_ids=np.arange(4)))
    np.testing.assert_allclose(action, expected, atol=1e-5)


def test_edited_yaml_is_refused_unless_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    th.set_num_threads(1)
    conf = _conf(tmp_path)
    run = train(_args(tmp_path / "logs", "-n", "150", "--conf-file", str(conf)))
    _conf(tmp_path, learning_rate=0.5, batch_size=8)  # edited in place after the run started
    with pytest.raises(ValueError, match=r"(?s)differ from the run's saved config.*batch_size: 16 \(saved\) -> 8 "):
        train(_resume(run, "-n", "250"))
    with pytest.raises(
        ValueError, match=r"(?s)learning_rate: \(unset\) \(saved\) -> 0\.5 \(now\).*--allow-config-change"
    ):
        train(_resume(run, "-n", "250"))
    with pytest.raises(ValueError, match=r"gamma: \(unset\) \(saved\) -> 0\.9"):
        train(_resume(run, "-n", "250", "--conf-file", str(_conf(tmp_path)), "-params", "gamma:0.9"))

    _conf(tmp_path, batch_size=8)
    train(_resume(run, "-n", "250", "--allow-config-change"))
    assert "batch_size: 16 (saved) -> 8 (now)" in capsys.readouterr().out
    assert yaml.safe_load((run / ENV / "config.yml").read_text())["batch_size"] == 8
    assert yaml.safe_load((run / ENV / "config.1.yml").read_text())["batch_size"] == 16


def test_resume_uses_the_saved_config_when_the_yaml_is_gone(tmp_path: Path, capsys) -> None:
    th.set_num_threads(1)
    conf = _conf(tmp_path, gamma=0.95)
    run = train(_args(tmp_path / "logs", "-n", "120", "--conf-file", str(conf)))
    conf.unlink()
    train(_resume(run, "-n", "180"))
    out = capsys.readouterr().out
    assert "resuming with the saved config" in out
    assert json.loads((latest_checkpoint(run / "checkpoints") / "meta.json").read_text())["num_timesteps"] == 180


def test_corrupt_newest_checkpoint_falls_back(tmp_path: Path, capsys) -> None:
    th.set_num_threads(1)
    run = train(_args(tmp_path / "logs", "-n", "200", "--conf-file", str(_conf(tmp_path)), "--eval-freq", "0"))
    newest = latest_checkpoint(run / "checkpoints")
    assert newest is not None and newest.name == "step_000000000200"
    rb = newest / "replay_buffer.npz"
    rb.write_bytes(rb.read_bytes()[: rb.stat().st_size // 2])  # truncated
    capsys.readouterr()
    train(_resume(run, "-n", "250"))
    out = capsys.readouterr().out
    assert f"{rb}' is truncated or corrupted" in out and "falling back to the previous checkpoint" in out
    assert "at step 100" in out
    assert (run / "checkpoints" / "corrupt-step_000000000200").is_dir()
    meta = json.loads((latest_checkpoint(run / "checkpoints") / "meta.json").read_text())
    assert meta["num_timesteps"] == 250


def test_resume_refuses_a_run_folder_that_opts_in_to_code(tmp_path: Path) -> None:
    run = tmp_path / "sac" / f"{ENV}_1"
    (run / ENV).mkdir(parents=True)
    args = {"env": ENV, "algo": "sac", "base": "sb3:/elsewhere/model.zip?trust_remote_code=True", "seed": 0}
    (run / ENV / "args.yml").write_text(yaml.safe_dump(args))
    (run / ENV / "config.yml").write_text(yaml.safe_dump({"n_timesteps": 100}))
    with pytest.raises(ValueError, match=r"saved config loads files with trust_remote_code.*--trust-remote-code"):
        train(_resume(run))


def test_a_run_saved_with_the_older_wrapper_form_resumes(tmp_path: Path) -> None:
    """A run folder whose config.yml lists our wrappers under env_wrapper (as runs saved before vec_env_wrapper):
    resume reads it as the batched wrappers and finds no config change."""
    th.set_num_threads(1)
    run = train(_args(tmp_path / "logs", "-n", "120", "--conf-file", str(_conf(tmp_path)), "--eval-freq", "0"))
    path = run / ENV / "config.yml"
    config = yaml.safe_load(path.read_text())
    obs, res = (next(iter(w.values())) for w in config.pop("vec_env_wrapper"))
    config["env_wrapper"] = [
        {"sb3_vla.wrappers.VLAObservationWrapper": obs},
        {"sb3_vla.wrappers.ResidualActionWrapper": res},
    ]
    path.write_text(yaml.safe_dump(config))
    with pytest.warns(DeprecationWarning, match="read as vec_env_wrapper"):
        train(_resume(run, "-n", "160"))
    assert json.loads((latest_checkpoint(run / "checkpoints") / "meta.json").read_text())["num_timesteps"] == 160


def test_a_saved_run_loads_its_scale_schedule_at_the_trained_steps(tmp_path: Path) -> None:
    from stable_baselines3.common.vec_env import unwrap_vec_wrapper

    from sb3_vla.evaluate import load_run
    from sb3_vla.wrappers import VecResidualActionWrapper

    th.set_num_threads(1)
    schedule = "residual_scale:{start: 0.2, end: 2.0, steps: 400}"
    run = train(_args(tmp_path / "logs", "-n", "100", "--conf-file", str(_conf(tmp_path)), "-params", schedule))
    loaded = load_run(run)
    try:  # the saved model was trained for 100 env steps: evaluated at its scale then, not at the schedule's start
        wrapper = unwrap_vec_wrapper(loaded.venv, VecResidualActionWrapper)
        assert float(wrapper.residual_scale) == pytest.approx(0.2 + 1.8 * 100 / 400)
    finally:
        loaded.venv.close()
