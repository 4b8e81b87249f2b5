"""The privileged oracle correction of the scripted folder's perception error (what a residual could learn)."""

from __future__ import annotations

import numpy as np

from sb3_vla.envs.garment_fold.env import GarmentFoldEnv
from sb3_vla.envs.garment_fold.scripted import APPROACH, CARRY, CLOSE, DESCEND, RELEASE, RETREAT, SIDES


def oracle_offsets(env: GarmentFoldEnv) -> dict[str, np.ndarray]:
    """Per active hand (``"L"`` / ``"R"``), the xy offset (m) of the commanded pinch point that cancels the
    scripted folder's current perception error: its grasp error while approaching and closing, its place error
    while releasing, blended along the carry arc. Reads the folder's noise (privileged), so it bounds what a
    learned pinch residual (:class:`~sb3_vla.envs.garment_fold.PinchResidualMap`) can gain; see
    ``benchmarks/garment_headroom.py``."""
    f = env.folder
    stage = env.stage
    out: dict[str, np.ndarray] = {}
    if stage >= 3 or f.stage != stage:
        return out
    for i, side in enumerate(SIDES):
        if side not in f.STAGE_GRASPS[stage]:
            continue
        grasp, place = -f.grasp_offset[side], -f.place_noise[stage, i]
        if f.phase in (APPROACH, DESCEND, CLOSE):
            out[side] = grasp
        elif f.phase == CARRY:  # blend along the carry arc, from the grasp's correction to the place's
            out[side] = (1.0 - f.arc_s) * grasp + f.arc_s * place
        elif f.phase in (RELEASE, RETREAT):
            out[side] = place
    return out


#: the fraction of the offset to the task point that :func:`relative_rule` moves each pinch point by
RELATIVE_RULE_FRACTION = 0.5


def relative_rule(held: np.ndarray, fraction: float = RELATIVE_RULE_FRACTION) -> np.ndarray:
    """A rule of the observation alone over :class:`~sb3_vla.envs.garment_fold.PinchResidualMap` ``relative=True``
    deltas ``(11,)``: each hand moves ``fraction`` of the way toward the stage's grasp keypoint until it holds the
    cloth (``held``, the observation key), then toward the place target; ``dz`` and the advance stay 0. Divide by
    :data:`~sb3_vla.envs.garment_fold.RELATIVE_PINCH_RESIDUAL_SCALE` for the residual in ``[-1, 1]``.

    Example::

        >>> relative_rule(np.array([0.0, 1.0]))[:10].reshape(2, 5)
        array([[0.5, 0.5, 0. , 0. , 0. ],
               [0. , 0. , 0.5, 0.5, 0. ]])
    """
    out = np.zeros(11)
    for i, is_held in enumerate(np.asarray(held).reshape(2) > 0.5):
        start = 5 * i + (2 if is_held else 0)
        out[start : start + 2] = fraction
    return out
