"""``make_libero_env``: one documented entry point for a LIBERO task as a residual-RL env."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from sb3_vla.envs.libero.suites import check_task_id, get_suite


def make_libero_env(
    suite: str,
    task_id: int,
    image_size: int | tuple[int, int] = 128,
    cameras: Sequence[str] = ("agentview", "wrist"),
    assets_path: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> gym.Env:
    """Build LIBERO task ``task_id`` of ``suite`` as a :class:`~sb3_vla.envs.libero.env.LiberoEnv` in a ``TimeLimit``.

    Same env as ``gym.make("LIBERO-<Suite>-<task>-v0", ...)`` (e.g. ``LIBERO-Goal-7-v0``).

    :param suite: ``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10``, ``libero_90`` (or ``Spatial``,
        ``Object``, ``Goal``, ``10``, ``90``).
    :param task_id: task index in LIBERO's default order.
    :param image_size: camera resolution ``H = W`` or ``(H, W)``.
    :param cameras: cameras rendered each step, a subset of ``("agentview", "wrist")`` (``()``: no rendering).
    :param assets_path: local LIBERO asset folder (default ``$SB3_VLA_LIBERO_ASSETS``, else LIBERO's download).
    :param seed: seeds the env's RNG (the choice of init state and the scripted base's noise) and action space; the
        first ``reset()`` then needs no seed.
    :param max_episode_steps: episode length (default: the suite's, e.g. 300 for libero_goal).
    :param kwargs: passed on to :class:`~sb3_vla.envs.libero.env.LiberoEnv` (``settle_steps``, ``render_mode``,
        ``scripted_noise``, LIBERO's ``control_freq`` ...).

    Example::

        env = make_libero_env("libero_goal", 7, image_size=128, seed=0)
        obs, info = env.reset()
        info["instruction"]                 # 'turn on the stove'
        obs, reward, terminated, truncated, info = env.step(env.unwrapped.scripted_action())
    """
    from sb3_vla.envs.libero.env import LiberoEnv

    s = get_suite(suite)
    env: gym.Env = LiberoEnv(
        s.name, check_task_id(s, task_id), image_size=image_size, cameras=cameras, assets_path=assets_path, **kwargs
    )
    if seed is not None:
        env.unwrapped._np_random, _ = gym.utils.seeding.np_random(int(seed))
        env.action_space.seed(int(seed))
    return gym.wrappers.TimeLimit(env, max_episode_steps=int(max_episode_steps or s.max_episode_steps))
