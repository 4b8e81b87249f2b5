"""The sb3-vla environment suite, importable as ``sb3_vla.envs``.

``import sb3_vla`` calls :func:`register_envs`, so ``gym.make("GarmentFold-v0")`` and rl-zoo's
``--gym-packages sb3_vla`` work from any directory.
"""

from __future__ import annotations


def register_envs() -> None:
    """Register every env id of the suite with Gymnasium (idempotent)."""
    import gymnasium as gym

    def _register(env_id: str, entry_point: str, **kwargs: object) -> None:
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, **kwargs)  # type: ignore[arg-type]

    _ = _register  # env modules add their ids below

    # Bimanual T-shirt folding on MuJoCo (>= 4.0) flex cloth; mujoco is imported when the env is made
    _register("GarmentFold-v0", "sb3_vla.envs.garment_fold:GarmentFoldEnv", max_episode_steps=150)

    # ManiSkill3 tasks as ManiSkill-<task> (e.g. ManiSkill-PickCube-v1); mani_skill is imported when an env is made
    from sb3_vla.envs.maniskill.tasks import TASKS as maniskill_tasks

    for task in maniskill_tasks.values():
        _register(task.env_id, "sb3_vla.envs.maniskill.env:ManiSkillEnv", kwargs={"task": task.task_id})

    # LIBERO tasks as LIBERO-<Suite>-<task>-v0 (e.g. LIBERO-Goal-7-v0); libero is imported when an env is made
    from sb3_vla.envs.libero.suites import all_env_ids as libero_env_ids

    for env_id, suite, task_id, steps in libero_env_ids():
        _register(
            env_id,
            "sb3_vla.envs.libero.env:LiberoEnv",
            max_episode_steps=steps,
            kwargs={"suite": suite, "task_id": task_id},
        )
