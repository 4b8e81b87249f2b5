"""Deprecated: moved to :mod:`sb3_vla.core.residual_map`."""

from sb3_vla.core.residual_map import *  # noqa: F403
from sb3_vla.core.residual_map import __all__  # noqa: F401
from sb3_vla.deprecation import warn_moved

warn_moved("sb3_vla.wrappers.residual_map", "sb3_vla.core.residual_map")
