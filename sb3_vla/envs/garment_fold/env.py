"""GarmentFold-v0: bimanual dexterous T-shirt folding on MuJoCo flex cloth."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # headless CPU rendering (Mesa); must precede the first mujoco import

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from sb3_vla.envs.garment_fold.grasp import grasp_potential, update_grasps
from sb3_vla.envs.garment_fold.metrics import INSTRUCTIONS, FoldMetrics, FoldTask
from sb3_vla.envs.garment_fold.scene import (
    ARM_JOINTS,
    CLOTH_RADIUS,
    JOINTS_PER_SIDE,
    KEYPOINT_NAMES,
    SIDES,
    SceneConfig,
    joint_names,
    joint_range,
    make_shirt,
    scene_xml,
)
from sb3_vla.envs.garment_fold.scripted import HAND_OPEN, HOME, ScriptedFolder

# The meshes and compiled XML are the same for every env of a process; each env still compiles its own MjModel
# because the grasp anchors are written into ``model.eq_data`` at runtime.
_XML_CACHE: dict[tuple[float, bool, float, bool], str] = {}


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


class GarmentFoldEnv(gym.Env):
    """Fold a T-shirt lying on a table with two arms and two 24-joint hands, in three language-specified stages.

    **Action** ``Box(61)``: 60 joint position targets normalised to ``[-1, 1]`` over their joint ranges (left
    arm 6, left hand 24, right arm 6, right hand 24), then the stage-advance signal in ``[0, 1]`` (advance when
    ``> 0.5``). Control at 10 Hz (0.1 s of physics per step, in steps of ``physics_dt``).

    **Observation** ``Dict``: ``garment_pcd`` ``(pcd_points, 3)`` cloth surface points (m, world frame),
    ``keypoints`` ``(24,)`` (8 x xyz in ``KEYPOINT_NAMES`` order: sleeve tips, armpits, bottom corners, collar,
    bottom centre), ``joint_pos`` ``(60,)`` normalised like the action, ``joint_vel`` ``(60,)`` rad/s, ``stage``
    one-hot ``(3,)``, ``held`` ``(2,)`` (1 when that hand pinches the cloth), ``pinch_pos`` ``(6,)`` (left and
    right pinch points, m, world frame), with ``rgb_obs=True``, ``rgb`` uint8 ``(H, W, 3)``, and with
    ``task_points_obs=True``, ``task_points`` ``(12,)``: per hand (left, right), where the current stage's grasp
    keypoint is and where that stage puts it (m, world frame; a hand the stage does not use repeats its pinch point).
    These are the keypoints and the fold geometry picked out for the stage, so a pinch-point residual reads "the
    base aims here, the sleeve tip is there" as two observed vectors.

    **Stages**: 0 left sleeve onto the body (left hand), 1 right sleeve (right hand), 2 bottom half onto the top
    half (both hands). :attr:`instruction` and ``info["instruction"]`` give the current stage's instruction.
    An advance request moves to the next stage only when the current stage is complete and no hand holds the
    cloth (bonus ``advance_bonus``); otherwise it is refused and costs ``early_advance_penalty``. Advancing out
    of the last stage ends the episode.

    **Reward**: the change of a fold-quality potential (per-stage progress of the moving vertices toward their
    mirrored targets, fraction layered on top, minus drift of the vertices no stage moves), plus grasp shaping
    (potential-based: active hands near / holding their grasp keypoint while the stage is incomplete) and the
    advance bonus / penalty. ``info`` has ``fold_error`` ``(3,)`` (m), ``layered`` ``(3,)``, ``drift``,
    ``stage_complete`` ``(3,)``, ``stage`` and ``is_success`` (all three stages within tolerance).

    **Base controller**: :meth:`scripted_action` is a closed-loop privileged folder with perception noise
    ``scripted_noise`` (m), used by ``--base scripted``. Grasp: when a hand's thumb and first-finger tips close
    within 1.5 cm, the cloth vertex nearest their midpoint (if within 3 cm) is attached by a runtime ``connect``
    equality constraint; opening the tips beyond 3 cm releases it. A residual policy can act on the joints (61-D,
    the default) or on the pinch points (7-D, ``residual_map=PinchResidualMap()``; see
    :mod:`sb3_vla.envs.garment_fold.pinch`).

    :param render_mode: ``None`` or ``"rgb_array"`` (``render()`` returns a ``render_size`` frame).
    :param rgb_obs: add the ``rgb`` camera image to the observation (``None``: not chosen, off unless a
        :class:`~sb3_vla.envs.garment_fold.CameraObservationWrapper` turns it on; ``False`` keeps it off).
    :param image_size: ``(H, W)`` of the ``rgb`` observation (or one int for a square image).
    :param render_size: ``(H, W)`` of ``render()`` frames.
    :param camera: camera name for images (``"front"`` or ``"top"``).
    :param cloth_spacing: cloth grid spacing (m); 1/30 gives 217 vertices (0.04: 151, faster).
    :param pcd_points: number of surface points in ``garment_pcd`` (area-weighted, fixed barycentric samples);
        0 uses the cloth vertices themselves.
    :param scripted_noise: perception noise (m, per axis) of the scripted folder's grasp and place points.
    :param scripted_command_frame: the folder judges its progress in its own command frame, so a residual policy's
        corrections of its actions do not stall it (see :class:`ScriptedFolder`); ``False`` for labelling the states
        of another policy (DAgger in :mod:`sb3_vla.envs.garment_fold.pretrain`).
    :param pose_noise: ``(translation m, rotation rad)`` half-ranges of the shirt's random initial pose.
    :param fold_tolerance: a stage is complete when its mean fold error is below this (m) ...
    :param layered_tolerance: ... and this fraction of its moving vertices lies on top.
    :param physics_dt: physics timestep (s); each 0.1 s control step runs ``round(0.1 / physics_dt)`` of them.
    :param advance_bonus: reward for advancing out of a completed stage.
    :param early_advance_penalty: cost of a refused advance request.
    :param grasp_shaping: weight of the grasp shaping potential.
    :param grasp_accuracy_shaping: weight of a grasp accuracy term in that potential: while a hand holds the cloth
        in an incomplete stage, ``weight * max(0, 1 - d / 5 cm)`` with ``d`` the distance from the held vertex to the
        stage's grasp keypoint (so a grasp on the sleeve tip is worth more than one on its neighbour, 3.3 cm away).
    :param self_collision: cloth self-collision (needed for the folded layers to stay on top; most of the cost).
    :param sleep: let the resting cloth sleep (MuJoCo sleeping islands; a grasp wakes it), ~1.5x faster episodes.
    :param task_points_obs: add ``task_points`` (the stage's grasp keypoints and their place targets) to the
        observation.

    Needs MuJoCo >= 4.0 (flex elasticity with the ``discrete`` integrator). Images render headless through
    ``MUJOCO_GL=egl`` (set here when unset, before mujoco is imported).

    Example (the first steps of the scripted folder; a whole episode is 150 steps, a few seconds)::

        >>> import gymnasium as gym
        >>> import sb3_vla  # registers GarmentFold-v0
        >>> env = gym.make("GarmentFold-v0", pcd_points=0)
        >>> obs, info = env.reset(seed=0)
        >>> info["instruction"], env.action_space.shape, obs["joint_pos"].shape
        ('fold the left sleeve onto the body', (61,), (60,))
        >>> for _ in range(5):
        ...     obs, reward, terminated, truncated, info = env.step(env.unwrapped.scripted_action())
        >>> info["stage"], info["is_success"], info["fold_error"].shape
        (0, False, (3,))
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        render_mode: str | None = None,
        rgb_obs: bool | None = None,
        image_size: int | tuple[int, int] = 128,
        render_size: int | tuple[int, int] = (240, 320),
        camera: str = "front",
        cloth_spacing: float = 1.0 / 30.0,
        pcd_points: int = 256,
        scripted_noise: float = 0.03,
        scripted_command_frame: bool = True,
        pose_noise: tuple[float, float] = (0.02, 0.1),
        fold_tolerance: float = 0.03,
        layered_tolerance: float = 0.7,
        physics_dt: float = 0.01,
        advance_bonus: float = 1.0,
        early_advance_penalty: float = 0.1,
        grasp_shaping: float = 0.2,
        grasp_accuracy_shaping: float = 0.0,
        self_collision: bool = True,
        sleep: bool = True,
        task_points_obs: bool = False,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.rgb_obs = bool(rgb_obs)
        self.rgb_obs_chosen = rgb_obs is not None  # an explicit False keeps CameraObservationWrapper off
        self.image_size = _pair(image_size)
        self.render_size = _pair(render_size)
        self.camera = camera
        if not 0.0 < physics_dt <= 0.1:
            raise ValueError(f"physics_dt must be in (0, 0.1] seconds, got {physics_dt}")
        self.physics_dt = float(physics_dt)
        self.substeps = max(1, int(round(0.1 / physics_dt)))
        self.pose_noise = (float(pose_noise[0]), float(pose_noise[1]))
        self.advance_bonus = float(advance_bonus)
        self.early_advance_penalty = float(early_advance_penalty)
        self.grasp_shaping = float(grasp_shaping)
        self.grasp_accuracy_shaping = float(grasp_accuracy_shaping)

        self.mesh = make_shirt(spacing=cloth_spacing)
        self.task = FoldTask(self.mesh, fold_tolerance=fold_tolerance, layered_tolerance=layered_tolerance)
        key = (round(float(cloth_spacing), 6), bool(self_collision), self.physics_dt, bool(sleep))
        if key not in _XML_CACHE:
            config = SceneConfig(
                spacing=cloth_spacing, self_collision=self_collision, timestep=self.physics_dt, sleep=sleep
            )
            _XML_CACHE[key] = scene_xml(self.mesh, config)
        self.model = mujoco.MjModel.from_xml_string(_XML_CACHE[key])
        self.data = mujoco.MjData(self.model)
        m = self.model
        if self.camera not in [m.camera(i).name for i in range(m.ncam)]:
            raise ValueError(f"unknown camera {camera!r}; the scene has 'front' and 'top'")

        # Index tables (actuator order == action order: side-major, arm then hand joints).
        names = [n for side in SIDES for n in joint_names(side)]
        jids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in names]
        self._qadr = m.jnt_qposadr[jids]
        self._dadr = m.jnt_dofadr[jids]
        self._lo = np.array([joint_range(n.split("_", 1)[1])[0] for n in names])
        self._hi = np.array([joint_range(n.split("_", 1)[1])[1] for n in names])
        self._nvert = len(self.mesh.points)
        bodies = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"cloth_{v}") for v in range(self._nvert)]
        self._cloth_qadr = np.array([m.jnt_qposadr[m.body_jntadr[b]] for b in bodies])
        self._cloth_body_pos = m.body_pos[bodies].copy()
        # Cloth vertex joints are slides (one qpos per dof), so qvel addresses are qpos addresses shifted.
        self._qadr_to_dof = int(self._cloth_qadr[0] - m.jnt_dofadr[m.body_jntadr[bodies[0]]])
        self._eq0 = {s: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_EQUALITY, f"{s}_grab_0") for s in SIDES}
        self._palm = {s: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"{s}_palm") for s in SIDES}
        site = {n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, n) for n in [m.site(i).name for i in range(m.nsite)]}
        self._pinch_site = {s: site[f"{s}_pinch"] for s in SIDES}
        self._th_tip = {s: site[f"{s}_th_tip"] for s in SIDES}
        self._ff_tip = {s: site[f"{s}_ff_tip"] for s in SIDES}
        self._kp_ids = np.array([self.mesh.keypoints[k] for k in KEYPOINT_NAMES])
        self._kp_index = {k: i for i, k in enumerate(KEYPOINT_NAMES)}

        # Fixed area-weighted barycentric samples: the point cloud has the same size at every cloth resolution.
        self.pcd_points = int(pcd_points)
        if self.pcd_points > 0:
            tri = self.mesh.triangles
            p = self.mesh.points
            area = 0.5 * np.linalg.norm(np.cross(p[tri[:, 1]] - p[tri[:, 0]], p[tri[:, 2]] - p[tri[:, 0]]), axis=1)
            rng = np.random.default_rng(12345)
            self._pcd_tri = rng.choice(len(tri), size=self.pcd_points, p=area / area.sum())
            bary = rng.dirichlet(np.ones(3), size=self.pcd_points)
            self._pcd_bary = bary
        n_pcd = self.pcd_points if self.pcd_points > 0 else self._nvert

        obs_spaces: dict[str, spaces.Space] = {
            "garment_pcd": spaces.Box(-2.0, 2.0, shape=(n_pcd, 3), dtype=np.float32),
            "keypoints": spaces.Box(-2.0, 2.0, shape=(3 * len(KEYPOINT_NAMES),), dtype=np.float32),
            "joint_pos": spaces.Box(-1.0, 1.0, shape=(2 * JOINTS_PER_SIDE,), dtype=np.float32),
            "joint_vel": spaces.Box(-20.0, 20.0, shape=(2 * JOINTS_PER_SIDE,), dtype=np.float32),
            "stage": spaces.Box(0.0, 1.0, shape=(3,), dtype=np.float32),
            "held": spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32),
            "pinch_pos": spaces.Box(-2.0, 2.0, shape=(6,), dtype=np.float32),
        }
        self._state_spaces = obs_spaces  # the optional keys (task_points, rgb) join in _set_observation_space
        self.task_points_obs = bool(task_points_obs)
        self._set_observation_space()
        low = np.concatenate([-np.ones(60), [0.0]]).astype(np.float32)
        self.action_space = spaces.Box(low=low, high=np.ones(61, dtype=np.float32), dtype=np.float32)
        self._act_low, self._act_high = low.astype(np.float64), np.ones(61)

        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.folder = ScriptedFolder(self, noise=scripted_noise, command_frame=scripted_command_frame)
        seed_q = np.array([0.0, 0.5, 1.3, 0.0, -0.2, 0.0])
        self._home_q = {side: self.folder.ik.solve(side, seed_q, HOME[side], 80) for side in SIDES}
        self.stage = 0
        self.elapsed_steps = 0
        self._held = {s: -1 for s in SIDES}
        self._pose = (np.eye(2), np.zeros(2))
        self._metrics: FoldMetrics | None = None
        self._potential = 0.0
        self._last_obs: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------------------------------- gym API

    def set_rgb_obs(self, enabled: bool = True, image_size: int | tuple[int, int] | None = None) -> None:
        """Turn the ``rgb`` camera observation on or off after construction (what ``rgb_obs=`` / ``image_size=``
        set); the observation space changes with it, so call it before wrappers read the space (see
        :class:`~sb3_vla.envs.garment_fold.CameraObservationWrapper`)."""
        self.rgb_obs = bool(enabled)
        if image_size is not None:
            self.image_size = _pair(image_size)
        self._set_observation_space()

    def set_task_points_obs(self, enabled: bool = True) -> None:
        """Turn the ``task_points`` observation on or off after construction (what ``task_points_obs=`` sets); call
        it before wrappers read the space (see :class:`~sb3_vla.envs.garment_fold.TaskPointsObservationWrapper`)."""
        self.task_points_obs = bool(enabled)
        self._set_observation_space()

    def _set_observation_space(self) -> None:
        obs_spaces = dict(self._state_spaces)
        if self.task_points_obs:
            obs_spaces["task_points"] = spaces.Box(-2.0, 2.0, shape=(12,), dtype=np.float32)
        if self.rgb_obs:
            obs_spaces["rgb"] = spaces.Box(0, 255, shape=(*self.image_size, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        tr, rot = self.pose_noise
        theta = float(self.np_random.uniform(-rot, rot))
        shift = self.np_random.uniform(-tr, tr, size=2)
        c, s = np.cos(theta), np.sin(theta)
        r2 = np.array([[c, -s], [s, c]])
        self._pose = (r2, shift)
        xy = self.mesh.points[:, :2] @ r2.T + shift
        world = np.column_stack([xy, np.full(self._nvert, CLOTH_RADIUS)])
        for axis in range(3):
            d.qpos[self._cloth_qadr + axis] = world[:, axis] - self._cloth_body_pos[:, axis]
        q0 = np.concatenate([np.concatenate([self._home_q[side], HAND_OPEN]) for side in SIDES])
        # Small random start posture so episodes differ in more than the shirt pose.
        q0[:6] += self.np_random.uniform(-0.05, 0.05, size=6)
        q0[30:36] += self.np_random.uniform(-0.05, 0.05, size=6)
        q0 = np.clip(q0, self._lo, self._hi)
        d.qpos[self._qadr] = q0
        d.ctrl[:] = q0
        d.eq_active[:] = 0
        mujoco.mj_forward(m, d)
        self.stage = 0
        self.elapsed_steps = 0
        self._held = {side: -1 for side in SIDES}
        self.folder.reset(self.np_random)
        self._metrics = self._evaluate()
        self._potential = self.task.potential(self._metrics) + grasp_potential(self, self._metrics)
        obs = self._get_obs()
        self._last_obs = obs
        return obs, self._info(self._metrics, advanced=False, refused=False)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), self._act_low, self._act_high)
        if a.shape != (61,):
            raise ValueError(f"action must have shape (61,), got {np.shape(action)}")
        m, d = self.model, self.data
        d.ctrl[:] = self._lo + 0.5 * (a[:60] + 1.0) * (self._hi - self._lo)
        mujoco.mj_step(m, d, nstep=self.substeps)
        self.elapsed_steps += 1
        if not np.all(np.isfinite(d.qpos)):
            # A physics blow-up ends the episode; the last good observation keeps the learner's inputs finite.
            assert self._last_obs is not None and self._metrics is not None
            info = self._info(self._metrics, advanced=False, refused=False)
            info["unstable"] = True
            return self._last_obs, -1.0, True, False, info
        update_grasps(self)
        metrics = self._evaluate()
        reward = 0.0
        advanced = refused = False
        terminated = False
        if a[60] > 0.5:
            holding = any(v >= 0 for v in self._held.values())
            if metrics.complete[self.stage] and not holding:
                reward += self.advance_bonus
                advanced = True
                if self.stage == 2:
                    terminated = True
                else:
                    self.stage += 1
            else:
                reward -= self.early_advance_penalty
                refused = True
        potential = self.task.potential(metrics) + grasp_potential(self, metrics)
        reward += potential - self._potential
        self._potential = potential
        self._metrics = metrics
        obs = self._get_obs()
        self._last_obs = obs
        return obs, float(reward), terminated, False, self._info(metrics, advanced=advanced, refused=refused)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._render(self.render_size)

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    # ------------------------------------------------------------------------------------ base controller
    def scripted_action(self) -> np.ndarray:
        """The scripted folder's 61-D action for the current state (float32, inside :attr:`action_space`)."""
        return self.folder.act()

    @property
    def instruction(self) -> str:
        """The current stage's language instruction."""
        return INSTRUCTIONS[min(self.stage, 2)]

    # ------------------------------------------------------------------- state queries (used by the folder)
    def held_vertex(self, side: str) -> int:
        """The cloth vertex the ``side`` ("L"/"R") hand holds, or -1."""
        return self._held[side]

    def pinch_position(self, side: str) -> np.ndarray:
        """World position (3,) of the hand's pinch site (where thumb and first finger meet when closed)."""
        return self.data.site_xpos[self._pinch_site[side]].copy()

    def arm_qpos(self, side: str) -> np.ndarray:
        """The 6 arm joint angles of one side (rad)."""
        i = SIDES.index(side) * JOINTS_PER_SIDE
        return self.data.qpos[self._qadr[i : i + len(ARM_JOINTS)]].copy()

    def arm_ctrl(self, side: str) -> np.ndarray:
        """The 6 arm joint targets (rad) of one side that the last executed action set."""
        i = SIDES.index(side) * JOINTS_PER_SIDE
        return self.data.ctrl[i : i + len(ARM_JOINTS)].copy()

    def keypoint_position(self, name: str) -> np.ndarray:
        """World position (3,) of a named keypoint vertex."""
        return self._vertices()[self.mesh.keypoints[name]].copy()

    def keypoint_target(self, stage: int, name: str) -> np.ndarray:
        """World position (3,), z = 0, where stage ``stage`` should put the named keypoint vertex."""
        r2, shift = self._pose
        xy = self.task.targets[stage][self.mesh.keypoints[name]] @ r2.T + shift
        return np.array([xy[0], xy[1], 0.0])

    def task_points(self) -> np.ndarray:
        """``(12,)``: per hand (left, right) the current stage's grasp keypoint (3,) and where the stage puts it
        (3,), world frame; a hand the stage does not use (or every hand, once the fold is done) gets its pinch
        point twice."""
        grasps = ScriptedFolder.STAGE_GRASPS[self.stage] if self.stage < 3 else {}
        out = []
        for side in SIDES:
            kp = grasps.get(side)
            if kp is None:
                pinch = self.pinch_position(side)
                out += [pinch, pinch]
            else:
                out += [self.keypoint_position(kp), self.keypoint_target(self.stage, kp)]
        return np.concatenate(out)

    def keypoint_flat(self, name: str) -> np.ndarray:
        """World position (3,), z = 0, of the named keypoint vertex in the flat, unfolded shirt."""
        r2, shift = self._pose
        xy = self.task.flat[self.mesh.keypoints[name]] @ r2.T + shift
        return np.array([xy[0], xy[1], 0.0])

    def normalise_side(self, q: np.ndarray) -> np.ndarray:
        """Map one side's 30 joint angles (rad) to normalised action values in [-1, 1]."""
        lo, hi = self._lo[:JOINTS_PER_SIDE], self._hi[:JOINTS_PER_SIDE]
        return np.clip(2.0 * (q - lo) / (hi - lo) - 1.0, -1.0, 1.0)

    def fold_metrics(self) -> FoldMetrics:
        """Fold quality of the current cloth state."""
        return self._evaluate()

    def set_cloth_shirt_frame(self, xyz: np.ndarray) -> None:
        """Place the cloth vertices at ``xyz`` (N, 3) given in the shirt frame, at rest (for tests and demos).

        The reward potential is not reset, so the next :meth:`step` reward includes the change of fold quality.
        """
        r2, shift = self._pose
        world = np.column_stack([xyz[:, :2] @ r2.T + shift, xyz[:, 2]])
        for axis in range(3):
            self.data.qpos[self._cloth_qadr + axis] = world[:, axis] - self._cloth_body_pos[:, axis]
            self.data.qvel[self._cloth_qadr + axis - self._qadr_to_dof] = 0.0
        mujoco.mj_forward(self.model, self.data)
        self._metrics = self._evaluate()

    # ---------------------------------------------------------------------------------------- internals
    def _vertices(self) -> np.ndarray:
        return self.data.flexvert_xpos[: self._nvert]

    def _shirt_frame(self) -> np.ndarray:
        r2, shift = self._pose
        v = self._vertices()
        return np.column_stack([(v[:, :2] - shift) @ r2, v[:, 2]])

    def _evaluate(self) -> FoldMetrics:
        return self.task.evaluate(self._shirt_frame())

    def _get_obs(self) -> dict[str, np.ndarray]:
        d = self.data
        verts = self._vertices()
        if self.pcd_points > 0:
            tri = self.mesh.triangles[self._pcd_tri]
            pcd = np.einsum("nk,nkd->nd", self._pcd_bary, verts[tri])
        else:
            pcd = verts
        stage = np.zeros(3, dtype=np.float32)
        stage[min(self.stage, 2)] = 1.0
        jpos = 2.0 * (d.qpos[self._qadr] - self._lo) / (self._hi - self._lo) - 1.0
        obs = {
            "garment_pcd": np.clip(pcd, -2.0, 2.0).astype(np.float32),
            "keypoints": np.clip(verts[self._kp_ids], -2.0, 2.0).astype(np.float32).reshape(-1),
            "joint_pos": np.clip(jpos, -1.0, 1.0).astype(np.float32),
            "joint_vel": np.clip(d.qvel[self._dadr], -20.0, 20.0).astype(np.float32),
            "stage": stage,
            "held": np.array([float(self._held[s] >= 0) for s in SIDES], dtype=np.float32),
            "pinch_pos": np.clip(np.concatenate([self.pinch_position(s) for s in SIDES]), -2.0, 2.0).astype(np.float32),
        }
        if self.task_points_obs:
            obs["task_points"] = np.clip(self.task_points(), -2.0, 2.0).astype(np.float32)
        if self.rgb_obs:
            obs["rgb"] = self._render(self.image_size)
        return obs

    def _render(self, size: tuple[int, int]) -> np.ndarray:
        r = self._renderers.get(size)
        if r is None:
            r = mujoco.Renderer(self.model, height=size[0], width=size[1])
            self._renderers[size] = r
        r.update_scene(self.data, camera=self.camera)
        return r.render()

    def _info(self, metrics: FoldMetrics, advanced: bool, refused: bool) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "stage": int(self.stage),
            "fold_error": metrics.fold_error.copy(),
            "layered": metrics.layered.copy(),
            "drift": float(metrics.drift),
            "stage_complete": metrics.complete.copy(),
            "is_success": bool(metrics.complete.all()),
            "held": np.array([self._held[s] for s in SIDES]),
            "advanced": advanced,
            "advance_refused": refused,
        }
