"""sb3-vla: residual RL post-training of frozen Vision-Language-Action models with stock Stable-Baselines3."""

from sb3_vla.envs import register_envs
from sb3_vla.vla import BaseModel, CallableBase, EnvScriptedBase, VLABatch, ZeroBase, make_base, register_base

__version__ = "0.1.0"

register_envs()

__all__ = [
    "BaseModel",
    "CallableBase",
    "EnvScriptedBase",
    "VLABatch",
    "ZeroBase",
    "__version__",
    "make_base",
    "register_base",
    "register_envs",
]
