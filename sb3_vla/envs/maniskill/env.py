"""A single ManiSkill3 task as a standard Gymnasium env that SB3 takes: numpy Dict observations, Python scalars.

:class:`ManiSkillEnv` *holds* the ManiSkill env (it does not wrap it with ``gym.Wrapper``) so that
``env.unwrapped`` is the adapter itself: that is where the residual wrappers find :attr:`ManiSkillEnv.instruction`
and :meth:`ManiSkillEnv.scripted_action` (the ``--base scripted`` spec calls ``env.unwrapped.scripted_action()``).
The raw ManiSkill env stays reachable as :attr:`ManiSkillEnv.maniskill_env`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

from sb3_vla.envs.maniskill.scripted import ScriptedController, make_controller
from sb3_vla.envs.maniskill.tasks import ManiSkillTask, get_task

OBS_MODES = ("state", "rgb", "state+rgb")
#: The end-effector delta controller (7-D: xyz, rotation, gripper), the action space VLAs use.
DEFAULT_CONTROL_MODE = "pd_ee_delta_pose"


def check_obs_mode(obs_mode: str) -> str:
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
    return obs_mode


def import_maniskill() -> None:
    """Import ``mani_skill.envs`` (registers ManiSkill's ids) with a clear error when it is not installed."""
    try:
        import mani_skill.envs  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "ManiSkill tasks need mani_skill and a Vulkan device: pip install -e '.[maniskill]' and, on a CPU-only "
            "Debian machine, run .ci/install_vulkan.sh (Mesa lavapipe >= 23)"
        ) from e


def maniskill_make_kwargs(
    obs_mode: str,
    control_mode: str,
    image_size: int | tuple[int, int],
    sim_backend: str,
    reward_mode: str | None,
    render_mode: str | None,
    max_episode_steps: int | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Keyword arguments for ManiSkill's ``gym.make`` (shared by the single env and the GPU VecEnv)."""
    kwargs: dict[str, Any] = dict(obs_mode=check_obs_mode(obs_mode), control_mode=control_mode, sim_backend=sim_backend)
    if "rgb" in obs_mode:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        kwargs["sensor_configs"] = dict(width=int(w), height=int(h))
    if reward_mode is not None:
        kwargs["reward_mode"] = reward_mode
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    if "render_backend" not in extra and not th.cuda.is_available():
        kwargs["render_backend"] = "cpu"  # avoids ManiSkill's "no CUDA, falling back to cpu" warning
    kwargs.update(extra)
    return kwargs


def convert_obs(raw: Any, obs_mode: str, camera: str | None = None) -> dict[str, th.Tensor]:
    """Turn a batched ManiSkill observation into our Dict layout, still as tensors on the sim device.

    :param raw: what the ManiSkill env returns: a ``(N, D)`` tensor for ``obs_mode="state"``, else a dict with
        ``agent`` / ``extra`` (``rgb``) or ``state`` (``state+rgb``) and ``sensor_data[camera]["rgb"]``.
    :param obs_mode: ``"state"``, ``"rgb"`` or ``"state+rgb"``.
    :param camera: the camera whose image becomes ``rgb`` (default: the first one).
    :return: ``{"state": (N, D) float32}`` plus ``{"rgb": (N, H, W, 3) uint8}`` for image modes. In ``rgb`` mode the
        state holds only what ManiSkill gives visual policies (robot proprioception, TCP pose, goal position); in
        ``state`` and ``state+rgb`` it also holds the privileged object poses.
    """
    if obs_mode == "state":
        return {"state": raw.float()}
    from mani_skill.utils.common import flatten_state_dict

    if "state" in raw:
        state = raw["state"]
    else:
        state = flatten_state_dict({"agent": raw["agent"], "extra": raw["extra"]}, use_torch=True)
    sensors = raw["sensor_data"]
    name = camera if camera is not None else next(iter(sensors))
    if name not in sensors:
        raise ValueError(f"camera {name!r} not in this task's sensors {list(sensors)}")
    return {"rgb": sensors[name]["rgb"], "state": state.float()}


def obs_space_from(sample: dict[str, np.ndarray]) -> spaces.Dict:
    """Per-env observation space of converted observations ``key -> (N, ...)``."""
    out: dict[str, spaces.Space] = {}
    for key, value in sample.items():
        if value.dtype == np.uint8:
            out[key] = spaces.Box(0, 255, shape=value.shape[1:], dtype=np.uint8)
        else:
            out[key] = spaces.Box(-np.inf, np.inf, shape=value.shape[1:], dtype=np.float32)
    return spaces.Dict(out)


class ManiSkillEnv(gym.Env):
    """One ManiSkill3 task (CPU simulation, one env) with a Dict observation SB3 accepts.

    Observation keys: ``state`` (float32 ``(D,)``: proprioception and task state) and, for ``obs_mode="rgb"`` or
    ``"state+rgb"``, ``rgb`` (uint8 ``(H, W, 3)``, the task camera). ``info`` has ``is_success`` (a Python bool,
    read by SB3's evaluation and our success logging), ``instruction``, and ManiSkill's own scalar entries.

    :param task: ManiSkill id of a supported task (``"PickCube-v1"``) or our id (``"ManiSkill-PickCube-v1"``).
    :param obs_mode: ``"state"``, ``"rgb"`` or ``"state+rgb"``.
    :param control_mode: ManiSkill controller; the default ``"pd_ee_delta_pose"`` is a 7-D end-effector delta
        (xyz, rotation, gripper; normalised to [-1, 1]: 0.1 m / 0.1 rad per step), the action space VLAs use.
        The scripted base needs it.
    :param image_size: camera resolution ``H = W`` or ``(H, W)``.
    :param camera: camera name for ``rgb`` (default: the task's first camera).
    :param reward_mode: ManiSkill reward mode (default: the task's, ``"normalized_dense"``).
    :param render_mode: ``"rgb_array"`` for :meth:`render`.
    :param max_episode_steps: episode length (default: the task's, e.g. 50 for PickCube-v1).
    :param sim_backend: ``"cpu"`` (or ``"auto"``); GPU batches go through
        :class:`~sb3_vla.envs.maniskill.vec_env.ManiSkillVecEnv`.
    :param ignore_terminations: never end an episode on success, only at the time limit (default). ManiSkill's dense
        rewards pay up to 1 per step, so an episode that ends on success earns less than one that hovers next to
        the goal until the time limit: RL trained with success terminations learns to avoid succeeding (measured
        here: residual SAC on PushCube-v1 fell from 35% to 5%). ManiSkill's own RL baselines train this way too.
        ``info["is_success"]`` still reports success on every step.
    :param scripted_action_noise: std of the Gaussian noise on the scripted base's arm action (default: the task's).
    :param scripted_target_noise: std (m) of the scripted base's per-episode xy target offset (default: the task's).
    :param scripted_target_bias: constant xy offset (m) of the scripted base's targets (a calibration error).
    :param maniskill_kwargs: passed on to ManiSkill's ``gym.make`` (e.g. ``robot_uids``, ``sim_config``).

    Example::

        env = ManiSkillEnv("PickCube-v1", obs_mode="rgb", image_size=128)
        obs, info = env.reset(seed=0)
        obs["rgb"].shape, info["instruction"]        # (128, 128, 3), 'pick up the red cube ...'
        obs, reward, terminated, truncated, info = env.step(env.unwrapped.scripted_action())
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = "PickCube-v1",
        obs_mode: str = "state",
        control_mode: str = DEFAULT_CONTROL_MODE,
        image_size: int | tuple[int, int] = 128,
        camera: str | None = None,
        reward_mode: str | None = None,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        sim_backend: str = "cpu",
        ignore_terminations: bool = True,
        scripted_action_noise: float | None = None,
        scripted_target_noise: float | None = None,
        scripted_target_bias: tuple[float, float] = (0.0, 0.0),
        **maniskill_kwargs: Any,
    ) -> None:
        self.task: ManiSkillTask = get_task(task)
        self.obs_mode = check_obs_mode(obs_mode)
        self.control_mode = control_mode
        self.camera = camera
        self.render_mode = render_mode
        self.ignore_terminations = bool(ignore_terminations)
        if sim_backend == "auto":
            sim_backend = "cpu"
        import_maniskill()
        kwargs = maniskill_make_kwargs(
            obs_mode,
            control_mode,
            image_size,
            sim_backend,
            reward_mode,
            render_mode,
            max_episode_steps or self.task.max_episode_steps,
            maniskill_kwargs,
        )
        self.maniskill_env: Any = gym.make(self.task.task_id, num_envs=1, **kwargs)
        base: Any = self.maniskill_env.unwrapped
        if base.num_envs != 1:
            raise ValueError(f"ManiSkillEnv is a single env, got num_envs={base.num_envs}; use ManiSkillVecEnv")
        self.device = base.device
        self.instruction = self.task.instruction
        self.max_episode_steps = int(max_episode_steps or self.task.max_episode_steps)
        self.action_space = base.single_action_space
        self.observation_space = obs_space_from(self._to_numpy(convert_obs(base.get_obs(), obs_mode, camera)))
        self.controller: ScriptedController = make_controller(
            self.task.controller,
            num_envs=1,
            device=self.device,
            action_noise_std=self.task.action_noise_std if scripted_action_noise is None else scripted_action_noise,
            target_noise_std=self.task.target_noise_std if scripted_target_noise is None else scripted_target_noise,
            target_bias=(float(scripted_target_bias[0]), float(scripted_target_bias[1])),
        )

    @staticmethod
    def _to_numpy(obs: dict[str, th.Tensor]) -> dict[str, np.ndarray]:
        return {k: v.cpu().numpy() for k, v in obs.items()}

    def _obs(self, raw: Any) -> dict[str, np.ndarray]:
        # one sub-env: drop the batch axis; copy so later sim steps cannot alias the returned arrays
        return {k: np.array(v[0]) for k, v in self._to_numpy(convert_obs(raw, self.obs_mode, self.camera)).items()}

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in info.items():
            if isinstance(value, th.Tensor):
                out[key] = value.reshape(-1)[0].item() if value.numel() == 1 else value.cpu().numpy()[0]
            else:
                out[key] = value
        out["is_success"] = bool(out.get("success", False))
        out["instruction"] = self.instruction
        return out

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        # ManiSkill seeds its own episode RNG; without a seed draw one from ours so env.reset(seed) then reset()
        # stays reproducible
        ms_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
        raw, info = self.maniskill_env.reset(seed=ms_seed, options=options)
        self.controller.reset(seed=int(self.np_random.integers(2**31 - 1)))
        return self._obs(raw), self._info(info)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        act = th.as_tensor(np.asarray(action, dtype=np.float32).reshape(1, -1), device=self.device)
        raw, reward, terminated, truncated, info = self.maniskill_env.step(act)
        return (
            self._obs(raw),
            float(th.as_tensor(reward).reshape(-1)[0]),
            False if self.ignore_terminations else bool(th.as_tensor(terminated).reshape(-1)[0]),
            bool(th.as_tensor(truncated).reshape(-1)[0]),
            self._info(info),
        )

    def scripted_action(self) -> np.ndarray:
        """The task's noisy closed-loop scripted action for the current state, ``(7,)`` float32.

        It reads the privileged simulator state (object and goal poses), so it works in every ``obs_mode``.
        The ``scripted`` base spec calls it through ``env.unwrapped.scripted_action()``.
        """
        if self.control_mode != DEFAULT_CONTROL_MODE:
            raise ValueError(
                f"the scripted base of {self.task.task_id} outputs {DEFAULT_CONTROL_MODE!r} actions, but this env "
                f"uses control_mode={self.control_mode!r}; make the env with control_mode={DEFAULT_CONTROL_MODE!r}"
            )
        return self.controller.act(self.maniskill_env.unwrapped)[0].cpu().numpy().astype(np.float32)

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        frame = self.maniskill_env.render()
        return np.asarray(frame.cpu().numpy()[0] if isinstance(frame, th.Tensor) else frame)

    def close(self) -> None:
        self.maniskill_env.close()
