"""Per-env-step cost of the VLA observation wrappers: batched vs per-env base calls, and wrapper overhead.

The base is a ResNet-18-sized frozen image encoder (torchvision ``resnet18``, random init) with a linear action
head, run on 128x128 RGB observations. For n_envs in {1, 4, 8} it measures, per env step:

- ``env``: the raw ``DummyVecEnv`` step,
- ``fwd/n``: one batched base forward of n images, divided by n,
- ``batched``: ``VecVLAObservationWrapper`` + ``VecResidualActionWrapper`` step (one forward for all envs),
- ``per-env``: n single-env ``VLAObservationWrapper`` + ``ResidualActionWrapper``, each calling the base with B=1,
- ``overhead``: ``batched - env - fwd/n``, the wrappers' own cost; target <= 10% of ``env + fwd/n``.

Usage::

    python benchmarks/wrapper_overhead.py [--steps 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_vla.bases import BaseModel, VLABatch
from sb3_vla.wrappers import (
    ResidualActionWrapper,
    VecResidualActionWrapper,
    VecVLAObservationWrapper,
    VLAObservationWrapper,
)

try:
    from benchmarks._results import write_section
except ImportError:  # run as a script from the repo root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._results import write_section

IMAGE = 128
ACTION_DIM = 7


class CameraEnv(gym.Env):
    """A cheap env with a 128x128 camera and proprioception, so timings isolate the wrappers and the base."""

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {
                "rgb": spaces.Box(0, 255, (IMAGE, IMAGE, 3), np.uint8),
                "state": spaces.Box(-np.inf, np.inf, (16,), np.float32),
            }
        )
        self.action_space = spaces.Box(-1, 1, (ACTION_DIM,), np.float32)
        self._img = np.zeros((IMAGE, IMAGE, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._img = self.np_random.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8)
        return {"rgb": self._img, "state": np.zeros(16, np.float32)}, {"instruction": "pick up the cube"}

    def step(self, action):
        self._img[0, 0] += 1
        return {"rgb": self._img, "state": np.zeros(16, np.float32)}, 0.0, False, False, {}


class ResNetBase(BaseModel):
    """A frozen ResNet-18 image encoder with a linear action head (random weights: for timing only)."""

    obs_keys = ("rgb",)

    def __init__(self) -> None:
        import torchvision

        self.action_space = spaces.Box(-1, 1, (ACTION_DIM,), np.float32)
        self.embedding_dim = 512
        net = torchvision.models.resnet18(weights=None)
        net.fc = th.nn.Identity()
        self.encoder = net.eval()
        self.head = th.nn.Linear(512, ACTION_DIM).eval()

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        with th.inference_mode():
            x = th.from_numpy(batch.obs["rgb"]).permute(0, 3, 1, 2).float().div_(255.0)
            emb = self.encoder(x)
            return th.tanh(self.head(emb)).numpy(), emb.numpy()


def _time(fn: Any, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def measure(n_envs: int, steps: int, base: ResNetBase) -> dict[str, float]:
    zeros = np.zeros((n_envs, ACTION_DIM), np.float32)
    raw = DummyVecEnv([CameraEnv for _ in range(n_envs)])
    raw.reset()
    t_env = _time(lambda: raw.step(zeros), steps) / n_envs

    imgs = np.stack([CameraEnv().reset(seed=i)[0]["rgb"] for i in range(n_envs)])
    batch = VLABatch(obs={"rgb": imgs}, env_ids=np.arange(n_envs))
    t_fwd = _time(lambda: base.predict(batch), steps) / n_envs

    venv = VecResidualActionWrapper(VecVLAObservationWrapper(DummyVecEnv([CameraEnv] * n_envs), base), 0.1)
    venv.reset()
    t_batched = _time(lambda: venv.step(zeros), steps) / n_envs

    singles = [ResidualActionWrapper(VLAObservationWrapper(CameraEnv(), base), 0.1) for _ in range(n_envs)]
    for e in singles:
        e.reset(seed=0)

    def per_env_step() -> None:
        for e in singles:
            e.step(zeros[0])

    t_per_env = _time(per_env_step, steps) / n_envs
    overhead = t_batched - t_env - t_fwd
    return {
        "n_envs": n_envs,
        "env_ms": 1e3 * t_env,
        "fwd_ms": 1e3 * t_fwd,
        "batched_ms": 1e3 * t_batched,
        "per_env_ms": 1e3 * t_per_env,
        "overhead_ms": 1e3 * overhead,
        "overhead_pct": 100 * overhead / (t_env + t_fwd),
        "speedup": t_per_env / t_batched,
    }


def raw_overhead(steps: int) -> dict[str, float]:
    """Wrapper cost alone on a real gymnasium env with a trivial base (Pendulum-v1, zero base)."""
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_vla import make_residual_vec_env

    n = 8
    zeros = np.zeros((n, 1), np.float32)
    raw = make_vec_env("Pendulum-v1", n_envs=n, seed=0)
    raw.reset()
    t_raw = _time(lambda: raw.step(zeros), steps * 10) / n
    wrapped = make_residual_vec_env("Pendulum-v1", base="zero", n_envs=n, seed=0, residual_scale=1.0)
    wrapped.reset()
    t_wrapped = _time(lambda: wrapped.step(zeros), steps * 10) / n
    return {"raw_us": 1e6 * t_raw, "wrapped_us": 1e6 * t_wrapped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=th.get_num_threads())
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    base = ResNetBase()
    rows = [measure(n, args.steps, base) for n in (1, 4, 8)]
    pend = raw_overhead(args.steps)
    lines = [
        "## Observation/residual wrappers: batched base vs per-env calls",
        "",
        f"Command: `python benchmarks/wrapper_overhead.py --steps {args.steps} --threads {args.threads}`. Base: "
        "ResNet-18 image encoder (random init) + linear action head on 128x128 RGB, torch threads "
        f"{args.threads}. Times are per env step (ms).",
        "",
        "| n_envs | raw env | base fwd / n | batched wrappers | per-env wrappers | overhead | overhead % | "
        "per-env / batched |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_envs']} | {r['env_ms']:.3f} | {r['fwd_ms']:.2f} | {r['batched_ms']:.2f} | "
            f"{r['per_env_ms']:.2f} | {r['overhead_ms']:.3f} | {r['overhead_pct']:.1f}% | {r['speedup']:.2f}x |"
        )
    r8 = rows[-1]
    lines += [
        "",
        f"Targets: overhead <= 10% of (raw env + base fwd / n): {max(r['overhead_pct'] for r in rows):.1f}% at worst "
        f"({'met' if max(r['overhead_pct'] for r in rows) <= 10 else 'not met'}); batched >= 4x cheaper per env step "
        f"than per-env calls at n_envs = 8: {r8['speedup']:.2f}x ({'met' if r8['speedup'] >= 4 else 'not met'}).",
        "",
        f"Wrapper cost alone on Pendulum-v1 (8 envs, zero base): raw {pend['raw_us']:.1f} us vs wrapped "
        f"{pend['wrapped_us']:.1f} us per env step (+{pend['wrapped_us'] - pend['raw_us']:.1f} us).",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("wrapper_overhead", text)


if __name__ == "__main__":
    main()
