"""ManiSkill3 tasks as residual-RL envs (``pip install -e '.[maniskill]'`` and a Vulkan device).

- :func:`make_maniskill_env`: one documented entry point (obs mode, control mode, number of envs, backend).
- :class:`ManiSkillEnv`: one CPU-simulated task as a Gymnasium env with a numpy Dict observation, registered as
  ``ManiSkill-<task>`` (e.g. ``ManiSkill-PickCube-v1``); its ``scripted_action()`` is the ``scripted`` base.
- :class:`ManiSkillVecEnv`: ManiSkill's batched GPU simulation as one SB3 ``VecEnv``.

Importing this package does not import ``mani_skill``; building an env does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sb3_vla.envs.maniskill.tasks import ENV_ID_PREFIX, TASKS, ManiSkillTask, get_task, resolve_env_id

if TYPE_CHECKING:
    from sb3_vla.envs.maniskill.env import ManiSkillEnv
    from sb3_vla.envs.maniskill.vec_env import ManiSkillVecEnv

__all__ = [
    "ENV_ID_PREFIX",
    "TASKS",
    "ManiSkillEnv",
    "ManiSkillTask",
    "ManiSkillVecEnv",
    "get_task",
    "make_maniskill_env",
    "resolve_env_id",
]


def __getattr__(name: str) -> Any:
    # torch / gymnasium imports only when the env classes are used
    if name == "ManiSkillEnv":
        from sb3_vla.envs.maniskill.env import ManiSkillEnv

        return ManiSkillEnv
    if name == "ManiSkillVecEnv":
        from sb3_vla.envs.maniskill.vec_env import ManiSkillVecEnv

        return ManiSkillVecEnv
    if name == "make_maniskill_env":
        from sb3_vla.envs.maniskill.make import make_maniskill_env

        return make_maniskill_env
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
