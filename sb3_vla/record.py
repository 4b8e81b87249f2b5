"""Record a trained run's policy (or its base alone) as a captioned MP4 or GIF.

Usage::

    python -m sb3_vla.record logs/sac/GarmentFold-v0_1 --out rollout.gif [--model final|best] [--base-only]
        [--seed S] [--episodes 1] [--max-steps N] [--fps 10] [--env-kwargs render_size:[240,320]]

The run's env stack is rebuilt as ``python -m sb3_vla.evaluate`` does (:func:`sb3_vla.evaluate.load_run`: no code
from the run folder's files runs unless ``--trust-remote-code``), with ``render_mode="rgb_array"`` (any env that
renders that way works). Each frame gets a caption band: the instruction, the stage (``info["stage"]``), the
step, the return so far and success (``info["is_success"]``). Episode ``k`` starts from ``reset(seed=SEED + k)``,
``SEED`` being the run's first eval seed, so the video shows the evaluation's episodes.

rl-zoo's ``record_video`` records through SB3's ``VecVideoRecorder``: MP4 only (moviepy), into a folder under a name
prefix, without captions; so this module renders frames itself and writes them with Pillow (GIF) or imageio (MP4).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sb3_vla.core.options import parse_key_values
from sb3_vla.frames import caption, write_video

CAPTION_KEYS = ("instruction", "stage", "is_success")


class FrameRecorder(gym.Wrapper):
    """Render after every reset and step and keep ``(frame, caption info)`` pairs in :attr:`frames`.

    Applied per env under the VecEnv, so the frame of an episode's last step is kept before the VecEnv resets.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(
                f"{env.spec.id if env.spec else type(env.unwrapped).__name__} has render_mode {env.render_mode!r}; "
                "recording needs an env built with render_mode='rgb_array'"
            )
        self.frames: list[tuple[np.ndarray, dict[str, Any]]] = []

    def _keep(self, info: dict[str, Any], step: int, reward: float, done: bool) -> None:
        frame = np.asarray(self.env.render())
        meta = {k: info[k] for k in CAPTION_KEYS if k in info}
        meta.update(step=step, reward=reward, done=done)
        self.frames.append((frame, meta))

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._step, self._return = 0, 0.0
        self._keep(info, 0, 0.0, False)
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._step += 1
        self._return += float(reward)
        self._keep(info, self._step, self._return, bool(terminated or truncated))
        return obs, reward, terminated, truncated, info


def caption_lines(meta: dict[str, Any], instruction: str | None) -> list[str]:
    """The caption of one frame: instruction, then stage / step / return / success."""
    status = []
    if "stage" in meta:
        status.append(f"stage {meta['stage']}")
    status.append(f"step {meta['step']}")
    status.append(f"return {meta['reward']:.2f}")
    if "is_success" in meta:
        status.append("SUCCESS" if meta["is_success"] else "no success yet" if not meta["done"] else "failed")
    return [str(meta.get("instruction") or instruction or "(no instruction)"), "  ".join(status)]


def record(
    run_dir: str | Path,
    out: str | Path,
    which: str = "final",
    base_only: bool = False,
    seed: int | None = None,
    episodes: int = 1,
    max_steps: int | None = None,
    fps: int = 10,
    env_kwargs: dict[str, Any] | None = None,
    device: str = "auto",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Roll out ``episodes`` episodes of a run's policy (or of its base, ``base_only``) and write them to ``out``.

    :param trust_remote_code: allow unpickling the run's files (see :func:`sb3_vla.evaluate.load_run`).

    :return: ``{"path", "frames", "returns", "successes"}`` (per episode; success ``None`` when not reported).

    Example::

        record("logs/sac/GarmentFold-v0_1", "rollout.gif", which="best")
    """
    from sb3_vla.evaluate import load_run
    from sb3_vla.evaluation import ZeroResidualPolicy

    kwargs = {"render_mode": "rgb_array", **(env_kwargs or {})}
    wrappers: list[tuple[str, dict[str, Any]]] = [(f"{__name__}.FrameRecorder", {})]
    run = load_run(run_dir, which, 1, device, kwargs, extra_wrappers=wrappers, trust_remote_code=trust_remote_code)
    policy: Any = ZeroResidualPolicy(run.venv.action_space) if base_only else run.model
    first = run.eval_seed if seed is None else seed
    frames: list[np.ndarray] = []
    returns, successes = [], []
    try:
        recorded = run.venv.get_attr("frames")[0]  # a DummyVecEnv hands out the list itself
        for k in range(episodes):
            recorded.clear()
            run.venv.seed(first + k)
            obs = run.venv.reset()
            instructions = getattr(run.venv, "instructions", None)  # the VLA wrapper's, for envs whose info has none
            instruction = instructions[0] if isinstance(instructions, list) else None
            state, start = None, np.ones(1, dtype=bool)
            for _ in range(max_steps or 100_000):
                action, state = policy.predict(obs, state=state, episode_start=start, deterministic=True)
                obs, _, dones, _ = run.venv.step(action)
                start = np.asarray(dones, dtype=bool)
                if dones[0]:
                    break
            episode = _until_done(recorded)
            for frame, meta in episode:
                frames.append(caption(frame, caption_lines(meta, instruction)))
            last = episode[-1][1]
            returns.append(float(last["reward"]))
            successes.append(bool(last["is_success"]) if "is_success" in last else None)
            frames += [frames[-1]] * max(1, fps // 2)  # hold the outcome for half a second
    finally:
        run.venv.close()
    path = write_video(frames, out, fps)
    return {"path": path, "frames": len(frames), "returns": returns, "successes": successes}


def _until_done(frames: list[tuple[np.ndarray, dict[str, Any]]]) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """The frames of the first episode: from the first reset up to its done step (the auto-reset frame dropped)."""
    out = []
    for item in frames:
        out.append(item)
        if item[1]["done"]:
            break
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sb3_vla.record", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", "-o", required=True, help="output .gif or .mp4")
    p.add_argument("--model", choices=["final", "best"], default="final")
    p.add_argument("--base-only", action="store_true", help="record the base alone (zero residual)")
    p.add_argument(
        "--seed", type=int, default=None, help="reset seed of the first episode (default: the run's eval seed)"
    )
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="stop an episode after this many steps")
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--env-kwargs", nargs="+", default=None, metavar="KEY:VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow unpickling the run's files (vecnormalize.pkl, the zip), which runs code from them",
    )
    args = p.parse_args(argv)
    from sb3_vla.experiment import configure_threads

    configure_threads(-1, args.device)
    try:
        info = record(
            args.run_dir,
            args.out,
            args.model,
            args.base_only,
            args.seed,
            args.episodes,
            args.max_steps,
            args.fps,
            parse_key_values(args.env_kwargs),
            args.device,
            args.trust_remote_code,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    outcome = ", ".join(
        f"return {r:.2f}" + ("" if s is None else f" ({'success' if s else 'failure'})")
        for r, s in zip(info["returns"], info["successes"])
    )
    print(f"wrote {info['path']}: {info['frames']} frames; {outcome}")


if __name__ == "__main__":
    main()
