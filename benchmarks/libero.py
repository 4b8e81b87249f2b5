"""LIBERO env throughput (raw LIBERO vs our adapter vs the residual wrapper stack) and the scripted base's success.

Usage (repo root): ``python -m benchmarks.libero [--task Goal-7] [--steps 40] [--episodes 10] [--assets DIR]``
(needs .ci/install_libero.sh and LIBERO's assets: ``--assets`` or ``$SB3_VLA_LIBERO_ASSETS``). Writes its section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")


def steps_per_s(step: Any, n: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t)


def raw_libero(suite: str, task_id: int, size: int, render: bool, assets: str | None, n: int) -> float:
    """LIBERO's own OffScreenRenderEnv as its users build it (all observables; two cameras or none)."""
    from sb3_vla.envs.libero.runtime import import_libero

    import_libero(assets)
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs.env_wrapper import ControlEnv

    task_suite = benchmark.get_benchmark_dict()[suite]()
    task = task_suite.get_task(task_id)
    env = ControlEnv(
        bddl_file_name=os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file),
        camera_heights=size,
        camera_widths=size,
        use_camera_obs=render,
        has_offscreen_renderer=render,
    )
    env.reset()
    env.set_init_state(task_suite.get_task_init_states(task_id)[0])
    idle = np.array([0, 0, 0, 0, 0, 0, -1.0])
    rate = steps_per_s(lambda: env.step(idle), n)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="Goal-7", help="<Suite>-<task> (Goal-7: turn on the stove)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per rendering case (x4 without)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per scripted-base noise level")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.02])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--assets", default=None)
    args = parser.parse_args()

    from benchmarks._results import write_section
    from sb3_vla.envs.libero import get_suite, make_libero_env
    from sb3_vla.wrappers import ResidualActionWrapper, VLAObservationWrapper

    short, task = args.task.rsplit("-", 1)
    suite, task_id = get_suite(short).name, int(task)
    env_id = get_suite(short).env_id(task_id)
    rows: list[tuple[str, str, float]] = []

    for render in (True, False):
        n = args.steps if render else 4 * args.steps
        cams = f"agentview + wrist {args.size}px" if render else "none"
        rows.append(
            (
                "raw LIBERO ControlEnv (all observables)",
                cams,
                raw_libero(suite, task_id, args.size, render, args.assets, n),
            )
        )
    for cameras in (("agentview", "wrist"), ("agentview",), ()):
        n = args.steps if cameras else 4 * args.steps
        env = make_libero_env(suite, task_id, image_size=args.size, cameras=cameras, assets_path=args.assets)
        env.reset(seed=0)
        zero = np.zeros(7, dtype=np.float32)
        cams = " + ".join(cameras) + f" {args.size}px" if cameras else "none"
        rows.append(("LiberoEnv (ours)", cams, steps_per_s(lambda e=env, a=zero: e.step(a), n)))
        wrapped = ResidualActionWrapper(VLAObservationWrapper(env, base="scripted"), residual_scale=0.2)
        wrapped.reset(seed=0)
        rows.append(
            (
                "ResidualActionWrapper(VLAObservationWrapper(scripted))",
                cams,
                steps_per_s(lambda w=wrapped, a=zero: w.step(a), n),
            )
        )
        env.close()

    success: list[tuple[float, float, float, int]] = []
    for noise in args.noise:
        env = make_libero_env(suite, task_id, cameras=(), assets_path=args.assets, scripted_noise=noise)
        wins, lengths = [], []
        for ep in range(args.episodes):
            env.reset(seed=1000 + ep)
            t, done = 0, False
            while not done:
                _, _, terminated, truncated, info = env.step(env.unwrapped.scripted_action())
                t, done = t + 1, terminated or truncated
            wins.append(bool(info["is_success"]))
            lengths.append(t)
        succ_len = [ln for ln, w in zip(lengths, wins) if w]
        success.append(
            (noise, float(np.mean(wins)), float(np.mean(succ_len)) if succ_len else float("nan"), args.episodes)
        )
        env.close()

    lines = [
        f'### LIBERO: `{env_id}` ("turn on the stove"), steps/s on CPU (Mesa EGL), one env, 1 process',
        "",
        f"Command: `python -m benchmarks.libero --task {args.task} --steps {args.steps} --episodes {args.episodes}`. "
        "Action: idle (zero) residual; 20 Hz control, 25 physics substeps per step. Shared 2-core machine: treat "
        "figures as +-20%.",
        "",
        "| env | cameras | steps/s |",
        "|---|---|---|",
        *[f"| {name} | {cams} | {rate:.1f} |" for name, cams, rate in rows],
        "",
        f"Scripted base (privileged knob pose, `scripted_noise` = std in m of the push-line offset and of per-step "
        f"arm noise), {args.episodes} episodes from seeded benchmark init states, "
        f"{get_suite(short).max_episode_steps}-step limit:",
        "",
        "| scripted_noise (m) | success rate | mean steps to success | episodes |",
        "|---|---|---|---|",
        *[f"| {n:.3f} | {s:.0%} | {ln:.0f} | {e} |" for n, s, ln, e in success],
    ]
    body = "\n".join(lines)
    print(body)
    write_section("libero", body)


if __name__ == "__main__":
    main()
