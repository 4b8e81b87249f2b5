"""One documented entry point for ManiSkill3 tasks: a single Gymnasium env, CPU subprocess envs, or GPU batches."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from sb3_vla.envs.maniskill.env import DEFAULT_CONTROL_MODE, ManiSkillEnv, check_obs_mode
from sb3_vla.envs.maniskill.tasks import get_task


def make_maniskill_env(
    task: str,
    obs_mode: str = "state",
    control_mode: str = DEFAULT_CONTROL_MODE,
    num_envs: int = 1,
    sim_backend: str = "auto",
    image_size: int | tuple[int, int] = 128,
    seed: int | None = None,
    vec_env_cls: type[DummyVecEnv] | type[SubprocVecEnv] | None = None,
    **kwargs: Any,
) -> gym.Env | VecEnv:
    """Build a supported ManiSkill3 task for SB3.

    - ``num_envs == 1``: a :class:`~sb3_vla.envs.maniskill.ManiSkillEnv` (Gymnasium env, CPU simulation), the
      same env ``gym.make("ManiSkill-<task>")`` gives.
    - ``num_envs > 1`` on the GPU backend (``sim_backend="gpu"``, or ``"auto"`` with CUDA available): one
      :class:`~sb3_vla.envs.maniskill.ManiSkillVecEnv` simulating all envs as a batch.
    - ``num_envs > 1`` on the CPU backend: ``num_envs`` single envs in a ``SubprocVecEnv`` (or ``vec_env_cls``),
      seeded ``seed + i``. ManiSkill's CPU simulation is single-env; subprocesses help only with spare cores.

    :param task: ``"PickCube-v1"``, ``"PushCube-v1"``, ``"StackCube-v1"``, ``"PegInsertionSide-v1"`` (or with the
        ``ManiSkill-`` prefix).
    :param obs_mode: ``"state"`` (``state`` key: proprioception + privileged task state), ``"rgb"`` (``rgb`` uint8
        ``(H, W, 3)`` + ``state`` without object poses) or ``"state+rgb"`` (``rgb`` + full ``state``).
    :param control_mode: ManiSkill controller; default ``"pd_ee_delta_pose"``, the 7-D end-effector delta VLAs use.
    :param num_envs: number of envs.
    :param sim_backend: ``"auto"``, ``"cpu"`` or ``"gpu"``.
    :param image_size: camera resolution for the image modes.
    :param seed: seed of the CPU vec envs (single env: pass the seed to ``reset``; GPU: ``venv.seed(seed)``).
    :param vec_env_cls: vec env class for CPU ``num_envs > 1`` (default ``SubprocVecEnv``).
    :param kwargs: more :class:`~sb3_vla.envs.maniskill.ManiSkillEnv` arguments (``camera``, ``reward_mode``,
        ``render_mode``, ``max_episode_steps``, ``scripted_action_noise``, ``scripted_target_noise``) and ManiSkill
        ``gym.make`` arguments.
    :return: a Gymnasium env (one env) or an SB3 ``VecEnv``.

    Example::

        env = make_maniskill_env("PickCube-v1", obs_mode="rgb", image_size=128)
        venv = make_maniskill_env("PickCube-v1", num_envs=1024, sim_backend="gpu")  # on a CUDA machine
    """
    get_task(task)
    check_obs_mode(obs_mode)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if sim_backend not in ("auto", "cpu", "gpu", "physx_cpu", "physx_cuda", "cuda"):
        raise ValueError(f"sim_backend must be 'auto', 'cpu' or 'gpu', got {sim_backend!r}")
    gpu = sim_backend in ("gpu", "physx_cuda", "cuda") or (sim_backend == "auto" and th.cuda.is_available())
    common = dict(obs_mode=obs_mode, control_mode=control_mode, image_size=image_size, **kwargs)
    if num_envs == 1 and not gpu:
        return ManiSkillEnv(task, sim_backend="cpu", **common)
    if gpu:
        from sb3_vla.envs.maniskill.vec_env import ManiSkillVecEnv

        venv = ManiSkillVecEnv(task, num_envs=num_envs, sim_backend="gpu", **common)
        if seed is not None:
            venv.seed(seed)
        return venv
    from stable_baselines3.common.env_util import make_vec_env

    return make_vec_env(
        ManiSkillEnv,
        n_envs=num_envs,
        seed=seed,
        env_kwargs=dict(task=task, sim_backend="cpu", **common),
        vec_env_cls=vec_env_cls or SubprocVecEnv,
    )
