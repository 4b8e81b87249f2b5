"""Closed-loop scripted controllers for ManiSkill3 tasks in the ``pd_ee_delta_pose`` action space.

Each controller follows the waypoints of ManiSkill's own motion-planning solution for the task
(``mani_skill/examples/motionplanning/panda/solutions``: reach above the object, descend, close, carry to the goal),
but instead of planning a joint trajectory once it recomputes an end-effector delta action from the *current*
privileged state at every step. It is therefore closed-loop: when a residual policy moves the arm, the next
scripted action corrects from where the arm actually is.

Controllers are batched (all tensors ``(N, ...)`` on the simulation device), so the same code serves a single CPU
env (``N = 1``) and ManiSkill's GPU simulation (``N`` = thousands) without per-env Python loops.

They are degraded on purpose, to leave room for residual RL: a per-episode xy offset of the targets
(``target_noise_std``, metres, a systematic error) and Gaussian noise on the arm action (``action_noise_std``,
normalised units). The default noise of each task is in :data:`sb3_vla.envs.maniskill.tasks.TASKS` with the measured
success rate.
"""

from __future__ import annotations

import math
from typing import Any

import torch as th

#: ``pd_ee_delta_pose`` maps a normalised action in [-1, 1] to at most 0.1 m / 0.1 rad per step.
POS_SCALE = 0.1
#: ManiSkill 3's PDEEPoseController multiplies the rotation action by ``rot_lower`` (-0.1): the sign flips.
ROT_SCALE = -0.1
GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = -1.0


def quat_to_matrix(q: th.Tensor) -> th.Tensor:
    """Rotation matrices ``(N, 3, 3)`` of unit quaternions ``(N, 4)`` in ``(w, x, y, z)`` order (SAPIEN's)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    w, x, y, z = q.unbind(-1)
    return th.stack(
        (
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ),
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def wrap_angle(a: th.Tensor, period: float = 2 * math.pi) -> th.Tensor:
    """Wrap angles into ``[-period / 2, period / 2)``."""
    return th.remainder(a + period / 2, period) - period / 2


def top_down_rotvec(
    tcp_q: th.Tensor, yaw_target: th.Tensor | None = None, yaw_period: float = math.pi / 2
) -> th.Tensor:
    """World-frame rotation vector ``(N, 3)`` that turns the gripper to point straight down, and optionally to a yaw.

    :param tcp_q: TCP orientations ``(N, 4)`` (w, x, y, z).
    :param yaw_target: desired angle (rad, world frame) of the fingers' closing axis, ``(N,)``; ``None`` keeps the
        current yaw.
    :param yaw_period: symmetry of the grasped object about z (``pi / 2`` for a cube): the smallest turn is used.
    """
    rot = quat_to_matrix(tcp_q)
    approach = rot[..., :, 2]  # the TCP's z axis points from the hand to the fingertips
    down = th.zeros_like(approach)
    down[..., 2] = -1.0
    cross = th.linalg.cross(approach, down)
    sin = cross.norm(dim=-1, keepdim=True)
    cos = (approach * down).sum(-1, keepdim=True)
    rotvec = cross / sin.clamp_min(1e-8) * th.atan2(sin, cos)
    if yaw_target is not None:
        closing = rot[..., :, 1]
        yaw_now = th.atan2(closing[..., 1], closing[..., 0])
        rotvec[..., 2] = rotvec[..., 2] + wrap_angle(yaw_target - yaw_now, yaw_period)
    return rotvec


def yaw_of(q: th.Tensor) -> th.Tensor:
    """Angle (rad) of a frame's x axis in the world xy plane, ``(N,)``."""
    rot = quat_to_matrix(q)
    return th.atan2(rot[..., 1, 0], rot[..., 0, 0])


def pose_action(
    pos_error: th.Tensor,
    rotvec: th.Tensor,
    gripper: th.Tensor,
    pos_gain: float = 1.0,
    rot_gain: float = 1.0,
    max_pos: float = 1.0,
) -> th.Tensor:
    """A normalised ``pd_ee_delta_pose`` action ``(N, 7)`` moving by ``pos_error`` (m) and turning by ``rotvec`` (rad).

    :param pos_error: target minus current TCP position, ``(N, 3)``, root frame (world axes for the Panda tasks).
    :param rotvec: world-frame rotation vector from the current to the target orientation, ``(N, 3)``.
    :param gripper: ``+1`` open, ``-1`` closed, ``(N,)``.
    :param max_pos: cap of each translation component (normalised units), slows moves while carrying.
    """
    pos = (pos_gain * pos_error / POS_SCALE).clamp(-max_pos, max_pos)
    rot = (rot_gain * rotvec / ROT_SCALE).clamp(-1.0, 1.0)
    return th.cat((pos, rot, gripper.unsqueeze(-1)), dim=-1)


class ScriptedController:
    """Base class of the batched scripted controllers.

    :param num_envs: number of sub-envs ``N`` of the (possibly GPU-batched) ManiSkill env.
    :param device: the simulation device (``env.unwrapped.device``).
    :param action_noise_std: std of Gaussian noise added to the 6 arm dims of each action (normalised units).
    :param target_noise_std: std (m) of a per-episode xy offset added to the controller's targets.
    :param target_bias: constant xy offset (m) added to the controller's targets in every episode: a systematic
        (calibration) error, the kind of base error a residual policy can learn to remove.
    :param seed: seed of the controller's own noise generator (re-seeded by :meth:`reset` with a seed).

    Example::

        ctrl = PickCubeController(num_envs=1, device=env.unwrapped.device)
        ctrl.reset(seed=0)
        action = ctrl.act(env.unwrapped)  # (1, 7) tensor
    """

    def __init__(
        self,
        num_envs: int,
        device: th.device | str = "cpu",
        action_noise_std: float = 0.0,
        target_noise_std: float = 0.0,
        target_bias: tuple[float, float] = (0.0, 0.0),
        seed: int | None = None,
    ) -> None:
        if action_noise_std < 0 or target_noise_std < 0:
            raise ValueError(
                f"noise stds must be >= 0, got action_noise_std={action_noise_std}, target_noise_std={target_noise_std}"
            )
        self.num_envs = int(num_envs)
        self.device = th.device(device)
        self.action_noise_std = float(action_noise_std)
        self.target_noise_std = float(target_noise_std)
        if len(target_bias) != 2:
            raise ValueError(f"target_bias must be an (x, y) offset in metres, got {target_bias!r}")
        self.target_bias = (float(target_bias[0]), float(target_bias[1]))
        self._gen = th.Generator(device="cpu")
        self._gen.manual_seed(0 if seed is None else int(seed))
        self.target_offset = th.zeros(self.num_envs, 3, device=self.device)
        # steps since the gripper was told to close without a grasp (re-open after a few)
        self.closing_steps = th.zeros(self.num_envs, dtype=th.long, device=self.device)
        self.released = th.zeros(self.num_envs, dtype=th.bool, device=self.device)
        self.integral = th.zeros(self.num_envs, 6, device=self.device)
        self.phase = th.zeros(self.num_envs, dtype=th.long, device=self.device)

    def _randn(self, *shape: int) -> th.Tensor:
        return th.randn(*shape, generator=self._gen).to(self.device)

    def reset(self, env_idx: th.Tensor | None = None, seed: int | None = None) -> None:
        """Start new episodes in the sub-envs ``env_idx`` (all when ``None``): new target offsets, cleared phase."""
        if seed is not None:
            self._gen.manual_seed(int(seed))
        if env_idx is None:
            env_idx = th.arange(self.num_envs, device=self.device)
        env_idx = th.as_tensor(env_idx, device=self.device).reshape(-1)
        if env_idx.dtype == th.bool:
            env_idx = env_idx.nonzero().reshape(-1)
        n = int(env_idx.numel())
        offset = th.zeros(n, 3, device=self.device)
        if self.target_noise_std > 0:
            offset[:, :2] = self._randn(n, 2) * self.target_noise_std
        offset[:, 0] += self.target_bias[0]
        offset[:, 1] += self.target_bias[1]
        self.target_offset[env_idx] = offset
        self.closing_steps[env_idx] = 0
        self.released[env_idx] = False
        self.integral[env_idx] = 0.0
        self.phase[env_idx] = 0

    def act(self, env: Any) -> th.Tensor:
        """The noisy scripted action ``(N, 7)`` for the current state of the ManiSkill env ``env`` (unwrapped)."""
        action = self._act(env)
        if self.action_noise_std > 0:
            noise = self._randn(self.num_envs, 6) * self.action_noise_std
            action = th.cat((action[:, :6] + noise, action[:, 6:]), dim=-1)
        return action.clamp(-1.0, 1.0)

    def _act(self, env: Any) -> th.Tensor:
        raise NotImplementedError

    # -- shared skills ------------------------------------------------------------------------------------------ #
    def _grasp_from_above(
        self,
        tcp_p: th.Tensor,
        tcp_q: th.Tensor,
        obj_p: th.Tensor,
        obj_q: th.Tensor,
        grasped: th.Tensor,
        yaw_target: th.Tensor | None = None,
        yaw_period: float = math.pi / 2,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Reach above ``obj_p``, descend in a funnel, close; returns ``(pos_error, rotvec, gripper)``.

        The fingers' closing axis turns to ``yaw_target`` (default: across the object's x axis, for a cube).
        """
        target = obj_p + self.target_offset
        xy_err = (target[:, :2] - tcp_p[:, :2]).norm(dim=-1)
        # the further off in xy, the higher above the object: a funnel, so the fingers never land on the cube
        hover = 0.06 * ((xy_err - 0.004) / 0.02).clamp(0.0, 1.0)
        reach = target.clone()
        reach[:, 2] = reach[:, 2] + hover
        if yaw_target is None:
            yaw_target = yaw_of(obj_q) + math.pi / 2
        rotvec = top_down_rotvec(tcp_q, yaw_target, yaw_period)
        near = ((target - tcp_p).norm(dim=-1) < 0.012) & (rotvec[:, 2].abs() < 0.15)
        closing = (near | (self.closing_steps > 0)) & ~grasped
        self.closing_steps = th.where(closing, self.closing_steps + 1, th.zeros_like(self.closing_steps))
        # no grasp after 8 closing steps: open again and retry
        self.closing_steps = th.where(self.closing_steps > 8, th.zeros_like(self.closing_steps), self.closing_steps)
        gripper = th.where(grasped | (self.closing_steps > 0), GRIPPER_CLOSED, GRIPPER_OPEN)
        return reach - tcp_p, rotvec, gripper


class PickCubeController(ScriptedController):
    """PickCube-v1: grasp the cube from above, carry it to the goal and hold still there."""

    def _act(self, env: Any) -> th.Tensor:
        tcp = env.agent.tcp.pose
        cube = env.cube.pose
        grasped = env.agent.is_grasping(env.cube)
        pos_err, rotvec, gripper = self._grasp_from_above(tcp.p, tcp.q, cube.p, cube.q, grasped)
        # carrying: move the *cube* onto the goal (closed-loop on the object, not on the hand)
        carry_err = env.goal_site.pose.p - cube.p
        pos_err = th.where(grasped[:, None], carry_err, pos_err)
        rotvec = th.where(grasped[:, None], top_down_rotvec(tcp.q), rotvec)
        return pose_action(pos_err, rotvec, gripper, max_pos=0.5)


class PushCubeController(ScriptedController):
    """PushCube-v1: gripper closed, go behind the cube (-x side), lower, push it along +x into the goal region."""

    def _act(self, env: Any) -> th.Tensor:
        tcp = env.agent.tcp.pose
        obj_p = env.obj.pose.p
        goal_p = env.goal_region.pose.p
        half = float(env.cube_half_size)
        behind = obj_p + self.target_offset
        behind[:, 0] = behind[:, 0] - half - 0.02
        behind[:, 2] = half
        rel = tcp.p - behind
        in_line = (rel[:, 1].abs() < 0.01) & (rel[:, 0] < 0.01)
        lowered = tcp.p[:, 2] < half + 0.015
        # off the line: travel above the cube height, then come down behind it
        approach = behind.clone()
        approach[:, 2] = th.where(in_line, behind[:, 2], behind[:, 2] + 0.05)
        # pushing: the hand keeps its offset behind the cube and drives the cube centre onto the goal centre
        push = tcp.p + (goal_p - obj_p)
        push[:, 1] = push[:, 1] + (behind[:, 1] - tcp.p[:, 1])
        push[:, 2] = half
        target = th.where((in_line & lowered)[:, None], push, approach)
        gripper = th.full((self.num_envs,), GRIPPER_CLOSED, device=self.device)
        return pose_action(target - tcp.p, top_down_rotvec(tcp.q), gripper, max_pos=0.6)


class StackCubeController(ScriptedController):
    """StackCube-v1: grasp cube A from above, bring it over cube B, lower it onto B, release, move up."""

    def _act(self, env: Any) -> th.Tensor:
        tcp = env.agent.tcp.pose
        a = env.cubeA.pose
        b_p = env.cubeB.pose.p
        grasped = env.agent.is_grasping(env.cubeA)
        pos_err, rotvec, gripper = self._grasp_from_above(tcp.p, tcp.q, a.p, a.q, grasped)
        size = 0.04
        place = b_p + self.target_offset
        place[:, 2] = b_p[:, 2] + size + 0.002
        xy_err = (place[:, :2] - a.p[:, :2]).norm(dim=-1)
        carry_target = place.clone()
        carry_target[:, 2] = carry_target[:, 2] + 0.05 * ((xy_err - 0.004) / 0.02).clamp(0.0, 1.0)
        on_top = (xy_err < 0.008) & ((a.p[:, 2] - place[:, 2]).abs() < 0.006)
        self.released = self.released | (grasped & on_top)
        carry_err = carry_target - a.p
        pos_err = th.where(grasped[:, None], carry_err, pos_err)
        rotvec = th.where(grasped[:, None], top_down_rotvec(tcp.q), rotvec)
        # released: open and lift straight up
        lift = th.zeros_like(pos_err)
        lift[:, 2] = 0.03
        pos_err = th.where(self.released[:, None], lift, pos_err)
        gripper = th.where(self.released, GRIPPER_OPEN, gripper)
        return pose_action(pos_err, rotvec, gripper, max_pos=0.5)


class PegInsertionSideController(ScriptedController):
    """PegInsertionSide-v1: grasp the peg behind its middle, carry it in front of the hole, align, push it in.

    While carrying, the hand target is the pose that puts the *peg* where it should be, given how the peg sits in
    the hand now (``target_tcp = desired_peg * peg^-1 * tcp``), so slips in the grasp are corrected.
    """

    def _act(self, env: Any) -> th.Tensor:
        from mani_skill.utils.geometry.rotation_conversions import quaternion_to_axis_angle
        from mani_skill.utils.structs.pose import Pose

        tcp = env.agent.tcp.pose
        peg = env.peg.pose
        half_len = env.peg_half_sizes[:, 0]
        grasped = env.agent.is_grasping(env.peg)
        rot = quat_to_matrix(peg.q)
        axis = rot[..., :, 0]  # peg axis, head at +x
        grasp_point = peg.p - axis * th.clamp(half_len / 2 + 0.01, min=0.05)[:, None]
        across = rot[..., :, 1]
        pos_err, rotvec, gripper = self._grasp_from_above(
            tcp.p, tcp.q, grasp_point, peg.q, grasped, th.atan2(across[:, 1], across[:, 0]), math.pi
        )
        # carrying: desired peg pose = goal pose backed off along the hole axis; insert once lined up
        goal = env.goal_pose
        peg_in_goal = goal.inv() * peg
        lateral = peg_in_goal.p[:, 1:].norm(dim=-1)
        tilt = quaternion_to_axis_angle(peg_in_goal.q).norm(dim=-1)
        lined_up = (lateral < 0.003) & (tilt < 0.02) & (peg_in_goal.p[:, 0] < -0.005)
        # phases (latched, per env): 0 travel to the pre-insert pose above the box, 1 line up, 2 insert
        self.phase = th.where(grasped, self.phase, th.zeros_like(self.phase))
        self.phase = th.where((self.phase == 1) & lined_up, th.full_like(self.phase, 2), self.phase)
        # inserting: advance 1 cm per step along the hole axis while the lateral and angular errors are corrected
        inserting_back_off = (-peg_in_goal.p[:, 0] - 0.01).clamp_min(0.0)
        back_off = th.where(self.phase == 2, inserting_back_off, half_len + 0.06)
        offset = th.zeros_like(peg.p)
        offset[:, 0] = -back_off
        offset = offset + self.target_offset
        desired_peg = goal * Pose.create_from_pq(p=offset)
        tcp_target = desired_peg * peg.inv() * tcp
        dq = quaternion_multiply(tcp_target.q, quaternion_invert(tcp.q))
        dq = th.where(dq[:, :1] < 0, -dq, dq)
        carry_rot = quaternion_to_axis_angle(dq)
        carry_err = tcp_target.p - tcp.p
        arrived = (self.phase == 0) & grasped & (carry_err.norm(dim=-1) < 0.01)
        self.phase = th.where(arrived, th.ones_like(self.phase), self.phase)
        # travelling: keep the peg 5 cm higher than the pre-insert pose until right above it (clears the box)
        xy_far = carry_err[:, :2].norm(dim=-1) > 0.02
        carry_err[:, 2] = th.where((self.phase == 0) & xy_far, carry_err[:, 2] + 0.05, carry_err[:, 2])
        pos_err = th.where(grasped[:, None], carry_err, pos_err)
        rotvec = th.where(grasped[:, None], carry_rot, rotvec)
        # carrying: softer gains plus an integral term, which removes the steady sag of the PD arm under the peg
        err = th.cat((pos_err, rotvec), dim=-1)
        self.integral = th.where(grasped[:, None], (self.integral + err).clamp(-0.3, 0.3), th.zeros_like(err))
        err = th.where(grasped[:, None], 0.5 * err + 0.1 * self.integral, err)
        return pose_action(err[:, :3], err[:, 3:], gripper, max_pos=0.4)


def quaternion_multiply(a: th.Tensor, b: th.Tensor) -> th.Tensor:
    """Hamilton product of quaternions ``(N, 4)`` (w, x, y, z)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return th.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        dim=-1,
    )


def quaternion_invert(q: th.Tensor) -> th.Tensor:
    """Inverse of unit quaternions ``(N, 4)`` (w, x, y, z)."""
    return q * th.tensor([1.0, -1.0, -1.0, -1.0], device=q.device, dtype=q.dtype)


def make_controller(name: str, **kwargs: Any) -> ScriptedController:
    """Build the controller class ``name`` of this module (as named in the task table)."""
    cls = globals().get(name)
    if not (isinstance(cls, type) and issubclass(cls, ScriptedController)):
        raise ValueError(f"unknown scripted controller {name!r}")
    return cls(**kwargs)
