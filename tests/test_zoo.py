"""rl-baselines3-zoo drop-in: the zoo_configs entries work unchanged with rl_zoo3.train / rl_zoo3.enjoy and with
sb3_vla.train (subprocesses with tiny budgets): every env id of every zoo_configs/*.yml that can run here is trained
and enjoyed through rl-zoo's own CLI, as the README shows, and both CLIs build the same stack from the same YAML."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
import yaml
from torch import nn

pytest.importorskip("rl_zoo3")

from sb3_vla.config import VEC_OBS_WRAPPER, VEC_RESIDUAL_WRAPPER, load_hyperparams, resolve
from sb3_vla.extractor import VLAFeaturesExtractor
from tests._helpers import unpack_libero_assets

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "zoo_configs"
ALGOS = ("sac", "ppo", "tqc", "td3")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# tiny budgets: no gradient step for off-policy algos before learning_starts, one short rollout for PPO
TINY = {
    "sac": ["learning_starts:100"],
    "tqc": ["learning_starts:100"],
    "td3": ["learning_starts:100"],
    "ppo": ["n_steps:64", "batch_size:64", "n_epochs:1"],
}


def run(*args: str, timeout: int = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{' '.join(args)}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.parametrize("algo", ALGOS)
def test_every_entry_resolves_with_the_zoo_conventions(algo: str) -> None:
    data = yaml.safe_load((CONF / f"{algo}.yml").read_text())
    assert {"GarmentFold-v0", "Pendulum-v1"} <= set(data)
    for env_id in data:
        hp, source = load_hyperparams(CONF / f"{algo}.yml", env_id)
        assert source is not None
        # a dotted residual policy that defaults to our extractor; policy_kwargs evaluates in rl-zoo's scope
        assert hp["policy"].startswith("sb3_vla.policies.Residual")
        pk = eval(hp.get("policy_kwargs", "dict()"), {"th": th, "nn": nn, "np": np})
        assert "features_extractor_class" not in pk
        # our batched wrappers under rl-zoo's vec_env_wrapper key; per-env wrappers that are not ours under env_wrapper
        assert [next(iter(w)) for w in hp["vec_env_wrapper"]] == [VEC_OBS_WRAPPER, VEC_RESIDUAL_WRAPPER]
        camera = {
            "GarmentFold-v0": ["sb3_vla.envs.garment_fold.CameraObservationWrapper"]
            + (["sb3_vla.envs.garment_fold.TaskPointsObservationWrapper"] if algo != "ppo" else []),
            "LIBERO-Goal-7-v0": ["sb3_vla.envs.libero.LiberoCamerasWrapper"],
        }.get(env_id, [])
        assert [w if isinstance(w, str) else next(iter(w)) for w in hp.get("env_wrapper", [])] == camera
        cfg = resolve(algo, env_id, hp)
        assert cfg.obs_wrapper_kwargs is not None and "base" in cfg.obs_wrapper_kwargs
        assert cfg.policy.__name__.startswith("Residual")
        if env_id == "GarmentFold-v0":
            # the shipped SmallVLA reads the camera; the agent does not see it and the replay buffer does not store it
            assert cfg.obs_wrapper_kwargs["base"] == "small-vla:garment_fold"
            assert {"rgb", "garment_pcd"} <= set(cfg.obs_wrapper_kwargs["drop_keys"])
            # the camera and the task points come from wrappers, which rl-zoo applies to its eval env too (env_kwargs
            # it drops there)
            assert "rgb_obs" not in cfg.env_kwargs and "task_points_obs" not in cfg.env_kwargs
            assert cfg.other_wrappers[0] == ("sb3_vla.envs.garment_fold.CameraObservationWrapper", {"image_size": 128})
            assert cfg.residual_kwargs is not None and "override_dims" not in cfg.residual_kwargs
            assert cfg.residual_kwargs["decision_interval"] == 4  # chunks of 4 env steps
            if algo == "ppo":
                _check_garment_ppo_entry(cfg)
            else:
                _check_garment_off_policy_entry(cfg, hp)


def _check_garment_off_policy_entry(cfg: Any, hp: dict[str, Any]) -> None:
    """The benchmarked off-policy recipe (RESULTS.md, smallvla_w20k): a quarter of the way to each hand's task point
    in x and y, raw low-dimensional inputs, a 20k-step critic burn-in."""
    assert cfg.obs_wrapper_kwargs["drop_keys"] == ["rgb", "garment_pcd", "joint_pos", "joint_vel"]
    pk = eval(hp["policy_kwargs"], {"th": th, "nn": nn, "np": np})
    assert pk["features_extractor_kwargs"]["exclude_keys"] == ["vla_embedding", "vla_action"]
    assert cfg.other_wrappers[1:] == [("sb3_vla.envs.garment_fold.TaskPointsObservationWrapper", {})]
    # the grasp accuracy shaping is reward only, so it may stay a training-env kwarg
    assert cfg.env_kwargs == {"grasp_accuracy_shaping": 1.0}
    map_kwargs = {"targets_key": "task_points", "relative": True, "held_key": "held", "dims": [0, 1, 3, 4]}
    assert cfg.residual_kwargs["residual_map"] == {"sb3_vla.envs.garment_fold:PinchResidualMap": map_kwargs}
    assert cfg.residual_kwargs["residual_scale"] == 0.25
    assert cfg.normalize is None
    warmup = [c for c in hp["callback"] if isinstance(c, dict) and "sb3_vla.callbacks.ActorWarmupCallback" in c]
    assert warmup == [{"sb3_vla.callbacks.ActorWarmupCallback": {"warmup_steps": 20000}}]


def _check_garment_ppo_entry(cfg: Any) -> None:
    """PPO's entry: absolute pinch-point offsets (0.5 cm x/y, 1.25 mm z, 0.1 on the advance), normalized float keys."""
    assert cfg.residual_kwargs["residual_map"] == "sb3_vla.envs.garment_fold:PinchResidualMap"
    assert cfg.residual_kwargs["residual_scale"] == [0.005, 0.005, 0.00125, 0.005, 0.005, 0.00125, 0.1]
    # normalize only the float vector keys, never the point cloud
    assert cfg.normalize is not None
    norm_keys = {"joint_pos", "joint_vel", "keypoints", "held", "stage", "pinch_pos", "vla_action_mapped"}
    assert set(cfg.normalize["norm_obs_keys"]) == norm_keys


def _run_dir(log: Path, algo: str, env_id: str) -> Path:
    runs = sorted((log / algo).glob(f"{env_id}_*"))
    assert runs, f"no run folder under {log / algo}"
    return runs[-1]


def _zoo_cases() -> list[Any]:
    """Every (algo, env id) of zoo_configs/*.yml; the heavy ones (GarmentFold-v0 beyond SAC, ManiSkill) are slow."""
    cases = []
    for path in sorted(CONF.glob("*.yml")):
        algo = path.stem
        for env_id in yaml.safe_load(path.read_text()):
            heavy = (env_id == "GarmentFold-v0" and algo != "sac") or env_id.startswith(("ManiSkill-", "LIBERO-"))
            marks = [pytest.mark.slow] if heavy else []
            cases.append(pytest.param(algo, env_id, marks=marks, id=f"{algo}-{env_id}"))
    return cases


_RUNNABLE: dict[str, str | None] = {}


def _skip_unless_runnable(env_id: str) -> None:
    """Skip (with the reason) an env whose simulator or assets are missing here: ManiSkill without a Vulkan device,
    LIBERO without its scene assets."""
    if env_id not in _RUNNABLE:
        import gymnasium as gym

        import sb3_vla  # noqa: F401 - registers the env ids

        try:
            with warnings.catch_warnings():  # the simulators' own import-time warnings are not under test here
                warnings.simplefilter("ignore")
                env = gym.make(env_id)
                env.reset(seed=0)
                env.close()
            _RUNNABLE[env_id] = None
        except Exception as e:  # missing optional package, device or assets: each fails its own way
            _RUNNABLE[env_id] = f"{env_id} cannot run here: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if _RUNNABLE[env_id] is not None:
        pytest.skip(_RUNNABLE[env_id])


def _budget(algo: str, env_id: str) -> tuple[int, list[str]]:
    """``-n`` and ``-params`` of a tiny run: a few steps, no gradient step before learning_starts for off-policy
    algorithms, one short rollout for PPO, a small replay buffer."""
    if env_id == "Pendulum-v1":
        return (300 if algo == "sac" else 128), TINY[algo]
    params = (
        ["buffer_size:1000", "learning_starts:32"] if algo != "ppo" else ["n_envs:1", "n_steps:16", "batch_size:16"]
    )
    return (16 if env_id == "GarmentFold-v0" else 64), [*params, *(["n_epochs:1"] if algo == "ppo" else [])]


@pytest.fixture(scope="session")
def libero_assets(tmp_path_factory: pytest.TempPathFactory) -> str | None:
    """LIBERO's scene assets (unpacked from ../shared/libero-assets), ``None`` where there are none."""
    return unpack_libero_assets(tmp_path_factory.mktemp("libero"))


@pytest.mark.parametrize(("algo", "env_id"), _zoo_cases())
def test_rl_zoo_train_then_enjoy(
    tmp_path: Path, algo: str, env_id: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's rl-zoo commands on every entry: rl_zoo3.train (with rl-zoo's own evaluation, whose eval env is
    built without the YAML's env_kwargs), then rl_zoo3.enjoy on the run."""
    env = dict(ENV)
    if env_id.startswith("LIBERO-"):  # the subprocesses get the assets the way a user gives them
        assets = request.getfixturevalue("libero_assets")
        if assets is None:
            pytest.skip(f"{env_id}: LIBERO's scene assets are not here (../shared/libero-assets)")
        env["SB3_VLA_LIBERO_ASSETS"] = assets
        monkeypatch.setenv("SB3_VLA_LIBERO_ASSETS", assets)
    _skip_unless_runnable(env_id)
    log = tmp_path / "logs"
    n, params = _budget(algo, env_id)
    run("-m", "rl_zoo3.train", "--algo", algo, "--env", env_id, "--gym-packages", "sb3_vla",
        "--conf-file", f"zoo_configs/{algo}.yml", "-n", str(n), "--eval-freq", str(n // 2), "--eval-episodes", "1",
        "-f", str(log), "-params", *params, env=env)  # fmt: skip
    run_dir = _run_dir(log, algo, env_id)
    saved = yaml.unsafe_load((run_dir / env_id / "config.yml").read_text())  # rl-zoo dumps an OrderedDict
    assert saved["policy"].startswith("sb3_vla.policies.Residual")
    assert [next(iter(w)) for w in saved["vec_env_wrapper"]] == [VEC_OBS_WRAPPER, VEC_RESIDUAL_WRAPPER]
    assert (run_dir / f"{env_id}.zip").is_file() and (run_dir / "best_model.zip").is_file()
    if "normalize" in saved:
        assert (run_dir / env_id / "vecnormalize.pkl").is_file()

    from rl_zoo3.utils import ALGOS as ZOO_ALGOS

    model = ZOO_ALGOS[algo].load(run_dir / f"{env_id}.zip", device="cpu", buffer_size=1)
    assert {"vla_action"} <= set(model.observation_space.spaces)  # type: ignore[attr-defined]
    if algo == "sac":
        assert isinstance(model.policy.actor.features_extractor, VLAFeaturesExtractor)
    if env_id == "Pendulum-v1":
        assert {"obs", "vla_action"} == set(model.observation_space.spaces)  # type: ignore[attr-defined]

    steps = 220 if env_id == "Pendulum-v1" else 5
    proc = run("-m", "rl_zoo3.enjoy", "--algo", algo, "--env", env_id, "--gym-packages", "sb3_vla", "-f", str(log),
               "-n", str(steps), "--no-render", "--deterministic", env=env)  # fmt: skip
    if env_id == "Pendulum-v1":
        assert "Episode Reward:" in proc.stdout and "Episode Length 200" in proc.stdout


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "GarmentFold-v0"])
def test_both_clis_build_the_same_stack_from_the_same_yaml(tmp_path: Path, env_id: str) -> None:
    """rl-zoo's ExperimentManager (vec_env_wrapper, env_wrapper, normalize) and sb3_vla.train's experiment layer
    build the same wrappers in the same order, with the same spaces."""
    import argparse

    from rl_zoo3.exp_manager import ExperimentManager
    from stable_baselines3.common.vec_env import VecEnvWrapper

    from sb3_vla.experiment import build_vec_env

    def chain(venv: Any) -> list[str]:
        names = []
        while isinstance(venv, VecEnvWrapper):
            names.append(type(venv).__name__)
            venv = venv.venv
        return [*names, type(venv).__name__, *[type(w).__name__ for w in _env_chain(venv.envs[0])]]

    conf = str(CONF / "sac.yml")
    manager = ExperimentManager(argparse.Namespace(), "sac", env_id, str(tmp_path), optimize_hyperparameters=True,
                                config=conf, verbose=0, n_timesteps=8)  # fmt: skip
    assert manager.setup_experiment() is None  # optimize mode: reads and preprocesses the entry, builds no model
    zoo_env = manager.create_envs(1, no_log=True)
    hp, _ = load_hyperparams(conf, env_id)
    ours = build_vec_env(resolve("sac", env_id, hp), 1, 0)
    try:
        assert chain(zoo_env) == chain(ours)
        assert "VecVLAObservationWrapper" in chain(ours) and "VLAObservationWrapper" not in chain(ours)
        assert zoo_env.observation_space == ours.observation_space
        assert zoo_env.action_space == ours.action_space
    finally:
        zoo_env.close()
        ours.close()


def _env_chain(env: Any) -> list[Any]:
    out = []
    while hasattr(env, "env"):
        out.append(env)
        env = env.env
    return out


def test_sb3_vla_train_reads_the_same_entry_for_garment_fold(tmp_path: Path) -> None:
    run(
        "-m",
        "sb3_vla.train",
        "--algo",
        "sac",
        "--env",
        "GarmentFold-v0",
        "-n",
        "16",
        "--eval-freq",
        "-1",
        "--save-freq",
        "-1",
        "-f",
        str(tmp_path),
        "--no-progress",
        "-params",
        "buffer_size:1000",
    )
    run_dir = _run_dir(tmp_path, "sac", "GarmentFold-v0")
    cfg = yaml.safe_load((run_dir / "GarmentFold-v0" / "config.yml").read_text())
    assert [w if isinstance(w, str) else next(iter(w)) for w in cfg["env_wrapper"]] == [
        "sb3_vla.envs.garment_fold.CameraObservationWrapper",
        "sb3_vla.envs.garment_fold.TaskPointsObservationWrapper",
    ]
    wrappers = {name: kwargs for w in cfg["vec_env_wrapper"] for name, kwargs in w.items()}
    assert list(wrappers) == [VEC_OBS_WRAPPER, VEC_RESIDUAL_WRAPPER]
    assert wrappers[VEC_RESIDUAL_WRAPPER] == {
        "residual_map": {
            "sb3_vla.envs.garment_fold:PinchResidualMap": {
                "targets_key": "task_points",
                "relative": True,
                "held_key": "held",
                "dims": [0, 1, 3, 4],
            }
        },
        "residual_scale": 0.25,
        "decision_interval": 4,
    }
    assert cfg["env_kwargs"] == {"grasp_accuracy_shaping": 1.0}
