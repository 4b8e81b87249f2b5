"""ManiSkill3's batched (GPU) simulation as one SB3 ``VecEnv``, without per-env tensor work in Python.

ManiSkill's own bridge (``mani_skill.vector.wrappers.sb3.ManiSkillSB3VectorEnv``) builds every env's info in a Python
loop that indexes device tensors and copies the whole return/length vectors to the host once *per env*, so a step
costs ``O(N)`` device syncs and ``O(N^2)`` copies. :class:`ManiSkillVecEnv` instead moves each observation key to
the host once per step, the per-env scalars (reward, terminated, truncated, success) in one stacked copy, and the
terminal observations of the finished envs in one indexed copy per key; it auto-resets the finished envs with one
partial ``reset(options={"env_idx": ...})``. The only per-env Python work left is building the list of info dicts
SB3's API requires (plain Python scalars, no tensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_vla.envs.maniskill.env import (
    DEFAULT_CONTROL_MODE,
    check_obs_mode,
    convert_obs,
    import_maniskill,
    maniskill_make_kwargs,
    obs_space_from,
)
from sb3_vla.envs.maniskill.scripted import ScriptedController, make_controller
from sb3_vla.envs.maniskill.tasks import ManiSkillTask, get_task


def obs_to_numpy(obs: dict[str, th.Tensor]) -> dict[str, np.ndarray]:
    """Move a batched Dict observation to the host: one transfer per key."""
    return {k: v.cpu().numpy() for k, v in obs.items()}


def scalars_to_numpy(
    reward: th.Tensor, terminated: th.Tensor, truncated: th.Tensor, success: th.Tensor | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Move the per-env scalars ``(N,)`` to the host in one stacked transfer.

    :return: ``(reward float32, terminated bool, truncated bool, success bool)``, each ``(N,)``.
    """
    n = reward.shape[0]
    if success is None:
        success = th.zeros(n, dtype=th.bool, device=reward.device)
    stacked = (
        th.stack(
            (
                reward.reshape(n).float(),
                terminated.reshape(n).float(),
                truncated.reshape(n).float(),
                success.reshape(n).float(),
            )
        )
        .cpu()
        .numpy()
    )
    return stacked[0].astype(np.float32), stacked[1] > 0.5, stacked[2] > 0.5, stacked[3] > 0.5


def build_infos(
    success: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    done_idx: np.ndarray,
    terminal_obs: dict[str, np.ndarray] | None,
    instruction: str | None,
) -> list[dict[str, Any]]:
    """The list of per-env info dicts SB3 expects, from host arrays.

    Every env gets ``is_success`` (bool) and ``instruction``; finished envs also get ``terminal_observation``
    (row ``j`` of ``terminal_obs`` belongs to env ``done_idx[j]``) and ``TimeLimit.truncated``.
    """
    succ = success.tolist()
    infos: list[dict[str, Any]] = [{"is_success": s, "instruction": instruction} for s in succ]
    if done_idx.size:
        trunc_only = (truncated & ~terminated)[done_idx].tolist()
        for j, i in enumerate(done_idx.tolist()):
            info = infos[i]
            info["TimeLimit.truncated"] = trunc_only[j]
            if terminal_obs is not None:
                info["terminal_observation"] = {k: v[j] for k, v in terminal_obs.items()}
    return infos


class ManiSkillVecEnv(VecEnv):
    """``num_envs`` ManiSkill3 sub-envs simulated as one batch (GPU simulation), exposed as an SB3 ``VecEnv``.

    Observations, spaces, infos and the scripted base are those of :class:`~sb3_vla.envs.maniskill.ManiSkillEnv`,
    batched. Finished sub-envs are reset automatically (SB3 convention: the returned observation is the first of the
    new episode, the last one is in ``infos[i]["terminal_observation"]``). ``env_method("scripted_action")`` runs the
    batched scripted controller once for all sub-envs. Wrap in ``VecMonitor`` for episode statistics.

    :param task: supported task id (``"PickCube-v1"`` or ``"ManiSkill-PickCube-v1"``).
    :param num_envs: number of parallel sub-envs (256+ on a GPU).
    :param obs_mode: ``"state"``, ``"rgb"`` or ``"state+rgb"``.
    :param control_mode: ManiSkill controller (default the 7-D end-effector delta).
    :param image_size: camera resolution.
    :param camera: camera for ``rgb``.
    :param sim_backend: ``"gpu"`` (``"auto"`` picks it when CUDA is available); ``"cpu"`` only works with one env.
    :param reward_mode: ManiSkill reward mode.
    :param max_episode_steps: episode length (default: the task's).
    :param ignore_terminations: never terminate early (success does not end the episode), only truncate (default;
        why: see :class:`~sb3_vla.envs.maniskill.ManiSkillEnv`).
    :param scripted_action_noise: see :class:`~sb3_vla.envs.maniskill.ManiSkillEnv`.
    :param scripted_target_noise: see :class:`~sb3_vla.envs.maniskill.ManiSkillEnv`.
    :param scripted_target_bias: see :class:`~sb3_vla.envs.maniskill.ManiSkillEnv`.
    :param env: an already built batched ManiSkill env (``gym.make(task, num_envs=N, ...)``) to use instead of
        building one (the other build arguments are then ignored).
    :param maniskill_kwargs: passed on to ManiSkill's ``gym.make``.

    Example::

        venv = ManiSkillVecEnv("PickCube-v1", num_envs=512, sim_backend="gpu")
        venv = VecMonitor(venv)
        venv = VecVLAObservationWrapper(venv, base="scripted")
    """

    def __init__(
        self,
        task: str = "PickCube-v1",
        num_envs: int = 256,
        obs_mode: str = "state",
        control_mode: str = DEFAULT_CONTROL_MODE,
        image_size: int | tuple[int, int] = 128,
        camera: str | None = None,
        sim_backend: str = "gpu",
        reward_mode: str | None = None,
        max_episode_steps: int | None = None,
        ignore_terminations: bool = True,
        scripted_action_noise: float | None = None,
        scripted_target_noise: float | None = None,
        scripted_target_bias: tuple[float, float] = (0.0, 0.0),
        env: gym.Env | None = None,
        **maniskill_kwargs: Any,
    ) -> None:
        self.task: ManiSkillTask = get_task(task)
        self.obs_mode = check_obs_mode(obs_mode)
        self.control_mode = control_mode
        self.camera = camera
        self.instruction = self.task.instruction
        self.ignore_terminations = ignore_terminations
        if env is None:
            import_maniskill()
            if sim_backend == "auto":
                sim_backend = "gpu" if th.cuda.is_available() else "cpu"
            kwargs = maniskill_make_kwargs(
                obs_mode,
                control_mode,
                image_size,
                sim_backend,
                reward_mode,
                None,
                max_episode_steps or self.task.max_episode_steps,
                maniskill_kwargs,
            )
            env = gym.make(self.task.task_id, num_envs=num_envs, **kwargs)
        self.maniskill_env: Any = env
        base: Any = self.maniskill_env.unwrapped
        self.device = th.device(str(base.device))
        self.render_mode = None
        first = obs_to_numpy(convert_obs(base.get_obs(), self.obs_mode, camera))
        super().__init__(int(base.num_envs), obs_space_from(first), base.single_action_space)
        self.controller: ScriptedController = make_controller(
            self.task.controller,
            num_envs=self.num_envs,
            device=self.device,
            action_noise_std=self.task.action_noise_std if scripted_action_noise is None else scripted_action_noise,
            target_noise_std=self.task.target_noise_std if scripted_target_noise is None else scripted_target_noise,
            target_bias=(float(scripted_target_bias[0]), float(scripted_target_bias[1])),
        )
        self._actions: th.Tensor | None = None
        self._scripted_cache: np.ndarray | None = None

    # -- VecEnv API -------------------------------------------------------------------------------------------- #
    def reset(self) -> VecEnvObs:
        seeds = None if all(s is None for s in self._seeds) else [int(s or 0) for s in self._seeds]
        options = self._options[0] if self._options and self._options[0] else None
        raw, _ = self.maniskill_env.reset(seed=seeds, options=options)
        self.controller.reset(seed=None if seeds is None else seeds[0])
        self._reset_seeds()
        self._reset_options()
        self._scripted_cache = None
        self.reset_infos = [{"instruction": self.instruction} for _ in range(self.num_envs)]
        return obs_to_numpy(convert_obs(raw, self.obs_mode, self.camera))

    def step_async(self, actions: np.ndarray) -> None:
        act = th.as_tensor(np.asarray(actions, dtype=np.float32), device=self.device)
        self._actions = act.reshape(self.num_envs, -1)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "call step_async before step_wait"
        raw, reward, terminated, truncated, info = self.maniskill_env.step(self._actions)
        self._scripted_cache = None
        term_t = th.as_tensor(terminated, device=self.device).reshape(self.num_envs)
        trunc_t = th.as_tensor(truncated, device=self.device).reshape(self.num_envs)
        if self.ignore_terminations:
            term_t = th.zeros_like(term_t)
        rew_t = th.as_tensor(reward, device=self.device).reshape(self.num_envs)
        rew, term, trunc, succ = scalars_to_numpy(rew_t, term_t, trunc_t, info.get("success"))
        obs = convert_obs(raw, self.obs_mode, self.camera)
        done = term | trunc
        done_idx = np.flatnonzero(done)
        terminal: dict[str, np.ndarray] | None = None
        if done_idx.size:
            idx = th.as_tensor(done_idx, device=self.device)
            terminal = {k: v[idx].cpu().numpy() for k, v in obs.items()}
            raw, _ = self.maniskill_env.reset(options={"env_idx": idx})
            obs = convert_obs(raw, self.obs_mode, self.camera)
            self.controller.reset(idx)
            for i in done_idx.tolist():
                self.reset_infos[i] = {"instruction": self.instruction}
        infos = build_infos(succ, term, trunc, done_idx, terminal, self.instruction)
        return obs_to_numpy(obs), rew, done, infos

    def close(self) -> None:
        self.maniskill_env.close()

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return [int(i) for i in indices]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attributes are shared by all sub-envs (``instruction``, ``task``, ``obs_mode`` ...): one copy per index."""
        if hasattr(self, attr_name):
            value = getattr(self, attr_name)
        elif hasattr(self.maniskill_env.unwrapped, attr_name):
            value = getattr(self.maniskill_env.unwrapped, attr_name)
        else:
            raise AttributeError(f"neither ManiSkillVecEnv nor the ManiSkill env has attribute {attr_name!r}")
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"ManiSkillVecEnv sub-envs share one batched simulation; cannot set {attr_name!r} per env")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Only ``scripted_action`` is per env: one batched controller call, one row per requested index."""
        if method_name != "scripted_action":
            raise AttributeError(f"ManiSkillVecEnv supports env_method('scripted_action') only, got {method_name!r}")
        rows = self.scripted_actions()
        return [rows[i] for i in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.maniskill_env.unwrapped.render_rgb_array()
        return list(frames.cpu().numpy())

    # -- scripted base ----------------------------------------------------------------------------------------- #
    def scripted_actions(self) -> np.ndarray:
        """The batched noisy scripted action ``(N, 7)`` for the current states (computed once per step)."""
        if self.control_mode != DEFAULT_CONTROL_MODE:
            raise ValueError(
                f"the scripted base outputs {DEFAULT_CONTROL_MODE!r} actions; this env uses {self.control_mode!r}"
            )
        if self._scripted_cache is None:
            self._scripted_cache = self.controller.act(self.maniskill_env.unwrapped).cpu().numpy().astype(np.float32)
        return self._scripted_cache
