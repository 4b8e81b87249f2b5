"""Frozen base models: the protocol, built-in bases and the spec-string registry."""

from sb3_vla.bases.base import BaseModel, VLABatch
from sb3_vla.bases.builtin import CallableBase, EnvScriptedBase, ZeroBase
from sb3_vla.bases.registry import make_base, register_base, registered_bases

__all__ = [
    "BaseModel",
    "CallableBase",
    "EnvScriptedBase",
    "VLABatch",
    "ZeroBase",
    "make_base",
    "register_base",
    "registered_bases",
]
