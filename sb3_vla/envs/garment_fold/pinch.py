"""GarmentFold's residual in pinch-point space: move each hand's commanded pinch point by a few centimetres.

The base (the scripted folder or the small VLA) commands 60 joint targets. The errors it makes are Cartesian: its
perception of a sleeve tip or of a place point is a few centimetres off. :class:`PinchResidualMap` lets a residual
policy correct exactly that: 7 numbers, ``(dx, dy, dz)`` of the left and right pinch points (metres, after the
wrapper's ``residual_scale``) and an offset of the stage-advance signal. Each arm's 6 joint targets are re-solved by
damped-least-squares IK so that the pinch point of the base's command moves by ``(dx, dy, dz)`` with the hand's
orientation kept; hand joints are the base's. A zero residual executes the base action unchanged. The policy also
sees the base's command in these units (``vla_action_mapped``: the two commanded pinch points and the advance
signal), so "move 2 cm toward the sleeve tip" is a difference of two observed vectors, not a forward-kinematics
problem. With ``targets_key="task_points"`` (an env made with ``task_points_obs=True``) it also shows the offset
from each commanded pinch point to the stage's grasp keypoint and place target, so the correction is read off one
observed vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from gymnasium import spaces

from sb3_vla.core.residual_map import ResidualMap
from sb3_vla.envs.garment_fold.scene import ARM_JOINTS, JOINTS_PER_SIDE, SIDES

#: residual scale of the pinch-point dims (m) and of the stage-advance dim: +-5 cm in x and y (the scripted folder's
#: perception error is 3 cm per axis), +-1 cm in z (heights are not perceived; a pinch 3 mm above the table misses
#: the cloth when lifted by a centimetre), +-0.3 on the advance signal (the base's 0 / 1 requests always win)
PINCH_RESIDUAL_SCALE = (0.05, 0.05, 0.01, 0.05, 0.05, 0.01, 0.3)
#: residual scale of :class:`PinchResidualMap` with ``relative=True``: per hand, fractions up to 1.5 of the xy offsets
#: to the grasp keypoint and to the place target (1: onto the point), +-0.5 cm in z; +-0.3 on the advance signal
RELATIVE_PINCH_RESIDUAL_SCALE = (1.5, 1.5, 1.5, 1.5, 0.005, 1.5, 1.5, 1.5, 1.5, 0.005, 0.3)
#: residual scale of :class:`PinchResidualMap` with ``relative=True`` and ``held_key``: per hand, fractions up to 1.5 of
#: the xy offset to the hand's current task point (grasp keypoint until it holds the cloth, then place target),
#: +-0.5 cm in z; +-0.3 on the advance signal
PHASED_PINCH_RESIDUAL_SCALE = (1.5, 1.5, 0.005, 1.5, 1.5, 0.005, 0.3)


class PinchResidualMap(ResidualMap):
    """``(B, 61)`` GarmentFold base actions + ``(B, 7)`` pinch-point offsets -> ``(B, 61)`` joint actions.

    Residual dims: ``0-2`` left pinch point ``(dx, dy, dz)`` (m), ``3-5`` right, ``6`` added to the stage-advance
    signal (dim 60). Use with ``residual_scale`` in metres, e.g. :data:`PINCH_RESIDUAL_SCALE` (+-5 cm in x and y,
    +-1 cm in z, +-0.3).

    :param iters: IK iterations per arm (2 reach a 5 cm offset to about a millimetre).
    :param targets_key: the observation key of the stage's task points (``"task_points"``: the env made with
        ``task_points_obs=True``); the view ``vla_action_mapped`` then has 19 numbers: the 7 above, then per hand
        (left, right) the offset (x, y, z) from its commanded pinch point to the grasp keypoint and to the place
        target, clipped to ``+-target_range`` and divided by it (so +-1 means that far or farther).
    :param target_range: the range (m) of those offsets.
    :param relative: residuals relative to those task points (needs ``targets_key``): per hand (left ``0-4``, right
        ``5-9``) the fractions of the xy offset to the grasp keypoint (``0-1``) and to the place target (``2-3``)
        added to its pinch point, and ``dz`` (m); dim ``10`` the advance signal. Use with
        :data:`RELATIVE_PINCH_RESIDUAL_SCALE`. The correction of a perception error is then one constant (a
        fraction of 1 toward the stage's point) rather than a function of the observation to learn.
    :param held_key: with ``relative``, the observation key saying which hand holds the cloth (``"held"``): each
        hand's point is then its current one (the grasp keypoint until it holds the cloth, then the place target)
        and the residual has 7 dims as the absolute form: per hand the fractions of the xy offset to that point and
        ``dz`` (m), then the advance signal. Use with :data:`PHASED_PINCH_RESIDUAL_SCALE`. The rule "part of the
        way toward the current point" (:func:`~sb3_vla.envs.garment_fold.oracle.relative_rule`) is then a
        constant residual.
    :param dims: the residual dims (of the form above) the agent controls; the others stay 0. E.g. ``(0, 1, 3, 4)``
        with ``held_key``: only the four xy fractions, so neither height nor the advance signal can be pushed by a
        saturated actor. The residual then has ``len(dims)`` dims and ``residual_scale`` one entry per kept dim.

    Example::

        >>> import gymnasium as gym
        >>> import sb3_vla  # registers GarmentFold-v0
        >>> from sb3_vla.wrappers import ResidualActionWrapper, VLAObservationWrapper
        >>> env = ResidualActionWrapper(
        ...     VLAObservationWrapper(gym.make("GarmentFold-v0", pcd_points=0), base="scripted"),
        ...     residual_scale=PINCH_RESIDUAL_SCALE,
        ...     residual_map=PinchResidualMap(),
        ... )
        >>> env.action_space
        Box(-1.0, 1.0, (7,), float32)
        >>> _ = env.reset(seed=0)
        >>> _, _, _, _, info = env.step(np.zeros(7, dtype=np.float32))  # no offset: the base's joint targets
        >>> bool(np.allclose(info["executed_action"], info["base_action"], atol=1e-3))
        True
    """

    dim = 7
    action_shape = (61,)
    observation_space = spaces.Box(-2.0, 2.0, shape=(7,), dtype=np.float32)

    def __init__(
        self,
        iters: int = 2,
        targets_key: str | None = None,
        target_range: float = 0.05,
        relative: bool = False,
        held_key: str | None = None,
        dims: Sequence[int] | None = None,
    ) -> None:
        from sb3_vla.envs.garment_fold.scripted import ArmIK

        if target_range <= 0.0:
            raise ValueError(f"target_range must be > 0 (metres), got {target_range}")
        if relative and targets_key is None:
            raise ValueError("relative=True moves pinch points toward observed task points: pass targets_key too")
        if held_key is not None and not relative:
            raise ValueError("held_key picks each hand's task point for relative residuals: pass relative=True too")
        self.relative = bool(relative)
        self.held_key = held_key
        if self.relative:
            self.dim, self.needs_obs = (7 if held_key is not None else 11), True
        self.full_dim = self.dim
        self.dims = None if dims is None else self._check_dims(dims, self.full_dim)
        if self.dims is not None:
            self.dim = len(self.dims)
        self.ik = ArmIK()
        self.iters = int(iters)
        self.targets_key = targets_key
        self.target_range = float(target_range)
        if targets_key is not None:
            self.observation_space = spaces.Box(-2.0, 2.0, shape=(19,), dtype=np.float32)

    @staticmethod
    def _check_dims(dims: Sequence[int], full_dim: int) -> tuple[int, ...]:
        kept = tuple(int(d) for d in dims)
        if not kept or len(set(kept)) != len(kept) or min(kept) < 0 or max(kept) >= full_dim:
            raise ValueError(
                f"dims must be distinct residual dims in 0..{full_dim - 1} (this map's form has {full_dim}), got "
                f"{list(dims)}; e.g. (0, 1, 3, 4) keeps the xy dims of the 7-D forms"
            )
        return kept

    def _arm_q(self, action: np.ndarray, i: int) -> np.ndarray:
        cols = slice(i * JOINTS_PER_SIDE, i * JOINTS_PER_SIDE + len(ARM_JOINTS))
        return self.ik.lo + 0.5 * (np.clip(action[cols], -1.0, 1.0) + 1.0) * (self.ik.hi - self.ik.lo)

    def observe(self, base: np.ndarray, obs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The pinch points (m) the base's arm targets command, left then right, and its advance signal: ``(B, 7)``;
        with ``targets_key``, then the offsets to the task points in ``obs`` (``(B, 19)``)."""
        base = np.asarray(base, dtype=np.float64)
        out = np.zeros((base.shape[0], 7))
        for b in range(base.shape[0]):
            for i, side in enumerate(SIDES):
                out[b, 3 * i : 3 * i + 3] = self.ik.forward(side, self._arm_q(base[b], i))
            out[b, 6] = base[b, 60]
        out = np.clip(out, -2.0, 2.0)
        if self.targets_key is None:
            return out
        offsets = self._offsets(out[:, :6], obs) / self.target_range
        return np.concatenate([out, offsets.reshape(-1, 12)], axis=1)

    def _offsets(self, pinch: np.ndarray, obs: Mapping[str, np.ndarray] | None) -> np.ndarray:
        """``(B, 2 hands, 2 points, 3)`` offsets (m) from the commanded pinch points ``(B, 6)`` to the task points
        (grasp keypoint, place target), clipped to ``+-target_range``."""
        key = self.targets_key
        if obs is None or key is None or key not in obs:
            raise ValueError(
                f"PinchResidualMap(targets_key={self.targets_key!r}) reads the observation key {self.targets_key!r}, "
                f"which the observation lacks (keys: {sorted(obs or {})}); make the env with task_points_obs=True"
            )
        points = np.asarray(obs[key], dtype=np.float64).reshape(pinch.shape[0], 2, 2, 3)
        rng = self.target_range
        return np.clip(points - pinch.reshape(-1, 2, 1, 3), -rng, rng)

    def __call__(self, base: np.ndarray, delta: np.ndarray, obs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        base = np.asarray(base, dtype=np.float64)
        delta = np.asarray(delta, dtype=np.float64)
        if self.dims is not None:  # the dims the agent does not control stay 0
            full = np.zeros((delta.shape[0], self.full_dim))
            full[:, list(self.dims)] = delta
            delta = full
        pinch = np.stack([self.ik.forward(s, self._arm_q(b, i)) for b in base for i, s in enumerate(SIDES)])
        pinch = pinch.reshape(-1, 2, 3)
        if self.relative:  # fractions of the observed offsets -> pinch offsets (m), as the absolute form takes
            delta = np.concatenate([self._relative_offsets(pinch, delta, obs), delta[:, -1:]], axis=1)
        out = base.copy()
        span = self.ik.hi - self.ik.lo
        for b in range(base.shape[0]):
            for i, side in enumerate(SIDES):
                dp = delta[b, 3 * i : 3 * i + 3]
                if not np.any(dp):
                    continue
                cols = slice(i * JOINTS_PER_SIDE, i * JOINTS_PER_SIDE + len(ARM_JOINTS))
                q = self._arm_q(base[b], i)
                target = pinch[b, i] + dp
                q_new = self.ik.solve(side, q, target, iters=self.iters, rotation=self.ik.rotation(side, q))
                out[b, cols] = 2.0 * (q_new - self.ik.lo) / span - 1.0
            out[b, 60] = base[b, 60] + delta[b, 6]
        return out

    def _relative_offsets(
        self, pinch: np.ndarray, delta: np.ndarray, obs: Mapping[str, np.ndarray] | None
    ) -> np.ndarray:
        """Relative residuals ``(B, 11)`` (or ``(B, 7)`` with ``held_key``) at the pinch points ``(B, 2, 3)`` ->
        pinch offsets ``(B, 6)`` (m)."""
        off = self._offsets(pinch.reshape(-1, 6), obs)
        dp = np.zeros((delta.shape[0], 2, 3))
        if self.held_key is None:
            hands = delta[:, :10].reshape(-1, 2, 5)
            dp[..., :2] = hands[..., 0:2] * off[:, :, 0, :2] + hands[..., 2:4] * off[:, :, 1, :2]
            dp[..., 2] = hands[..., 4]
            return dp.reshape(-1, 6)
        assert obs is not None  # _offsets checked it
        if self.held_key not in obs:
            raise ValueError(
                f"PinchResidualMap(held_key={self.held_key!r}) reads the observation key {self.held_key!r}, which the "
                f"observation lacks (keys: {sorted(obs)}); GarmentFold-v0 observes it as 'held'"
            )
        held = np.asarray(obs[self.held_key], dtype=np.float64).reshape(-1, 2) > 0.5
        point = np.where(held[..., None], off[:, :, 1, :2], off[:, :, 0, :2])
        hands = delta[:, :6].reshape(-1, 2, 3)
        dp[..., :2] = hands[..., :2] * point
        dp[..., 2] = hands[..., 2]
        return dp.reshape(-1, 6)
