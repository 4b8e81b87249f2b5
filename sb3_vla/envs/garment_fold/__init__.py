"""GarmentFold-v0: bimanual dexterous T-shirt folding on MuJoCo (>= 4.0) flex cloth.

Registered as ``GarmentFold-v0`` when ``sb3_vla`` is imported; :class:`GarmentFoldEnv` documents spaces and reward.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is first imported

from sb3_vla.envs.garment_fold.camera import CameraObservationWrapper, TaskPointsObservationWrapper
from sb3_vla.envs.garment_fold.env import GarmentFoldEnv
from sb3_vla.envs.garment_fold.metrics import INSTRUCTIONS, FoldTask
from sb3_vla.envs.garment_fold.pinch import (
    PHASED_PINCH_RESIDUAL_SCALE,
    PINCH_RESIDUAL_SCALE,
    RELATIVE_PINCH_RESIDUAL_SCALE,
    PinchResidualMap,
)

__all__ = [
    "INSTRUCTIONS",
    "PHASED_PINCH_RESIDUAL_SCALE",
    "PINCH_RESIDUAL_SCALE",
    "CameraObservationWrapper",
    "FoldTask",
    "GarmentFoldEnv",
    "PinchResidualMap",
    "RELATIVE_PINCH_RESIDUAL_SCALE",
    "TaskPointsObservationWrapper",
]
