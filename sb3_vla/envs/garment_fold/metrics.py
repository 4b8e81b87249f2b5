"""Fold targets and fold-quality metrics for the three GarmentFold stages.

Everything is computed in the shirt frame (the flat shirt's own x/y axes), so a randomly placed shirt is scored
the same as a centred one. A stage moves a set of vertices to their mirror images about its fold line; the
target of every vertex after stage ``k`` is the flat position with folds ``0..k`` applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sb3_vla.envs.garment_fold.scene import CLOTH_RADIUS, ShirtMesh

STAGE_NAMES = ("left_sleeve", "right_sleeve", "bottom_half")
INSTRUCTIONS = (
    "fold the left sleeve onto the body",
    "fold the right sleeve onto the body",
    "fold the bottom half of the shirt onto the top half",
)
# A vertex lies "on top" when it sits at least about one cloth layer above the table (a flat vertex is at
# CLOTH_RADIUS) but is not held up in the air.
LAYER_Z_MIN = 2.0 * CLOTH_RADIUS - 0.0005
LAYER_Z_MAX = 0.04


@dataclass
class FoldMetrics:
    """Per-stage fold quality of one cloth state.

    :param fold_error: ``(3,)`` mean xy distance (m) of each stage's moving vertices to their targets.
    :param layered: ``(3,)`` fraction of each stage's moving vertices lying on top near their target.
    :param drift: mean xy displacement (m) of the vertices no stage moves.
    :param complete: ``(3,)`` whether each stage is within tolerance.
    """

    fold_error: np.ndarray
    layered: np.ndarray
    drift: float
    complete: np.ndarray


class FoldTask:
    """Fold lines, moving sets and targets of the three stages for one shirt mesh.

    :param mesh: the flat shirt.
    :param fold_tolerance: a stage is complete when its fold error is below this (m) ...
    :param layered_tolerance: ... and at least this fraction of its moving vertices lie on top.

    Example (the flat shirt: no stage folded yet)::

        >>> from sb3_vla.envs.garment_fold.scene import make_shirt
        >>> task = FoldTask(make_shirt())
        >>> m = task.evaluate(task.mesh.points)  # vertex positions (N, 3) in the shirt frame
        >>> m.fold_error.round(3).tolist(), m.complete.tolist()
        ([0.167, 0.167, 0.233], [False, False, False])
    """

    def __init__(self, mesh: ShirtMesh, fold_tolerance: float = 0.03, layered_tolerance: float = 0.7) -> None:
        self.mesh = mesh
        self.fold_tolerance = float(fold_tolerance)
        self.layered_tolerance = float(layered_tolerance)
        flat = mesh.points[:, :2]
        hw = mesh.body_half_width
        eps = 1e-6
        self.moving = np.stack(
            [
                flat[:, 0] < -hw - eps,  # left sleeve: beyond the body's left edge
                flat[:, 0] > hw + eps,  # right sleeve
                flat[:, 1] < -eps,  # bottom half: below the body's mid line
            ]
        )
        self.stationary = ~self.moving.any(axis=0)
        targets = []
        cur = flat.copy()
        for k in range(3):
            nxt = cur.copy()
            m = self.moving[k]
            if k == 0:
                nxt[m, 0] = -2.0 * hw - cur[m, 0]
            elif k == 1:
                nxt[m, 0] = 2.0 * hw - cur[m, 0]
            else:
                nxt[m, 1] = -cur[m, 1]
            targets.append(nxt)
            cur = nxt
        self.targets = np.stack(targets)  # (3, N, 2): xy of every vertex after folds 0..k
        self.flat = flat
        self.initial_error = np.array(
            [np.linalg.norm(flat[self.moving[k]] - self.targets[k][self.moving[k]], axis=1).mean() for k in range(3)]
        )

    def folded_state(self, stage: int, fraction: float = 1.0) -> np.ndarray:
        """Shirt-frame vertex positions ``(N, 3)`` with stages ``< stage`` folded and ``stage`` folded ``fraction``.

        Moved vertices are put one cloth layer (2 radii) higher per fold that moved them; ``fraction`` moves
        the ``stage`` vertices in a straight line (xy) from their previous place to their target.
        """
        xy = self.flat.copy()
        layers = np.zeros(len(xy))
        for k in range(stage):
            xy = self.targets[k].copy()
            layers += self.moving[k]
        if stage < 3 and fraction > 0.0:
            m = self.moving[stage]
            xy[m] = (1.0 - fraction) * xy[m] + fraction * self.targets[stage][m]
            layers[m] += 1.0
        z = CLOTH_RADIUS * (1.0 + 2.0 * layers)
        return np.column_stack([xy, z])

    def evaluate(self, xyz: np.ndarray) -> FoldMetrics:
        """Score a cloth state given vertex positions ``(N, 3)`` in the shirt frame (z = height above table)."""
        fold_error = np.empty(3)
        layered = np.empty(3)
        for k in range(3):
            m = self.moving[k]
            dist = np.linalg.norm(xyz[m, :2] - self.targets[k][m], axis=1)
            fold_error[k] = dist.mean()
            z = xyz[m, 2]
            on_top = (z > LAYER_Z_MIN) & (z < LAYER_Z_MAX) & (dist < 2.0 * self.fold_tolerance)
            layered[k] = on_top.mean()
        drift = float(np.linalg.norm(xyz[self.stationary, :2] - self.flat[self.stationary], axis=1).mean())
        complete = (fold_error < self.fold_tolerance) & (layered >= self.layered_tolerance)
        return FoldMetrics(fold_error=fold_error, layered=layered, drift=drift, complete=complete)

    def potential(self, metrics: FoldMetrics) -> float:
        """Fold-quality potential: per-stage progress toward the targets, layering, minus drift (unitless)."""
        progress = np.clip(1.0 - metrics.fold_error / self.initial_error, -1.0, 1.0)
        return float(progress.sum() + 0.5 * metrics.layered.sum() - metrics.drift / 0.05)
