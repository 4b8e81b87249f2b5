"""Record a GarmentFold-v0 rollout of the scripted folder as a GIF (or MP4 when imageio-ffmpeg is installed).

Example::

    python -m sb3_vla.envs.garment_fold.video --out fold.gif --seed 3
    python -m sb3_vla.envs.garment_fold.video --out fold.gif --noise 0 --camera top --size 320
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported


def record(
    out: str,
    seed: int = 0,
    noise: float | None = None,
    camera: str = "front",
    size: tuple[int, int] = (240, 320),
    max_steps: int = 150,
    fps: int = 10,
) -> dict:
    """Roll out the scripted folder for one episode and write every control step's frame to ``out``.

    :return: the last step's ``info`` (``is_success``, ``fold_error``, ...), plus ``frames``.
    """
    import imageio.v2 as imageio
    import numpy as np

    from sb3_vla.envs.garment_fold.env import GarmentFoldEnv

    kwargs: dict = {"render_mode": "rgb_array", "render_size": size, "camera": camera}
    if noise is not None:
        kwargs["scripted_noise"] = noise
    env = GarmentFoldEnv(**kwargs)
    env.reset(seed=seed)
    frames = [env.render()]
    info: dict = {}
    for _ in range(max_steps):
        _, _, terminated, truncated, info = env.step(env.scripted_action())
        frames.append(env.render())
        if terminated or truncated:
            break
    frames += [frames[-1]] * fps  # hold the final fold for a second
    env.close()
    if out.endswith(".gif"):
        imageio.mimsave(out, [np.asarray(f) for f in frames], duration=1.0 / fps, loop=0)
    else:
        imageio.mimsave(out, [np.asarray(f) for f in frames], fps=fps)
    info = dict(info)
    info["frames"] = len(frames)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Record a scripted GarmentFold-v0 fold as a GIF.")
    parser.add_argument("--out", default="fold.gif", help="output path (.gif, or .mp4 with imageio-ffmpeg)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=None, help="scripted perception noise (m); env default if unset")
    parser.add_argument("--camera", default="front", choices=["front", "top"])
    parser.add_argument("--size", type=int, nargs="+", default=[240, 320], help="frame H W (or one value)")
    args = parser.parse_args(argv)
    size = (args.size[0], args.size[-1])
    info = record(args.out, seed=args.seed, noise=args.noise, camera=args.camera, size=size)
    err = ", ".join(f"{e * 100:.1f}" for e in info["fold_error"])
    print(f"wrote {args.out}: {info['frames']} frames, success={info['is_success']}, fold errors (cm) [{err}]")


if __name__ == "__main__":
    main()
