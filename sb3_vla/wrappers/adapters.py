"""Deprecated: moved to :mod:`sb3_vla.core.adapters` (the names stay exported from :mod:`sb3_vla.wrappers`)."""

from sb3_vla.core.adapters import *  # noqa: F403
from sb3_vla.core.adapters import __all__  # noqa: F401
from sb3_vla.deprecation import warn_moved

warn_moved("sb3_vla.wrappers.adapters", "sb3_vla.core.adapters")
