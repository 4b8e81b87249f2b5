"""sb3-vla: residual RL post-training of frozen Vision-Language-Action models with stock Stable-Baselines3."""

from sb3_vla.bases import BaseModel, CallableBase, EnvScriptedBase, VLABatch, ZeroBase, make_base, register_base
from sb3_vla.env_util import make_residual_env, make_residual_vec_env
from sb3_vla.envs import register_envs
from sb3_vla.extractor import VLAFeaturesExtractor
from sb3_vla.policies import (
    ResidualActorCriticPolicy,
    ResidualPPOPolicy,
    ResidualSACPolicy,
    ResidualTD3Policy,
    ResidualTQCPolicy,
    ZeroResidualInitCallback,
)
from sb3_vla.threads import apply_zoo_thread_default
from sb3_vla.wrappers import (
    ResidualActionWrapper,
    ResidualConfig,
    VecResidualActionWrapper,
    VecVLAObservationWrapper,
    VLAObservationWrapper,
)

__version__ = "0.1.0"

register_envs()
apply_zoo_thread_default()  # one torch thread under rl-zoo's CLI unless the user chose (sb3_vla/threads.py)

__all__ = [
    "BaseModel",
    "CallableBase",
    "EnvScriptedBase",
    "ResidualActionWrapper",
    "ResidualActorCriticPolicy",
    "ResidualConfig",
    "ResidualPPOPolicy",
    "ResidualSACPolicy",
    "ResidualTD3Policy",
    "ResidualTQCPolicy",
    "VLABatch",
    "VLAFeaturesExtractor",
    "VLAObservationWrapper",
    "VecResidualActionWrapper",
    "VecVLAObservationWrapper",
    "ZeroBase",
    "ZeroResidualInitCallback",
    "__version__",
    "make_base",
    "make_residual_env",
    "make_residual_vec_env",
    "register_base",
    "register_envs",
]
