"""The scripted, privileged folder used as GarmentFold's base controller, and its inverse kinematics.

The folder is a closed-loop state machine: every call reads the simulator (stage, which hand holds which vertex,
where the pinch points and keypoints are) rather than assuming its previous command was executed, so it keeps
working when a residual policy perturbs the executed action. Per stage: approach above the grasp point, descend,
pinch, carry along an arc to the mirrored place point, release, retreat, then request the stage advance.
Perception noise (Gaussian, ``noise`` metres per axis on the grasp and place points) is drawn from the env's
seeded RNG at reset, so an episode is deterministic given the env seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from sb3_vla.envs.garment_fold.scene import (
    ARM_JOINTS,
    HAND_JOINTS,
    OPEN_POSTURE,
    PINCH_POSTURE,
    SIDES,
    SceneConfig,
    joint_range,
    scene_xml,
)

if TYPE_CHECKING:
    from sb3_vla.envs.garment_fold.env import GarmentFoldEnv

HOVER_Z = 0.07  # approach height of the pinch point above the table (m)
PINCH_Z = 0.003  # pinch point height when closing on the cloth
PLACE_Z = 0.018  # pinch point height when releasing on top of the body
RETREAT_Z = 0.13
STEP_LEN = 0.045  # max Cartesian command step per control step (m), i.e. 0.45 m/s
ARC_LIFT = 0.3  # arc height as a fraction of the carry distance
HOME = {"L": np.array([-0.3, -0.3, 0.18]), "R": np.array([0.3, -0.3, 0.18])}


class ArmIK:
    """Damped-least-squares IK of the pinch point (position + fingers-down orientation) on an arms-only model.

    Example::

        >>> ik = ArmIK()
        >>> target = np.array([-0.2, 0.0, 0.05])
        >>> q = ik.solve("L", np.zeros(6), target)  # (6,) arm joint targets
        >>> q.shape, bool(np.linalg.norm(ik.forward("L", q) - target) < 0.01)
        ((6,), True)
    """

    def __init__(self) -> None:
        self.model = mujoco.MjModel.from_xml_string(scene_xml(None, SceneConfig()))
        self.data = mujoco.MjData(self.model)
        self.qadr: dict[str, np.ndarray] = {}
        self.dadr: dict[str, np.ndarray] = {}
        self.site: dict[str, int] = {}
        self.base_xy: dict[str, np.ndarray] = {}
        self.base_yaw: dict[str, float] = {}
        self.ref_rot: dict[str, np.ndarray] = {}
        for side in SIDES:
            jids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, f"{side}_{j}") for j in ARM_JOINTS]
            self.qadr[side] = self.model.jnt_qposadr[jids]
            self.dadr[side] = self.model.jnt_dofadr[jids]
            self.site[side] = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, f"{side}_pinch")
            self.lo = np.array([joint_range(j)[0] for j in ARM_JOINTS])
            self.hi = np.array([joint_range(j)[1] for j in ARM_JOINTS])
        mujoco.mj_kinematics(self.model, self.data)
        for side in SIDES:
            bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, f"{side}_base")
            self.base_xy[side] = self.data.xpos[bid, :2].copy()
            fwd = self.data.xmat[bid].reshape(3, 3)[:2, 0]
            self.base_yaw[side] = float(np.arctan2(fwd[1], fwd[0]))
            # Reference orientation: arm straight ahead, reaching down, rolls at zero (a natural wrist).
            q = np.zeros(6)
            q[1], q[2] = 0.5, 1.3
            q[4] = np.pi / 2 - q[1] - q[2]
            self.data.qpos[self.qadr[side]] = q
        mujoco.mj_kinematics(self.model, self.data)
        for side in SIDES:
            self.ref_rot[side] = self.data.site_xmat[self.site[side]].reshape(3, 3).copy()
        self._jac = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))

    def desired_rotation(self, side: str, target: np.ndarray) -> np.ndarray:
        """Fingers down, the hand turned about the vertical by the yaw from the arm base to the target."""
        d = target[:2] - self.base_xy[side]
        yaw = float(np.arctan2(d[1], d[0])) - self.base_yaw[side]
        c, s = np.cos(yaw), np.sin(yaw)
        rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return rz @ self.ref_rot[side]

    def forward(self, side: str, q: np.ndarray) -> np.ndarray:
        """World position of the pinch site for arm joints ``q`` (6,)."""
        self.data.qpos[self.qadr[side]] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site[side]].copy()

    def rotation(self, side: str, q: np.ndarray) -> np.ndarray:
        """World orientation (3, 3) of the pinch site for arm joints ``q`` (6,)."""
        self.data.qpos[self.qadr[side]] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xmat[self.site[side]].reshape(3, 3).copy()

    def solve(
        self, side: str, q0: np.ndarray, target: np.ndarray, iters: int = 25, rotation: np.ndarray | None = None
    ) -> np.ndarray:
        """Arm joint targets putting the pinch site at ``target`` (3,), fingers down, starting from ``q0`` (6,).

        ``rotation`` (3, 3) replaces the fingers-down orientation (e.g. keep the current one: :meth:`rotation`).
        """
        m, d = self.model, self.data
        rot_des = self.desired_rotation(side, target) if rotation is None else rotation
        q = np.clip(np.asarray(q0, dtype=np.float64).copy(), self.lo, self.hi)
        sid = self.site[side]
        cols = self.dadr[side]
        for _ in range(iters):
            d.qpos[self.qadr[side]] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            rot = d.site_xmat[sid].reshape(3, 3)
            e_pos = target - d.site_xpos[sid]
            # Small-angle orientation error that rotates the current frame onto the desired one.
            e_rot = 0.5 * (np.cross(rot[:, 0], rot_des[:, 0]) + np.cross(rot[:, 1], rot_des[:, 1]))
            e_rot += 0.5 * np.cross(rot[:, 2], rot_des[:, 2])
            if np.linalg.norm(e_pos) < 1e-3 and np.linalg.norm(e_rot) < 1e-2:
                break
            mujoco.mj_jacSite(m, d, self._jac, self._jacr, sid)
            jac = np.vstack([self._jac[:, cols], 0.3 * self._jacr[:, cols]])
            err = np.concatenate([e_pos, 0.3 * e_rot])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + 2.5e-3 * np.eye(6), err)
            q = np.clip(q + dq, self.lo, self.hi)
        return q


def _hand_posture(closure: float) -> np.ndarray:
    """The 24 hand joint targets blending the open (0) and pinch (1) postures."""
    out = np.empty(len(HAND_JOINTS))
    for i, j in enumerate(HAND_JOINTS):
        a = OPEN_POSTURE.get(j, 0.0)
        b = PINCH_POSTURE.get(j, 0.0)
        out[i] = a + closure * (b - a)
    return out


HAND_OPEN = _hand_posture(0.0)
HAND_PINCH = _hand_posture(1.0)

APPROACH, DESCEND, CLOSE, CARRY, RELEASE, RETREAT, DONE = range(7)
PHASE_NAMES = ("approach", "descend", "close", "carry", "release", "retreat", "done")


class ScriptedFolder:
    """Closed-loop scripted folder reading the env's simulator state.

    :param env: the (unwrapped) :class:`GarmentFoldEnv` it controls.
    :param noise: standard deviation (m) of the perception noise on each grasp and place point (x and y).
    :param command_frame: perceive each hand in the folder's own command frame: the measured pinch point minus the
        Cartesian displacement that the last *executed* arm targets add to the folder's own last command (forward
        kinematics of both). Zero when the folder's action ran unchanged; when a residual policy adds a correction
        (say, the folder's 3 cm perception error), the folder still sees itself arrive at its goal and moves on,
        instead of holding the hand against the correction at a phase check (1.2-1.5 cm tolerances) forever. Keep it
        off when labelling states another policy visited (DAgger): there the executed action is not a correction of
        the folder's.
    """

    # Which hands act in each stage and which keypoint each one grasps.
    STAGE_GRASPS: tuple[dict[str, str], ...] = (
        {"L": "left_sleeve_tip"},
        {"R": "right_sleeve_tip"},
        {"L": "bottom_left", "R": "bottom_right"},
    )

    def __init__(self, env: GarmentFoldEnv, noise: float, command_frame: bool = False) -> None:
        self.env = env
        self.noise = float(noise)
        self.command_frame = bool(command_frame)
        self.ik = ArmIK()
        self.reset(np.random.default_rng(0))

    def reset(self, rng: np.random.Generator) -> None:
        """Forget the episode's state and draw its perception noise from ``rng`` (the env's seeded RNG)."""
        self.grasp_noise = rng.normal(0.0, self.noise, size=(3, 2, 2))
        self.place_noise = rng.normal(0.0, self.noise, size=(3, 2, 2))
        self.retry_rng = np.random.default_rng(rng.integers(2**63))
        self.stage = -1
        self.phase = APPROACH
        self.phase_steps = 0
        self.arc_s = 0.0
        self.arc_start: dict[str, np.ndarray] = {}
        self.grasp_offset: dict[str, np.ndarray] = {}
        self._cache_step = -1
        self._cache_action = np.zeros(61, dtype=np.float32)
        self._last_cmd: dict[str, np.ndarray] = {}  # arm joint targets (rad) of the last action, per side

    def correction(self, side: str) -> np.ndarray:
        """Cartesian displacement (3,) of the ``side`` pinch point that the executed arm targets add to the folder's
        last command (zero before the folder's first command of an episode)."""
        if side not in self._last_cmd:
            return np.zeros(3)
        executed = self.env.arm_ctrl(side)
        return self.ik.forward(side, executed) - self.ik.forward(side, self._last_cmd[side])

    # -- state the folder perceives -------------------------------------------------------------------
    def _grasp_point(self, side: str, keypoint: str) -> np.ndarray:
        p = self.env.keypoint_position(keypoint).copy()
        p[:2] += self.grasp_offset[side]
        p[2] = PINCH_Z
        return p

    def _place_point(self, side: str, keypoint: str) -> np.ndarray:
        p = self.env.keypoint_target(self.stage, keypoint).copy()
        p[:2] += self.place_noise[self.stage, SIDES.index(side)]
        p[2] = PLACE_Z
        return p

    def _set_phase(self, phase: int) -> None:
        self.phase = phase
        self.phase_steps = 0

    # -- the controller ------------------------------------------------------------------------------
    def act(self) -> np.ndarray:
        """The 61-D normalised action for the env's current state (cached per env step)."""
        env = self.env
        if env.elapsed_steps == self._cache_step:
            return self._cache_action.copy()
        stage = env.stage
        if stage != self.stage:
            self.stage = stage
            self._set_phase(APPROACH)
            self.arc_s = 0.0
            if stage < 3:
                for i, side in enumerate(SIDES):
                    self.grasp_offset[side] = self.grasp_noise[stage, i].copy()
        grasps = self.STAGE_GRASPS[min(stage, 2)] if stage < 3 else {}
        held = {side: env.held_vertex(side) >= 0 for side in SIDES}
        pinch = {side: env.pinch_position(side) for side in SIDES}
        if self.command_frame:
            pinch = {side: pinch[side] - self.correction(side) for side in SIDES}
        goals: dict[str, np.ndarray] = {}
        closure = dict.fromkeys(SIDES, 0.0)
        advance = 0.0
        self.phase_steps += 1
        active = list(grasps)

        def near(side: str, goal: np.ndarray, tol: float, ztol: float = 0.02) -> bool:
            return bool(np.linalg.norm(pinch[side][:2] - goal[:2]) < tol and abs(pinch[side][2] - goal[2]) < ztol)

        if self.phase == CARRY and not all(held[s] for s in active):
            # The cloth slipped (or a residual opened the hand): go back for it.
            self._set_phase(APPROACH)
        if self.phase == APPROACH:
            for s in active:
                g = self._grasp_point(s, grasps[s])
                goals[s] = np.array([g[0], g[1], HOVER_Z])
            if all(near(s, goals[s], 0.015) for s in active):
                self._set_phase(DESCEND)
        if self.phase == DESCEND:
            for s in active:
                goals[s] = self._grasp_point(s, grasps[s])
            if all(near(s, goals[s], 0.012, 0.01) for s in active):
                self._set_phase(CLOSE)
        if self.phase == CLOSE:
            for s in active:
                goals[s] = self._grasp_point(s, grasps[s])
                closure[s] = 1.0
            if all(held[s] for s in active):
                self._set_phase(CARRY)
                self.arc_s = 0.0
                self.arc_start = {s: pinch[s].copy() for s in active}
            elif self.phase_steps > 6:
                # Missed: re-perceive (a fresh noise draw) and try again.
                for s in active:
                    if not held[s]:
                        self.grasp_offset[s] = self.retry_rng.normal(0.0, self.noise, size=2)
                self._set_phase(APPROACH)
                for s in active:
                    closure[s] = 0.0
        if self.phase == CARRY:
            places = {s: self._place_point(s, grasps[s]) for s in active}
            length = max(float(np.linalg.norm(places[s] - self.arc_start[s])) for s in active)
            on_track = all(np.linalg.norm(pinch[s] - self._arc(s, places[s], length)) < 0.04 for s in active)
            if on_track:
                self.arc_s = min(1.0, self.arc_s + STEP_LEN / max(length * 1.3, 1e-6))
            for s in active:
                goals[s] = self._arc(s, places[s], length)
                closure[s] = 1.0
            if self.arc_s >= 1.0 and all(near(s, places[s], 0.015, 0.015) for s in active):
                self._set_phase(RELEASE)
        if self.phase == RELEASE:
            for s in active:
                goals[s] = self._place_point(s, grasps[s])
            if not any(held[s] for s in active) and self.phase_steps > 1:
                self._set_phase(RETREAT)
        if self.phase == RETREAT:
            for s in active:
                p = self._place_point(s, grasps[s])
                goals[s] = np.array([p[0], p[1], RETREAT_Z])
            if all(near(s, goals[s], 0.03, 0.03) for s in active):
                self._set_phase(DONE)
        if self.phase == DONE or stage >= 3:
            goals = {}
            advance = 1.0
        action = np.zeros(61, dtype=np.float32)
        for i, side in enumerate(SIDES):
            q_now = env.arm_qpos(side)
            if held[side] and side not in goals:
                closure[side] = 0.0  # an idle hand never keeps hold of the cloth
                goals[side] = pinch[side] + np.array([0.0, 0.0, 0.02])
            goal = goals.get(side, HOME[side])
            # Rate-limit the Cartesian command around where the pinch point actually is (closed loop).
            delta = goal - pinch[side]
            dist = float(np.linalg.norm(delta))
            cmd = goal if dist <= STEP_LEN else pinch[side] + delta * (STEP_LEN / dist)
            q_arm = self.ik.solve(side, q_now, cmd)
            self._last_cmd[side] = q_arm
            q_hand = _hand_posture(closure[side])
            action[i * 30 : (i + 1) * 30] = env.normalise_side(np.concatenate([q_arm, q_hand]))
        action[60] = advance
        self._cache_step = env.elapsed_steps
        self._cache_action = action
        return action.copy()

    def follow(self, stage_complete: Sequence[bool] | None = None) -> None:
        """Move the phase on to what executed actions that were not the folder's own already achieved.

        The folder moves to its next phase only by passing its own checkpoints (hover above the grasp point, then
        pinch height, then close), so when another policy takes a different path (say, grasps without hovering
        first) the folder stays in ``approach`` and its label says "open the hand, go back up" while the cloth is
        carried. Call before each :meth:`act` when labelling another policy's states (DAgger): an
        ``approach``/``descend``/``close`` phase with every active hand holding becomes ``carry`` along a fresh arc
        from the current pinch points (the folder's own close -> carry transition); an ``approach`` phase with the
        pinch points already below hover height over the grasp points becomes ``descend``; a ``carry`` phase moves
        its arc parameter forward to the arc point nearest the pinch points (within the 4 cm on-track tolerance); a
        ``done`` phase whose stage is not complete (``stage_complete``, from ``info``: the fold missed) goes back to
        ``approach`` to fold it again, where the folder would otherwise request a refused stage advance forever.

        Example (label the states a random policy visits)::

            >>> import gymnasium as gym
            >>> import sb3_vla  # registers GarmentFold-v0
            >>> env = gym.make("GarmentFold-v0", pcd_points=0, scripted_command_frame=False)
            >>> obs, info = env.reset(seed=0)
            >>> _, _, _, _, info = env.step(env.action_space.sample())
            >>> env.unwrapped.folder.follow(info["stage_complete"])
            >>> label = env.unwrapped.scripted_action()
            >>> label.shape
            (61,)
        """
        env = self.env
        stage = int(env.stage)
        if stage >= 3 or self.stage != stage:  # a new stage: act() starts it at approach
            return
        grasps = self.STAGE_GRASPS[stage]
        active = list(grasps)
        held = all(env.held_vertex(s) >= 0 for s in active)
        pinch = {s: np.asarray(env.pinch_position(s), dtype=np.float64) for s in active}
        if self.phase == DONE and stage_complete is not None and not stage_complete[stage]:
            self._set_phase(APPROACH)
        elif held and self.phase in (APPROACH, DESCEND, CLOSE):
            self._set_phase(CARRY)
            self.arc_s = 0.0
            self.arc_start = {s: pinch[s].copy() for s in active}
        elif self.phase == APPROACH:
            grasp = {s: self._grasp_point(s, grasps[s]) for s in active}
            if all(
                np.linalg.norm(pinch[s][:2] - grasp[s][:2]) < 0.015 and pinch[s][2] < HOVER_Z - 0.02 for s in active
            ):
                self._set_phase(DESCEND)
        elif self.phase == CARRY and held:
            places = {s: self._place_point(s, grasps[s]) for s in active}
            length = max(float(np.linalg.norm(places[s] - self.arc_start[s])) for s in active)
            grid = np.linspace(self.arc_s, 1.0, 21)
            dist = np.zeros_like(grid)
            for s in active:
                pts = (1.0 - grid)[:, None] * self.arc_start[s] + grid[:, None] * places[s]
                pts[:, 2] += ARC_LIFT * length * np.sin(np.pi * grid)
                dist = np.maximum(dist, np.linalg.norm(pts - pinch[s], axis=1))
            best = int(np.argmin(dist))
            if dist[best] < 0.04:
                self.arc_s = float(grid[best])

    def _arc(self, side: str, place: np.ndarray, length: float) -> np.ndarray:
        s = self.arc_s
        p0 = self.arc_start[side]
        base = (1.0 - s) * p0 + s * place
        base[2] += ARC_LIFT * length * np.sin(np.pi * s)
        return base
