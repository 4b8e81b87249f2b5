"""The table of supported ManiSkill3 tasks: language instruction, episode length, scripted base and its noise."""

from __future__ import annotations

from dataclasses import dataclass

#: Prefix of our Gymnasium ids: ``ManiSkill-PickCube-v1`` is our single-env adapter of ManiSkill's ``PickCube-v1``
#: (ManiSkill itself registers ``PickCube-v1``, returning batched torch tensors SB3 cannot take).
ENV_ID_PREFIX = "ManiSkill-"


@dataclass(frozen=True)
class ManiSkillTask:
    """One supported ManiSkill3 task.

    :param task_id: ManiSkill's own env id (``"PickCube-v1"``).
    :param instruction: the language instruction given to the base model / wrappers.
    :param max_episode_steps: episode length (ManiSkill's default for the task).
    :param controller: name of the scripted controller class in :mod:`sb3_vla.envs.maniskill.scripted`.
    :param action_noise_std: default std of the Gaussian noise added to the scripted arm action (normalised units).
    :param target_noise_std: default std (metres) of the per-episode xy offset of the scripted controller's
        targets; together with the action noise it degrades the scripted base to :attr:`base_success_rate`.
    :param base_success_rate: measured success rate of the scripted base with the default noise
        (``benchmarks/maniskill.py``).
    """

    task_id: str
    instruction: str
    max_episode_steps: int
    controller: str
    action_noise_std: float = 0.0
    target_noise_std: float = 0.0
    base_success_rate: float | None = None

    @property
    def env_id(self) -> str:
        """Our Gymnasium id for the task (``"ManiSkill-PickCube-v1"``)."""
        return ENV_ID_PREFIX + self.task_id


TASKS: dict[str, ManiSkillTask] = {
    t.task_id: t
    for t in (
        ManiSkillTask(
            "PickCube-v1",
            instruction="pick up the red cube and move it to the green target",
            max_episode_steps=50,
            controller="PickCubeController",
            action_noise_std=0.1,
            target_noise_std=0.02,
            base_success_rate=0.58,
        ),
        ManiSkillTask(
            "PushCube-v1",
            instruction="push the blue cube into the red and white target region",
            max_episode_steps=50,
            controller="PushCubeController",
            action_noise_std=0.2,
            target_noise_std=0.02,
            base_success_rate=0.48,
        ),
        ManiSkillTask(
            "StackCube-v1",
            instruction="stack the red cube on top of the green cube",
            max_episode_steps=50,
            controller="StackCubeController",
            action_noise_std=0.1,
            target_noise_std=0.01,
            base_success_rate=0.52,
        ),
        ManiSkillTask(
            "PegInsertionSide-v1",
            instruction="pick up the peg and insert it into the hole in the box from the side",
            max_episode_steps=100,
            controller="PegInsertionSideController",
            action_noise_std=0.0,
            target_noise_std=0.003,
            base_success_rate=0.48,
        ),
    )
}


def get_task(task: str) -> ManiSkillTask:
    """Look up a supported task by ManiSkill id (``"PickCube-v1"``) or by our id (``"ManiSkill-PickCube-v1"``).

    :raises ValueError: naming the supported tasks when ``task`` is not one.

    Example::

        >>> get_task("ManiSkill-PushCube-v1").instruction
        'push the blue cube into the red and white target region'
        >>> get_task("PushCube-v1") is get_task("ManiSkill-PushCube-v1")
        True
    """
    key = task[len(ENV_ID_PREFIX) :] if task.startswith(ENV_ID_PREFIX) else task
    if key not in TASKS:
        raise ValueError(
            f"ManiSkill task {task!r} is not supported by sb3_vla.envs.maniskill; supported: {', '.join(TASKS)} "
            f"(as ManiSkill ids or with the {ENV_ID_PREFIX!r} prefix)"
        )
    return TASKS[key]


def resolve_env_id(env_id: str) -> str:
    """Map a plain ManiSkill id of a supported task to our Gymnasium id; other ids pass through unchanged.

    ``python -m sb3_vla.train --env PickCube-v1`` uses this so that the ManiSkill id trains on our adapter.

    Example::

        >>> resolve_env_id("PickCube-v1")
        'ManiSkill-PickCube-v1'
        >>> resolve_env_id("Pendulum-v1")
        'Pendulum-v1'
    """
    return TASKS[env_id].env_id if env_id in TASKS else env_id
