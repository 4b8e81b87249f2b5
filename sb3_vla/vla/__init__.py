"""Deprecated: the frozen-base package moved to :mod:`sb3_vla.bases` (``sb3_vla.vla.X`` imports ``sb3_vla.bases.X``)."""

from sb3_vla.bases import *  # noqa: F403
from sb3_vla.bases import __all__  # noqa: F401
from sb3_vla.deprecation import alias_package, warn_moved

warn_moved("sb3_vla.vla", "sb3_vla.bases")
alias_package("sb3_vla.vla", "sb3_vla.bases")
