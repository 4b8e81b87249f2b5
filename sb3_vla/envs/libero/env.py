"""One LIBERO task as a Gymnasium env for residual RL: Dict observation, 7-D end-effector delta action.

:class:`LiberoEnv` *holds* LIBERO's ``ControlEnv`` (robosuite underneath; ``OffScreenRenderEnv`` minus its forced GL
context) rather than wrapping a Gymnasium env, so ``env.unwrapped`` is the adapter: the residual wrappers find
:attr:`LiberoEnv.instruction` and :meth:`LiberoEnv.scripted_action` there.
LIBERO's env stays reachable as :attr:`LiberoEnv.libero_env`.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; before robosuite / mujoco are imported

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_vla.envs.libero.suites import LiberoSuite, check_task_id, get_suite

#: Our camera names -> robosuite camera names. Observation keys are ``<our name>_rgb``.
CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
#: Proprioception keys -> (robosuite observable, size).
PROPRIO = {
    "ee_pos": ("robot0_eef_pos", 3),
    "ee_quat": ("robot0_eef_quat", 4),
    "gripper_qpos": ("robot0_gripper_qpos", 2),
}
#: The action that holds the arm still with the gripper open (LIBERO's gripper: -1 open, +1 close).
IDLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)


def _camera_name(name: str) -> str:
    if name in CAMERAS:
        return name
    for ours, theirs in CAMERAS.items():
        if name == theirs:
            return ours
    raise ValueError(f"unknown LIBERO camera {name!r}; expected a subset of {sorted(CAMERAS)}")


class LiberoEnv(gym.Env):
    """One LIBERO task (Panda arm, OSC end-effector control at 20 Hz) with a Dict observation SB3 accepts.

    Observation keys (all ``Box``):

    - ``agentview_rgb`` / ``wrist_rgb``: uint8 ``(H, W, 3)`` for each camera in ``cameras``, the right way up
      (robosuite renders OpenGL-style, bottom row first; we flip rows, which is robosuite's own "opencv"
      convention). OpenVLA's LIBERO checkpoints were trained on images rotated by 180 degrees: feed them
      ``img[:, ::-1]`` of ours.
    - ``ee_pos`` float32 ``(3,)`` (m, world frame), ``ee_quat`` float32 ``(4,)`` (x, y, z, w),
      ``gripper_qpos`` float32 ``(2,)`` (finger joint positions, m).

    Action: float32 ``(7,)`` in ``[-1, 1]``: end-effector delta position (x, y, z; 1 = 5 cm per step), delta
    rotation (axis-angle; 1 = 0.5 rad per step), gripper (-1 open, +1 close), as LIBERO's demonstrations and
    OpenVLA-style bases (after their gripper convention is mapped) use.

    Episodes start from one of the task's fixed benchmark init states (50 per task), chosen with the env's seeded
    RNG, or ``options={"init_state_id": k}``, then run ``settle_steps`` idle steps (objects drop onto the table,
    as LIBERO's evaluations do) without rendering. ``reward`` is 1.0 on the step the task's goal predicates hold
    (``terminated=True``), else 0.0. ``info`` has ``is_success``, ``instruction`` and ``init_state_id``.

    :param suite: ``libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10`` or ``libero_90`` (or the
        short names ``Spatial``, ``Object``, ``Goal``, ``10``, ``90``).
    :param task_id: task index in LIBERO's default order of the suite.
    :param image_size: camera resolution ``H = W`` or ``(H, W)``.
    :param cameras: cameras rendered into the observation, a subset of ``("agentview", "wrist")``; each costs a
        render per step, so give only those the policy or base reads (``()`` for state-only, several times faster).
    :param assets_path: local LIBERO asset folder (default ``$SB3_VLA_LIBERO_ASSETS``, else LIBERO downloads them).
    :param settle_steps: idle steps after loading an init state.
    :param render_mode: ``"rgb_array"``: :meth:`render` returns the agent-view image.
    :param scripted_noise: std of the Gaussian noise the scripted base adds to its arm action (default: the task's,
        see :mod:`sb3_vla.envs.libero.scripted`).
    :param libero_kwargs: passed on to LIBERO's ``OffScreenRenderEnv`` (e.g. ``control_freq``).

    Example::

        env = LiberoEnv("libero_goal", 0, image_size=128, assets_path="/data/libero/assets")
        obs, info = env.reset(seed=0)
        info["instruction"]                               # 'open the middle drawer of the cabinet'
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        suite: str = "libero_goal",
        task_id: int = 0,
        image_size: int | tuple[int, int] = 128,
        cameras: Sequence[str] = ("agentview", "wrist"),
        assets_path: str | os.PathLike[str] | None = None,
        settle_steps: int = 10,
        render_mode: str | None = None,
        scripted_noise: float | None = None,
        **libero_kwargs: Any,
    ) -> None:
        from sb3_vla.envs.libero.runtime import import_libero, require_assets

        self.suite: LiberoSuite = get_suite(suite)
        self.task_id = check_task_id(self.suite, task_id)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.cameras = tuple(dict.fromkeys(_camera_name(c) for c in cameras))
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.image_size = (int(h), int(w))
        if settle_steps < 0:
            raise ValueError(f"settle_steps must be >= 0, got {settle_steps}")
        self.settle_steps = int(settle_steps)

        require_assets(import_libero(assets_path))
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs.env_wrapper import ControlEnv

        task_suite = benchmark.get_benchmark_dict()[self.suite.name]()
        self.task = task_suite.get_task(self.task_id)
        #: The task's language instruction (what LIBERO's demonstrations and OpenVLA use).
        self.instruction: str = self.task.language
        self.init_states: np.ndarray = np.asarray(task_suite.get_task_init_states(self.task_id))
        bddl = os.path.join(get_libero_path("bddl_files"), self.task.problem_folder, self.task.bddl_file)
        render_cams = self.cameras or (("agentview",) if render_mode == "rgb_array" else ())
        kwargs: dict[str, Any] = dict(
            bddl_file_name=bddl,
            camera_names=[CAMERAS[c] for c in render_cams] or ["agentview"],
            camera_heights=self.image_size[0],
            camera_widths=self.image_size[1],
            use_camera_obs=bool(self.cameras),
            has_renderer=False,
            has_offscreen_renderer=bool(render_cams),  # no GL context at all for state-only envs
            hard_reset=False,  # we load a fixed init state after every reset; rebuilding the model is wasted time
            ignore_done=True,  # episode length is the TimeLimit's job
        )
        kwargs.update(libero_kwargs)
        self.libero_env: Any = ControlEnv(**kwargs)
        self._keep_only_needed_observables()

        self.action_space = spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        obs_spaces: dict[str, spaces.Space] = {
            f"{c}_rgb": spaces.Box(0, 255, shape=(*self.image_size, 3), dtype=np.uint8) for c in self.cameras
        }
        for key, (_, size) in PROPRIO.items():
            obs_spaces[key] = spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)
        self.observation_space = spaces.Dict(obs_spaces)

        from sb3_vla.envs.libero.scripted import make_controller

        self.controller = make_controller(self, noise=scripted_noise)
        self.init_state_id = -1
        self._last_obs: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def robosuite_env(self) -> Any:
        """LIBERO's robosuite environment (``libero_env.env``): ``sim``, ``robots``, ``obj_body_id`` ..."""
        return self.libero_env.env

    @property
    def sim(self) -> Any:
        return self.libero_env.env.sim

    def _keep_only_needed_observables(self) -> None:
        # robosuite computes every enabled observable at every step (all object poses, joint sin/cos ...);
        # keep what the observation uses
        env = self.robosuite_env
        needed = {name for name, _ in PROPRIO.values()} | {f"{CAMERAS[c]}_image" for c in self.cameras}
        for name in list(env._observables):
            if name not in needed:
                env.modify_observable(name, "enabled", False)
        self._camera_observables = [f"{CAMERAS[c]}_image" for c in self.cameras]

    def set_cameras(self, cameras: Sequence[str]) -> None:
        """Narrow the cameras rendered into the observation to a subset of those the env was built with (``()``: the
        state-only observation); the observation space follows. A camera the env was built without cannot be added
        (robosuite sets its renderer up at construction)."""
        wanted = tuple(dict.fromkeys(_camera_name(c) for c in cameras))
        extra = [c for c in wanted if c not in self.cameras]
        if extra:
            raise ValueError(
                f"cameras {extra} were not rendered when this env was built (cameras={list(self.cameras)}); build it "
                f"with them (env_kwargs cameras: {list(wanted)}) to add them"
            )
        for c in self.cameras:
            if c not in wanted:
                self.robosuite_env.modify_observable(f"{CAMERAS[c]}_image", "enabled", False)
        self.cameras = wanted
        self._camera_observables = [f"{CAMERAS[c]}_image" for c in wanted]
        space = self.observation_space
        assert isinstance(space, spaces.Dict)
        self.observation_space = spaces.Dict(
            {k: v for k, v in space.spaces.items() if not k.endswith("_rgb") or k[:-4] in wanted}
        )

    def _set_cameras_enabled(self, enabled: bool) -> None:
        for name in self._camera_observables:
            self.robosuite_env.modify_observable(name, "enabled", enabled)

    def _convert(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        for c in self.cameras:
            # robosuite's default image convention is OpenGL's (bottom row first): flip rows
            obs[f"{c}_rgb"] = np.ascontiguousarray(raw[f"{CAMERAS[c]}_image"][::-1], dtype=np.uint8)
        for key, (name, _) in PROPRIO.items():
            obs[key] = np.asarray(raw[name], dtype=np.float32).copy()
        self._last_obs = obs
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        return {"is_success": bool(success), "instruction": self.instruction, "init_state_id": self.init_state_id}

    def check_success(self) -> bool:
        """Whether the task's goal predicates (from its BDDL file) hold in the current state."""
        return bool(self.libero_env.check_success())

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        n = len(self.init_states)
        k = (options or {}).get("init_state_id")
        if k is None:
            k = int(self.np_random.integers(n))
        elif not 0 <= int(k) < n:
            raise ValueError(f"init_state_id must be in [0, {n}) for {self.task.name}, got {k}")
        self.init_state_id = int(k)
        # robosuite draws from numpy's global RNG (placement samplers, noise): seed it from ours, or the same env seed
        # gives different episodes in different processes (measured: same init state, success at step 172 in one
        # process, a 300-step failure in another)
        np.random.seed(int(self.np_random.integers(2**32 - 1)))
        self._set_cameras_enabled(False)  # no renders for the reset and the settle steps
        try:
            self.libero_env.reset()
            # a fixed init state fixes qpos / qvel only: clear the rest (solver warm start, controls, the gripper's
            # command) so that the same init state gives the same episode whatever ran before
            import mujoco

            mujoco.mj_resetData(self.sim.model._model, self.sim.data._data)
            for robot in self.robosuite_env.robots:  # robosuite keeps the gripper's command across resets
                if getattr(robot, "has_gripper", False):
                    robot.gripper.current_action = np.zeros(robot.gripper.dof)
            self.libero_env.set_init_state(self.init_states[self.init_state_id])
            for _ in range(self.settle_steps):
                self.libero_env.step(IDLE_ACTION)
        finally:
            self._set_cameras_enabled(True)
        raw = self.robosuite_env._get_observations(force_update=True)
        self.controller.reset(int(self.np_random.integers(2**31 - 1)))
        return self._convert(raw), self._info(self.check_success())

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        act = np.clip(np.asarray(action, dtype=np.float64).reshape(7), -1.0, 1.0)
        raw, _, done, _ = self.libero_env.step(act)  # LIBERO's done is its success check
        success = bool(done)
        return self._convert(raw), float(success), success, False, self._info(success)

    def scripted_action(self) -> np.ndarray:
        """The task's privileged scripted action for the current state, float32 ``(7,)`` (the ``scripted`` base).

        Raises ``NotImplementedError`` for tasks without a scripted controller (see
        :data:`sb3_vla.envs.libero.scripted.SCRIPTED_TASKS`).
        """
        return self.controller.act(self)

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        if "agentview" in self.cameras and self._last_obs is not None:
            return self._last_obs["agentview_rgb"]
        h, w = self.image_size
        return np.ascontiguousarray(self.sim.render(camera_name="agentview", height=h, width=w)[::-1])

    def close(self) -> None:
        env = getattr(self, "libero_env", None)
        if env is not None:
            env.close()
            self.libero_env = None
