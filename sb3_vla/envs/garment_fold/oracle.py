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
