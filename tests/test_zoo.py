"""rl-baselines3-zoo drop-in: the zoo_configs entries work unchanged with rl_zoo3.train / rl_zoo3.enjoy and with
sb3_vla.train (subprocesses with tiny budgets)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml
from torch import nn

pytest.importorskip("rl_zoo3")

from sb3_vla.config import OBS_WRAPPER, RESIDUAL_WRAPPER, load_hyperparams, resolve
from sb3_vla.extractor import VLAFeaturesExtractor

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


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
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
        names = [next(iter(w)) for w in hp["env_wrapper"]]
        camera = ["sb3_vla.envs.garment_fold.CameraObservationWrapper"] if env_id == "GarmentFold-v0" else []
        assert names == [*camera, OBS_WRAPPER, RESIDUAL_WRAPPER]
        cfg = resolve(algo, env_id, hp)
        assert cfg.obs_wrapper_kwargs is not None and "base" in cfg.obs_wrapper_kwargs
        assert cfg.policy.__name__.startswith("Residual")
        if env_id == "GarmentFold-v0":
            # the shipped SmallVLA reads the camera; the agent does not see it and the replay buffer does not store it
            assert cfg.obs_wrapper_kwargs["base"] == "small-vla:garment_fold"
            assert cfg.obs_wrapper_kwargs["drop_keys"] == ["rgb", "garment_pcd"]
            # the camera comes from a wrapper, which rl-zoo applies to its eval env too (env_kwargs it drops there)
            assert "rgb_obs" not in cfg.env_kwargs
            assert cfg.other_wrappers == [("sb3_vla.envs.garment_fold.CameraObservationWrapper", {"image_size": 128})]
            # the residual recipe: pinch-point offsets (2 cm x/y, 0.5 cm z, 0.3 on the advance), chunks of 4 env steps
            assert cfg.residual_kwargs is not None and "override_dims" not in cfg.residual_kwargs
            assert cfg.residual_kwargs["residual_map"] == "sb3_vla.envs.garment_fold:PinchResidualMap"
            assert cfg.residual_kwargs["residual_scale"] == [0.02, 0.02, 0.005, 0.02, 0.02, 0.005, 0.3]
            assert cfg.residual_kwargs["decision_interval"] == 4
            # normalize only the float vector keys, never the point cloud
            assert cfg.normalize is not None
            norm_keys = {"joint_pos", "joint_vel", "keypoints", "held", "stage", "pinch_pos", "vla_action_mapped"}
            assert set(cfg.normalize["norm_obs_keys"]) == norm_keys


def _run_dir(log: Path, algo: str, env_id: str) -> Path:
    runs = sorted((log / algo).glob(f"{env_id}_*"))
    assert runs, f"no run folder under {log / algo}"
    return runs[-1]


def test_rl_zoo_train_and_enjoy_residual_sac_pendulum(tmp_path: Path) -> None:
    log = tmp_path / "logs"
    run(
        "-m",
        "rl_zoo3.train",
        "--algo",
        "sac",
        "--env",
        "Pendulum-v1",
        "--gym-packages",
        "sb3_vla",
        "--conf-file",
        "zoo_configs/sac.yml",
        "-n",
        "300",
        "--eval-freq",
        "-1",
        "-f",
        str(log),
        "-params",
        *TINY["sac"],
    )
    run_dir = _run_dir(log, "sac", "Pendulum-v1")
    saved = yaml.unsafe_load((run_dir / "Pendulum-v1" / "config.yml").read_text())  # rl-zoo dumps an OrderedDict
    assert saved["policy"] == "sb3_vla.policies.ResidualSACPolicy"

    from stable_baselines3 import SAC

    model = SAC.load(run_dir / "Pendulum-v1.zip", device="cpu")
    assert isinstance(model.policy.actor.features_extractor, VLAFeaturesExtractor)
    assert {"obs", "vla_action"} <= set(model.observation_space.spaces)  # type: ignore[attr-defined]

    proc = run(
        "-m",
        "rl_zoo3.enjoy",
        "--algo",
        "sac",
        "--env",
        "Pendulum-v1",
        "--gym-packages",
        "sb3_vla",
        "-f",
        str(log),
        "-n",
        "220",
        "--no-render",
        "--deterministic",
    )
    assert "Episode Reward:" in proc.stdout and "Episode Length 200" in proc.stdout


@pytest.mark.parametrize("algo", ["ppo", "tqc"])
def test_rl_zoo_train_other_algos(tmp_path: Path, algo: str) -> None:
    log = tmp_path / "logs"
    run(
        "-m",
        "rl_zoo3.train",
        "--algo",
        algo,
        "--env",
        "Pendulum-v1",
        "--gym-packages",
        "sb3_vla",
        "--conf-file",
        f"zoo_configs/{algo}.yml",
        "-n",
        "128",
        "--eval-freq",
        "-1",
        "-f",
        str(log),
        "-params",
        *TINY[algo],
    )
    assert (_run_dir(log, algo, "Pendulum-v1") / "Pendulum-v1.zip").is_file()


def test_rl_zoo_train_and_enjoy_garment_fold(tmp_path: Path) -> None:
    """The headline env through rl-zoo: 2 envs x 8 steps (it runs ~30 steps/s), then enjoy a few steps."""
    log = tmp_path / "logs"
    run(
        "-m",
        "rl_zoo3.train",
        "--algo",
        "sac",
        "--env",
        "GarmentFold-v0",
        "--gym-packages",
        "sb3_vla",
        "--conf-file",
        "zoo_configs/sac.yml",
        "-n",
        "16",
        "--eval-freq",
        "8",  # rl-zoo's own eval env (built without the YAML's env_kwargs) must get the camera too
        "--eval-episodes",
        "1",
        "-f",
        str(log),
        "-params",
        "buffer_size:1000",
    )
    run_dir = _run_dir(log, "sac", "GarmentFold-v0")
    assert (run_dir / "GarmentFold-v0" / "vecnormalize.pkl").is_file()
    run(
        "-m",
        "rl_zoo3.enjoy",
        "--algo",
        "sac",
        "--env",
        "GarmentFold-v0",
        "--gym-packages",
        "sb3_vla",
        "-f",
        str(log),
        "-n",
        "5",
        "--no-render",
        "--deterministic",
    )


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
    wrappers = {name: kwargs for w in cfg["env_wrapper"] for name, kwargs in w.items()}
    assert list(wrappers)[0] == "sb3_vla.envs.garment_fold.CameraObservationWrapper"
    assert wrappers[RESIDUAL_WRAPPER] == {
        "residual_map": "sb3_vla.envs.garment_fold:PinchResidualMap",
        "residual_scale": [0.02, 0.02, 0.005, 0.02, 0.02, 0.005, 0.3],
        "decision_interval": 4,
    }
