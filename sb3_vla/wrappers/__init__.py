"""Gymnasium and SB3 VecEnv wrappers: base-model observation injection and residual actions, and their settings
(:class:`ResidualConfig`)."""

from sb3_vla.core.adapters import ActionAdapter, IndexActionAdapter, LinearActionAdapter
from sb3_vla.core.keys import ACTION_KEY, EMBEDDING_KEY, MAPPED_ACTION_KEY
from sb3_vla.core.residual_map import ResidualMap
from sb3_vla.core.residual_math import compose_action
from sb3_vla.core.schedule import ResidualScaleSchedule
from sb3_vla.wrappers.config import OBS_WRAPPER_KEYS, RESIDUAL_KEYS, ResidualConfig, UnknownSettingError
from sb3_vla.wrappers.engine import BaseModelError, BaseQueryEngine
from sb3_vla.wrappers.observation import VecVLAObservationWrapper, VLAObservationWrapper
from sb3_vla.wrappers.residual import ResidualActionWrapper, VecResidualActionWrapper

__all__ = [
    "ACTION_KEY",
    "EMBEDDING_KEY",
    "MAPPED_ACTION_KEY",
    "OBS_WRAPPER_KEYS",
    "RESIDUAL_KEYS",
    "ActionAdapter",
    "BaseModelError",
    "BaseQueryEngine",
    "IndexActionAdapter",
    "LinearActionAdapter",
    "ResidualActionWrapper",
    "ResidualConfig",
    "ResidualMap",
    "ResidualScaleSchedule",
    "UnknownSettingError",
    "VLAObservationWrapper",
    "VecResidualActionWrapper",
    "VecVLAObservationWrapper",
    "compose_action",
]
