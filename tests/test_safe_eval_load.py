"""Nothing lost, nothing run (issue #17): ``sb3_vla.evaluate`` / ``sb3_vla.record`` load a run folder from its plain
files (``vecnormalize.npz``, ``policy.json``, the zip's plain weights) without unpickling, refuse pickle-only files
with a message saying how to opt in, and evaluate a legitimate run to the same numbers as SB3's own loaders; plus
the clear errors of a failing ``module:`` probe, an undotted factory spec and LIBERO without assets."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import torch as th
import yaml
from gymnasium import spaces
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from stable_baselines3 import SAC
from stable_baselines3.common import save_util
from stable_baselines3.common.vec_env import VecNormalize

from sb3_vla.bases import make_base
from sb3_vla.bases.backends.module import ModuleBase, ModuleProbeError
from sb3_vla.bases.backends.sb3_files import UntrustedFileError
from sb3_vla.envs.libero.runtime import ASSETS_ENV_VAR, libero_installed, require_assets
from sb3_vla.evaluate import load_run
from sb3_vla.evaluate import main as evaluate_main
from sb3_vla.evaluation import ZeroResidualPolicy, evaluate_episodes
from sb3_vla.record import record
from sb3_vla.train import build_parser, train

pytestmark = pytest.mark.filterwarnings("ignore:n_timesteps .* <= learning_starts")

ENV = "Pendulum-v1"
EPISODES = 2


class Payload:
    """Unpickling this writes ``marker`` (and returns ``value``, as a stealthy payload would)."""

    def __init__(self, marker: Path, value: object) -> None:
        self.marker, self.value = marker, value

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        code = f"[__import__('pathlib').Path({str(self.marker)!r}).write_text('ran'), {self.value!r}][-1]"
        return (eval, (code,))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Pendulum run with VecNormalize, trained through ``sb3_vla.train`` (as a user runs it)."""
    root = tmp_path_factory.mktemp("safe_eval")
    args = build_parser().parse_args(
        [
            "--algo",
            "sac",
            "--env",
            ENV,
            "--base",
            "zero",
            "-n",
            "64",
            "-f",
            str(root / "logs"),
            "--eval-freq",
            "64",
            "--eval-episodes",
            "1",
            "--seed",
            "0",
            "--save-freq",
            "0",
            "--no-progress",
            "--device",
            "cpu",
            "--verbose",
            "0",
            "-params",
            "learning_starts:32",
            "batch_size:16",
            "buffer_size:200",
            "normalize:true",
            "policy_kwargs:dict(net_arch=[8])",
        ]
    )
    run = train(args)
    for name in ("vecnormalize.npz", "vecnormalize.pkl", "policy.json"):
        assert (run / ENV / name).is_file(), name
    return run


def _copy(run: Path, dst: Path) -> Path:
    return Path(shutil.copytree(run, dst / run.name))


def _forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pickle / cloudpickle load, SB3's zip loader or ``VecNormalize.load`` fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the run folder was unpickled")

    for mod in (pickle, cloudpickle):
        monkeypatch.setattr(mod, "load", refuse)
        monkeypatch.setattr(mod, "loads", refuse)
    monkeypatch.setattr(save_util, "load_from_zip_file", refuse)
    monkeypatch.setattr(VecNormalize, "load", refuse)


def _poison_zip_entry(zip_path: Path, key: str, payload: Payload) -> None:
    """Replace the ``data`` entry ``key`` of an SB3 zip by a cloudpickle-style payload (SB3's loader runs it)."""
    tmp = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(zip_path) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(raw)
                data[key] = {
                    ":type:": "<class 'function'>",
                    ":serialized:": base64.b64encode(pickle.dumps(payload)).decode(),
                }
                raw = json.dumps(data).encode()
            zout.writestr(item, raw)
    tmp.replace(zip_path)


def _reference(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Returns of the policy and of the base as the old loaders gave them (``SAC.load`` + ``VecNormalize.load``),
    after checking that the plain statistics equal the pickled ones."""
    loaded = load_run(run, device="cpu")
    inner = loaded.venv.venv  # the run's env stack under its VecNormalize
    venv = VecNormalize.load(str(run / ENV / "vecnormalize.pkl"), inner)
    venv.training, venv.norm_reward = False, False
    model = SAC.load(run / f"{ENV}.zip", device="cpu", buffer_size=1, optimize_memory_usage=False)
    try:
        new, old = loaded.venv, venv
        assert isinstance(new, VecNormalize) and isinstance(old.obs_rms, dict) and set(new.obs_rms) == set(old.obs_rms)
        for key, rms in old.obs_rms.items():
            np.testing.assert_array_equal(new.obs_rms[key].mean, rms.mean)
            np.testing.assert_array_equal(new.obs_rms[key].var, rms.var)
            assert new.obs_rms[key].count == rms.count
        assert (new.clip_obs, new.epsilon, new.norm_obs, new.training, new.norm_reward) == (
            old.clip_obs,
            old.epsilon,
            old.norm_obs,
            False,
            False,
        )
        policy = evaluate_episodes(model, venv, EPISODES, loaded.eval_seed).returns
        base = evaluate_episodes(ZeroResidualPolicy(venv.action_space), venv, EPISODES, loaded.eval_seed).returns
    finally:
        venv.close()
    return policy, base


# ------------------------------------------------------------------------------------------- plain loading
def test_evaluate_loads_a_run_without_unpickling_and_gives_the_old_numbers(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ref_policy, ref_base = _reference(run_dir)

    marker = tmp_path / "pwned"
    run = _copy(run_dir, tmp_path)
    (run / ENV / "vecnormalize.pkl").write_bytes(pickle.dumps(Payload(marker, None)))
    for name in (f"{ENV}.zip", "best_model.zip"):  # an entry a policy never needs
        _poison_zip_entry(run / name, "lr_schedule", Payload(marker, 0.0))

    out = tmp_path / "eval.json"
    with monkeypatch.context() as m:
        _forbid_unpickling(m)
        evaluate_main([str(run), "--episodes", str(EPISODES), "--device", "cpu", "--json", str(out)])
        results = json.loads(out.read_text())
        best = load_run(run, which="best", device="cpu")  # best_model.zip: no policy.json, the safe zip reader
        best.venv.close()
    assert not marker.exists()
    np.testing.assert_allclose(results["policy"]["returns"], ref_policy, rtol=1e-7)
    np.testing.assert_allclose(results["base"]["returns"], ref_base, rtol=1e-7)
    assert "final policy:" in capsys.readouterr().out


def test_record_loads_a_run_without_unpickling(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pendulum renders with pygame: a plain frame stands in for it
    monkeypatch.setattr(PendulumEnv, "render", lambda self: np.zeros((24, 32, 3), np.uint8))
    marker = tmp_path / "pwned"
    run = _copy(run_dir, tmp_path)
    (run / ENV / "vecnormalize.pkl").write_bytes(pickle.dumps(Payload(marker, None)))
    with monkeypatch.context() as m:
        _forbid_unpickling(m)
        info = record(run, tmp_path / "roll.gif", max_steps=3, fps=2, device="cpu")
    assert not marker.exists()
    assert info["frames"] == 4 + 1 and len(info["returns"]) == 1  # reset + 3 steps, outcome held 1 frame


def test_pickle_only_statistics_are_refused_with_the_opt_in(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    run = _copy(run_dir, tmp_path)
    (run / ENV / "vecnormalize.npz").unlink()
    legit_pkl = (run / ENV / "vecnormalize.pkl").read_bytes()
    (run / ENV / "vecnormalize.pkl").write_bytes(pickle.dumps(Payload(marker, None)))
    pattern = r"has only Pendulum-v1/vecnormalize\.pkl, a pickle.*can run code.*--trust-remote-code"
    with pytest.raises(UntrustedFileError, match=pattern):
        load_run(run, device="cpu")
    with pytest.raises(UntrustedFileError, match=pattern):
        record(run, tmp_path / "roll.gif", device="cpu")
    with pytest.raises(SystemExit) as e:
        evaluate_main([str(run), "--episodes", "1", "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "vecnormalize.pkl, a pickle" in err and "pass --trust-remote-code (trust_remote_code=True in Python)" in err
    assert not marker.exists()

    # the opt-in: a (legit) pickle-only run folder loads through SB3's unpickling loaders, same numbers
    (run / ENV / "vecnormalize.pkl").write_bytes(legit_pkl)
    out = tmp_path / "eval.json"
    evaluate_main([str(run), "--episodes", str(EPISODES), "--device", "cpu", "--trust-remote-code", "--json", str(out)])
    ref_policy, _ = _reference(run_dir)
    np.testing.assert_allclose(json.loads(out.read_text())["policy"]["returns"], ref_policy, rtol=1e-7)


def test_a_zip_that_needs_unpickling_is_refused_with_the_cli_opt_in(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    run = _copy(run_dir, tmp_path)
    (run / ENV / "policy.json").unlink(missing_ok=True)
    _poison_zip_entry(run / f"{ENV}.zip", "policy_kwargs", Payload(marker, {"net_arch": [8]}))
    with pytest.raises(UntrustedFileError, match=r"policy_kwargs' unpickles builtins\.eval.*--trust-remote-code"):
        load_run(run, device="cpu")
    assert not marker.exists()


def test_a_saved_config_asking_for_trust_is_refused(run_dir: Path, tmp_path: Path) -> None:
    run = _copy(run_dir, tmp_path)
    path = run / ENV / "config.yml"
    config = yaml.safe_load(path.read_text())
    config["vec_env_wrapper"][0]["sb3_vla.wrappers.VecVLAObservationWrapper"]["base"] = "zero?trust_remote_code=True"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(
        UntrustedFileError, match=r"saved config loads files with trust_remote_code.*--trust-remote-code"
    ):
        load_run(run, device="cpu")


# ------------------------------------------------------------------------------------------- clear errors
class _ArrayNet(th.nn.Module):
    """A module written for a plain tensor, not the dict a ``module:`` base passes."""

    def __init__(self) -> None:
        super().__init__()
        self.net = th.nn.Linear(3, 1)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return self.net(obs)


def test_module_base_whose_forward_fails_on_the_probe() -> None:
    with pytest.raises(ModuleProbeError) as e:
        ModuleBase(_ArrayNet(), observation_space=spaces.Box(-8, 8, (3,)), device="cpu")
    msg = str(e.value)
    assert "forward(obs) failed on the probe call" in msg and "TypeError" in msg  # what went wrong
    assert "obs = {'obs': (1, 3) float32}" in msg  # what it was given
    assert "one dict of tensors" in msg and "key 'obs' for a Box" in msg
    assert "(B, A)" in msg and "(B, H, A)" in msg and "embed(obs)" in msg and "(B, D)" in msg  # what it must return
    assert "x = obs['obs']" in msg  # the fix
    dict_space = spaces.Dict({"state": spaces.Box(-1, 1, (3,)), "rgb": spaces.Box(0, 255, (8, 8, 3), np.uint8)})
    with pytest.raises(ModuleProbeError) as e:
        make_base("module:test_safe_eval_load._ArrayNet", observation_space=dict_space, device="cpu")
    assert "'state': (1, 3) float32" in str(e.value) and "'rgb': (1, 8, 8, 3) uint8" in str(e.value)


def test_factory_spec_without_a_dot_in_its_module_path() -> None:
    with pytest.raises(ValueError) as e:
        make_base("mybases:make_base")
    msg = str(e.value)
    assert "unknown base spec 'mybases:make_base'" in msg and "'mybases' is not a registered prefix" in msg
    assert "'package.module:Name'" in msg and "e.g. 'my_pkg.bases:make_my_base'" in msg
    with pytest.raises(ValueError, match=r"separates the module from the name with ':'.*e\.g\. 'my_pkg\.bases:make'"):
        make_base("my_pkg.bases.make")
    with pytest.raises(
        ValueError, match=r"'package\.module\.Class' \(or 'package\.module:Class'\).*my_pkg\.nets\.TinyVLA"
    ):
        ModuleBase("TinyVLA")
    with pytest.raises(ValueError, match=r"module:<package\.module\.Class>.*e\.g\. module:my_pkg\.nets\.TinyVLA"):
        make_base("module:TinyVLA")


class _Libero:
    """Stands in for ``libero.libero``: ``get_assets_path`` as LIBERO's, which returns a missing folder when the
    package has no assets and the hub download failed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_assets_path(self) -> str:
        return str(self.path)


def test_libero_without_assets_names_the_environment_variable(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as e:
        require_assets(_Libero(tmp_path / "assets"))
    msg = str(e.value)
    assert "LIBERO has no scene assets" in msg and "does not exist" in msg
    assert f"export {ASSETS_ENV_VAR}=/path/to/LIBERO/libero/libero/assets" in msg and "assets_path=" in msg
    (tmp_path / "assets").mkdir()
    with pytest.raises(ValueError, match="holds no scenes/"):
        require_assets(_Libero(tmp_path / "assets"))
    (tmp_path / "assets" / "scenes").mkdir()
    assert require_assets(_Libero(tmp_path / "assets")) == tmp_path / "assets"


@pytest.mark.skipif(not libero_installed(), reason="libero / robosuite 1.4.0 are not installed")
@pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated:DeprecationWarning")
def test_libero_env_without_assets_fails_before_robosuite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from sb3_vla.envs.libero.env import LiberoEnv
    from sb3_vla.envs.libero.runtime import import_libero

    monkeypatch.delenv(ASSETS_ENV_VAR, raising=False)
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(tmp_path / "libero_config"))
    monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl"))
    libero_pkg = import_libero()
    monkeypatch.setattr(libero_pkg, "_assets_path_cache", None)
    monkeypatch.setattr(libero_pkg, "get_assets_path", lambda: str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=rf"LIBERO has no scene assets.*export {ASSETS_ENV_VAR}="):
        LiberoEnv("libero_goal", 7, cameras=())
