"""Record a GarmentFold-v0 rollout of the scripted folder as a captioned GIF (or MP4 with imageio-ffmpeg).

Without ``--seed`` the first seed (from ``--first-seed``, default 0) whose fold succeeds is recorded: the episodes
are simulated without rendering until one succeeds (the folder succeeds in about 40% of episodes), then that
episode is rendered. Each frame is captioned with the stage's instruction, the stage, the step and success.

Usage::

    python -m sb3_vla.envs.garment_fold.video --out fold.gif               # a successful fold
    python -m sb3_vla.envs.garment_fold.video --out fold.gif --seed 3      # exactly seed 3, success or not
    python -m sb3_vla.envs.garment_fold.video --out fold.gif --noise 0 --camera top --size 320
"""

from __future__ import annotations

import argparse
import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported


def _env(noise: float | None, **kwargs: Any) -> Any:
    from sb3_vla.envs.garment_fold.env import GarmentFoldEnv

    if noise is not None:
        kwargs["scripted_noise"] = noise
    return GarmentFoldEnv(**kwargs)


def _rollout(env: Any, seed: int, max_steps: int, render: bool) -> tuple[list[Any], dict[str, Any]]:
    """One scripted episode; ``(frames with their captions, last info)`` (no frames unless ``render``)."""
    import numpy as np

    _, first = env.reset(seed=seed)
    frames: list[Any] = [(np.asarray(env.render()), 0, dict(first))] if render else []
    info: dict[str, Any] = {}
    for step in range(1, max_steps + 1):
        _, _, terminated, truncated, info = env.step(env.scripted_action())
        if render:
            frames.append((np.asarray(env.render()), step, dict(info)))
        if terminated or truncated:
            break
    return frames, dict(info)


def find_successful_seed(
    first_seed: int = 0, max_tries: int = 20, noise: float | None = None, max_steps: int = 150
) -> int | None:
    """The first seed from ``first_seed`` whose scripted fold succeeds (simulated without rendering), else ``None``."""
    env = _env(noise)
    try:
        for seed in range(first_seed, first_seed + max_tries):
            if _rollout(env, seed, max_steps, render=False)[1].get("is_success"):
                return seed
    finally:
        env.close()
    return None


def record(
    out: str,
    seed: int | None = None,
    noise: float | None = None,
    camera: str = "front",
    size: tuple[int, int] = (240, 320),
    max_steps: int = 150,
    fps: int = 10,
    first_seed: int = 0,
    captions: bool = True,
) -> dict:
    """Roll out the scripted folder for one episode and write every control step's frame to ``out``.

    :param seed: the episode's seed; ``None``: the first successful seed from ``first_seed`` (or ``first_seed``
        when none of 20 succeeds).
    :return: the last step's ``info`` (``is_success``, ``fold_error``, ...), plus ``frames`` and ``seed``.
    """
    from sb3_vla.frames import caption, write_video

    if seed is None:
        found = find_successful_seed(first_seed, noise=noise, max_steps=max_steps)
        seed = first_seed if found is None else found
    env = _env(noise, render_mode="rgb_array", render_size=size, camera=camera)
    try:
        raw, info = _rollout(env, seed, max_steps, render=True)
    finally:
        env.close()
    frames = []
    for frame, step, step_info in raw:
        if captions:
            lines = [
                str(step_info.get("instruction", "")),
                f"seed {seed}  stage {step_info.get('stage', 0)}  step {step}  "
                + ("SUCCESS" if step_info.get("is_success") else "folding"),
            ]
            frame = caption(frame, lines)
        frames.append(frame)
    frames += [frames[-1]] * fps  # hold the final fold for a second
    write_video(frames, out, fps)
    info["frames"] = len(frames)
    info["seed"] = seed
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Record a scripted GarmentFold-v0 fold as a captioned GIF.")
    parser.add_argument("--out", default="fold.gif", help="output path (.gif, or .mp4 with imageio-ffmpeg)")
    parser.add_argument("--seed", type=int, default=None, help="episode seed (default: the first successful one)")
    parser.add_argument("--first-seed", type=int, default=0, help="where the search for a successful seed starts")
    parser.add_argument("--noise", type=float, default=None, help="scripted perception noise (m); env default if unset")
    parser.add_argument("--camera", default="front", choices=["front", "top"])
    parser.add_argument("--size", type=int, nargs="+", default=[240, 320], help="frame H W (or one value)")
    parser.add_argument("--no-captions", dest="captions", action="store_false")
    args = parser.parse_args(argv)
    size = (args.size[0], args.size[-1])
    info = record(
        args.out,
        seed=args.seed,
        noise=args.noise,
        camera=args.camera,
        size=size,
        first_seed=args.first_seed,
        captions=args.captions,
    )
    err = ", ".join(f"{e * 100:.1f}" for e in info["fold_error"])
    print(
        f"wrote {args.out}: seed {info['seed']}, {info['frames']} frames, success={info['is_success']}, "
        f"fold errors (cm) [{err}]"
    )


if __name__ == "__main__":
    main()
