"""Nothing lost: periodic atomic checkpoints, resume after SIGKILL, SIGTERM saves, base faults save first."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import SAC

from sb3_vla.checkpoint import latest_checkpoint
from sb3_vla.train import build_parser, train
from sb3_vla.wrappers import BaseModelError

ROOT = Path(__file__).resolve().parent.parent


def _cmd(log_folder, *extra):
    return [
        sys.executable,
        "-m",
        "sb3_vla.train",
        "--algo",
        "sac",
        "--env",
        "Pendulum-v1",
        "--base",
        "zero",
        "--log-folder",
        str(log_folder),
        "--eval-freq",
        "0",
        "--no-progress",
        "--seed",
        "3",
        "-params",
        "learning_starts:50",
        "buffer_size:5000",
        "batch_size:32",
        "residual_scale:2.0",
        "policy_kwargs:dict(net_arch=[32])",
        *extra,
    ]


def _wait_for_checkpoint(run_root: Path, min_step: int, proc: subprocess.Popen, timeout: float = 900) -> Path:
    t0 = time.time()
    while time.time() - t0 < timeout:
        for ckpts in run_root.glob("sac/Pendulum-v1_*/checkpoints"):
            last = latest_checkpoint(ckpts)
            if last is not None and json.loads((last / "meta.json").read_text())["num_timesteps"] >= min_step:
                return last
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.2)
    raise AssertionError("no checkpoint in time")


def _buffer_len(ckpt: Path) -> int:
    with np.load(ckpt / "replay_buffer.npz", allow_pickle=False) as data:
        return len(data["actions"])


def test_sigkill_then_resume_continues(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        _cmd(tmp_path, "-n", "1200", "--save-freq", "150"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ckpt = _wait_for_checkpoint(tmp_path, 450, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_dir = ckpt.parent.parent
    last = latest_checkpoint(run_dir / "checkpoints")
    assert last is not None
    killed_at = json.loads((last / "meta.json").read_text())["num_timesteps"]
    killed_buffer = _buffer_len(last)
    assert killed_at >= 450 and killed_buffer >= killed_at - 2

    out = subprocess.run(
        _cmd(tmp_path, "--resume", str(run_dir)), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Resuming from {last} at step {killed_at}" in out.stdout
    final = latest_checkpoint(run_dir / "checkpoints")
    meta = json.loads((final / "meta.json").read_text())
    assert meta["num_timesteps"] == 1200
    # the replay buffer continued from the checkpoint instead of starting empty
    assert _buffer_len(final) >= 1200 - 2 > killed_buffer
    model = SAC.load(run_dir / "Pendulum-v1.zip")
    assert model.num_timesteps == 1200


def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path):
    proc = subprocess.Popen(
        _cmd(tmp_path, "-n", "100000", "--save-freq", "200"),
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = _wait_for_checkpoint(tmp_path, 200, proc)
    first_step = json.loads((first / "meta.json").read_text())["num_timesteps"]
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "Stopped by signal" in output and "--resume" in output
    last = latest_checkpoint(first.parent)
    assert json.loads((last / "meta.json").read_text())["num_timesteps"] > first_step


def _nan_base_args(tmp_path, steps: int, *params: str):
    """Train-CLI arguments for Pendulum-v1 with a base that turns NaN after 50 queries."""
    argv = ["--algo", "sac", "--env", "Pendulum-v1", "--base", "tests._helpers:nan_base_factory", "-n", str(steps)]
    argv += ["--log-folder", str(tmp_path), "--eval-freq", "0", "--save-freq", "0", "--no-progress"]
    argv += ["-params", "learning_starts:10", "buffer_size:1000", "policy_kwargs:dict(net_arch=[16])", *params]
    return build_parser().parse_args(argv)


def test_base_fault_saves_checkpoint_and_names_env_step_and_base(tmp_path):
    with pytest.raises(BaseModelError, match=r"(?s)NaNBase returned NaN/inf for env index \[0\].*checkpoint saved"):
        train(_nan_base_args(tmp_path, 500))
    ckpt = latest_checkpoint(next(tmp_path.glob("sac/Pendulum-v1_*")) / "checkpoints")
    assert ckpt is not None and json.loads((ckpt / "meta.json").read_text())["num_timesteps"] >= 45


def test_nonfinite_zero_mode_keeps_training(tmp_path):
    run_dir = train(_nan_base_args(tmp_path, 200, "nonfinite:zero"))
    meta = json.loads((latest_checkpoint(run_dir / "checkpoints") / "meta.json").read_text())
    assert meta["num_timesteps"] == 200


def test_checkpoint_callback_has_its_own_name_and_the_old_one_warns(tmp_path):
    """``ResumableCheckpointCallback`` no longer shadows SB3's ``CheckpointCallback``; the old name still imports,
    with a DeprecationWarning, for one release."""
    import stable_baselines3.common.callbacks as sb3_callbacks

    import sb3_vla.checkpoint as checkpoint
    from sb3_vla.checkpoint import ResumableCheckpointCallback

    assert ResumableCheckpointCallback.__name__ != sb3_callbacks.CheckpointCallback.__name__
    with pytest.warns(DeprecationWarning, match="ResumableCheckpointCallback"):
        old = checkpoint.CheckpointCallback
    assert old is ResumableCheckpointCallback
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=1000, buffer_size=500, seed=0)
    model.learn(40, callback=ResumableCheckpointCallback(tmp_path, save_freq=20))
    assert latest_checkpoint(tmp_path).name == "step_000000000040"
