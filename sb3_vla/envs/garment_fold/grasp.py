"""GarmentFold's grasping: the pinch rule that attaches cloth to a hand, and the grasp part of the reward potential."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sb3_vla.envs.garment_fold.scene import SIDES

if TYPE_CHECKING:
    from sb3_vla.envs.garment_fold.env import GarmentFoldEnv
    from sb3_vla.envs.garment_fold.metrics import FoldMetrics

GRAB_TIP_DIST = 0.015  # thumb-index tip distance that closes a pinch (m)
GRAB_RADIUS = 0.03  # a cloth vertex within this distance of the pinch point is grabbed
RELEASE_TIP_DIST = 0.03  # tip distance that opens a pinch
GRASP_ACCURACY_RANGE = 0.05  # a held vertex this far from the grasp keypoint earns no grasp accuracy potential


def update_grasps(env: GarmentFoldEnv) -> None:
    """Pinch rule: closed thumb-index tips near a cloth vertex grab it; opening the tips releases it."""
    m, d = env.model, env.data
    for side in SIDES:
        th = d.site_xpos[env._th_tip[side]]
        ff = d.site_xpos[env._ff_tip[side]]
        gap = float(np.linalg.norm(th - ff))
        held = env._held[side]
        if held >= 0 and gap > RELEASE_TIP_DIST:
            d.eq_active[env._eq0[side] + held] = 0
            env._held[side] = -1
        elif held < 0 and gap < GRAB_TIP_DIST:
            mid = 0.5 * (th + ff)
            dist = np.linalg.norm(env._vertices() - mid, axis=1)
            v = int(np.argmin(dist))
            if dist[v] < GRAB_RADIUS:
                eq = env._eq0[side] + v
                palm = env._palm[side]
                # Anchor the vertex at the pinch point, expressed in the palm frame.
                m.eq_data[eq, 0:3] = d.xmat[palm].reshape(3, 3).T @ (mid - d.xpos[palm])
                m.eq_data[eq, 3:6] = 0.0
                d.eq_active[eq] = 1
                env._held[side] = v


def grasp_potential(env: GarmentFoldEnv, metrics: FoldMetrics) -> float:
    """The grasp shaping part of the reward potential: active hands near (or holding, and with
    ``grasp_accuracy_shaping`` how close to the keypoint) their grasp keypoint while the stage is incomplete."""
    phi = 0.0
    shaping = env.grasp_shaping > 0.0 or env.grasp_accuracy_shaping > 0.0
    if shaping and env.stage < 3 and not metrics.complete[env.stage]:
        grasps = env.folder.STAGE_GRASPS[env.stage]
        for side, kp in grasps.items():
            if env._held[side] >= 0:
                phi += env.grasp_shaping
                if env.grasp_accuracy_shaping > 0.0:
                    miss = float(np.linalg.norm(env._vertices()[env._held[side]] - env.keypoint_position(kp)))
                    phi += env.grasp_accuracy_shaping * max(0.0, 1.0 - miss / GRASP_ACCURACY_RANGE)
            else:
                dist = float(np.linalg.norm(env.pinch_position(side) - env.keypoint_position(kp)))
                phi += env.grasp_shaping * max(0.0, 1.0 - dist / 0.3)
    return phi
