"""The train CLI end to end, as a user runs it (subprocesses)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from stable_baselines3 import SAC

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "sb3_vla.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_pendulum_run_writes_model_config_tensorboard_and_evaluations(tmp_path):
    out = _run(
        "--algo",
        "sac",
        "--env",
        "Pendulum-v1",
        "--base",
        "zero",
        "-n",
        "400",
        "--log-folder",
        str(tmp_path),
        "--eval-freq",
        "200",
        "--eval-episodes",
        "1",
        "--seed",
        "1",
        "-params",
        "learning_starts:100",
        "batch_size:32",
        "residual_scale:1.5",
        "normalize:true",
        "policy_kwargs:dict(net_arch=[32])",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run = tmp_path / "sac" / "Pendulum-v1_1"
    config = yaml.safe_load((run / "Pendulum-v1" / "config.yml").read_text())
    # CLI overrides landed in the resolved config, routed into the wrapper kwargs
    assert config["batch_size"] == 32 and config["normalize"] is True
    assert config["vec_env_wrapper"][1]["sb3_vla.wrappers.VecResidualActionWrapper"]["residual_scale"] == 1.5
    assert (run / "Pendulum-v1" / "vecnormalize.pkl").is_file()
    assert list((run / "tb").rglob("events.out.tfevents.*"))
    evaluations = np.load(run / "evaluations.npz")
    assert list(evaluations["timesteps"]) == [200, 400]
    model = SAC.load(run / "Pendulum-v1.zip")
    assert model.num_timesteps == 400 and model.batch_size == 32


def test_cli_flags_override_yaml(tmp_path):
    conf = tmp_path / "sac.yml"
    conf.write_text(
        yaml.safe_dump(
            {
                "Pendulum-v1": {
                    "n_timesteps": 100000,
                    "batch_size": 64,
                    "learning_starts": 50,
                    "env_wrapper": [{"sb3_vla.wrappers.VLAObservationWrapper": {"base": "zero"}}],
                }
            }
        )
    )
    out = _run(
        "--algo",
        "sac",
        "--env",
        "Pendulum-v1",
        "--conf-file",
        str(conf),
        "-n",
        "120",
        "--log-folder",
        str(tmp_path),
        "--eval-freq",
        "0",
        "-params",
        "batch_size:16",
    )
    assert out.returncode == 0, out.stderr
    run = tmp_path / "sac" / "Pendulum-v1_1"
    model = SAC.load(run / "Pendulum-v1.zip")
    assert model.num_timesteps == 120 and model.batch_size == 16
    assert "Hyperparameters from" in out.stdout and "sac.yml:Pendulum-v1" in out.stdout
    # the older form (our per-env wrapper under env_wrapper) still trains: read as the batched wrapper, with a
    # DeprecationWarning the command shows; the run's config is saved in the vec_env_wrapper form
    assert "DeprecationWarning" in out.stderr and "vec_env_wrapper" in out.stderr
    config = yaml.safe_load((run / "Pendulum-v1" / "config.yml").read_text())
    assert "env_wrapper" not in config
    assert config["vec_env_wrapper"] == [
        {"sb3_vla.wrappers.VecVLAObservationWrapper": {"base": "zero"}},
        {"sb3_vla.wrappers.VecResidualActionWrapper": {}},
    ]


def test_garment_fold_headline_command(tmp_path):
    """python -m sb3_vla.train --algo sac --env GarmentFold-v0: no --base, so the shipped SmallVLA is the base."""
    out = _run(
        "--algo",
        "sac",
        "--env",
        "GarmentFold-v0",
        "-n",
        "160",
        "--log-folder",
        str(tmp_path),
        "--eval-freq",
        "0",
        "--seed",
        "0",
        "-params",
        "n_envs:1",
        "learning_starts:40",
        "batch_size:16",
        "buffer_size:500",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run = tmp_path / "sac" / "GarmentFold-v0_1"
    config = yaml.safe_load((run / "GarmentFold-v0" / "config.yml").read_text())
    per_env = [w if isinstance(w, str) else next(iter(w)) for w in config["env_wrapper"]]
    # the camera the base reads, the task points the residual moves toward
    assert per_env == [
        "sb3_vla.envs.garment_fold.CameraObservationWrapper",
        "sb3_vla.envs.garment_fold.TaskPointsObservationWrapper",
    ]
    wrappers = {name: kwargs for w in config["vec_env_wrapper"] for name, kwargs in w.items()}
    residual = wrappers["sb3_vla.wrappers.VecResidualActionWrapper"]
    assert list(residual["residual_map"]) == ["sb3_vla.envs.garment_fold:PinchResidualMap"]
    assert residual["decision_interval"] == 4
    model = SAC.load(run / "GarmentFold-v0.zip")
    assert model.action_space.shape == (4,)  # per hand, xy fractions of the way to its current task point
    assert wrappers["sb3_vla.wrappers.VecVLAObservationWrapper"]["base"] == "small-vla:garment_fold"
    spaces = model.observation_space.spaces
    assert {"vla_action", "vla_action_mapped", "vla_embedding", "task_points", "keypoints", "stage"} <= set(spaces)
    assert spaces["vla_action_mapped"].shape == (19,)  # commanded pinch points, advance, offsets to the task points
    assert spaces["vla_embedding"].shape == (256,) and "rgb" not in spaces  # the camera feeds the base only
    assert not {"garment_pcd", "joint_pos", "joint_vel"} & set(spaces)  # keypoints, not the point cloud or joints
    # the residual recipe: layer-normed critics, a shared extractor, the executed-residual buffer with 3-step returns
    assert model.policy.critic_layer_norm and model.policy.share_features_extractor
    kinds = model.policy.actor.features_extractor.kinds
    assert "vla_embedding" not in kinds and "vla_action" not in kinds and "task_points" in kinds
    assert model.target_entropy == 2.0
    assert {"sb3_vla.callbacks.ActorWarmupCallback": {"warmup_steps": 20000}} in config["callback"]
    assert {"sb3_vla.callbacks.ProgressiveExplorationCallback": {"ramp_steps": 10000, "warmup_gain": 0.1}} in config[
        "callback"
    ]
    assert {"sb3_vla.callbacks.ResidualReplayBufferCallback": {"n_steps": 3}} in config["callback"]


def test_garment_fold_pinch_point_residual_from_the_command_line(tmp_path):
    """The scripted folder with a residual in pinch-point space, set entirely from -params."""
    out = _run(
        "--algo",
        "sac",
        "--env",
        "GarmentFold-v0",
        "--base",
        "scripted",
        "-n",
        "64",
        "--log-folder",
        str(tmp_path),
        "--eval-freq",
        "0",
        "-params",
        "n_envs:1",
        "env_kwargs:{rgb_obs: false, pcd_points: 0}",
        "learning_starts:32",
        "batch_size:16",
        "buffer_size:500",
        "residual_map:sb3_vla.envs.garment_fold:PinchResidualMap",
        "residual_scale:[0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.3]",
        "drop_keys:[]",
        "callback:[sb3_vla.callbacks.VLAStatsCallback, {sb3_vla.callbacks.ActorWarmupCallback: {warmup_steps: 48}},"
        " {sb3_vla.callbacks.ProgressiveExplorationCallback: {ramp_steps: 64}}]",
        "decision_interval:2",
        "replay_buffer_class:sb3_vla.buffers.ResidualReplayBuffer",
        "replay_buffer_kwargs:dict(n_steps=2, gamma=0.9)",
        "policy_kwargs:dict(net_arch=[32], critic_layer_norm=True)",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    run = tmp_path / "sac" / "GarmentFold-v0_1"
    config = yaml.safe_load((run / "GarmentFold-v0" / "config.yml").read_text())
    per_env = [w if isinstance(w, str) else next(iter(w)) for w in config["env_wrapper"]]
    assert per_env[0] == "sb3_vla.envs.garment_fold.CameraObservationWrapper"  # the camera the base reads
    wrappers = {name: kwargs for w in config["vec_env_wrapper"] for name, kwargs in w.items()}
    residual = wrappers["sb3_vla.wrappers.VecResidualActionWrapper"]
    assert residual["residual_map"] == "sb3_vla.envs.garment_fold:PinchResidualMap"
    model = SAC.load(run / "GarmentFold-v0.zip")
    assert model.action_space.shape == (7,)
    assert model.observation_space.spaces["vla_action_mapped"].shape == (7,)
    assert model.observation_space.spaces["pinch_pos"].shape == (6,)
    assert {"sb3_vla.callbacks.ActorWarmupCallback": {"warmup_steps": 48}} in config["callback"]
    assert residual["decision_interval"] == 2
    assert model.policy.critic_layer_norm
    assert model.num_timesteps == 64  # decisions: 128 env steps
