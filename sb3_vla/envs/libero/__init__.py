"""LIBERO tasks as residual-RL envs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sb3_vla.envs.libero.suites import ENV_ID_PREFIX, SUITES, LiberoSuite, all_env_ids, get_suite, parse_env_id

if TYPE_CHECKING:
    from sb3_vla.envs.libero.cameras import LiberoCamerasWrapper
    from sb3_vla.envs.libero.env import LiberoEnv

__all__ = [
    "ENV_ID_PREFIX",
    "SUITES",
    "LiberoCamerasWrapper",
    "LiberoEnv",
    "LiberoSuite",
    "all_env_ids",
    "get_suite",
    "make_libero_env",
    "parse_env_id",
]


def __getattr__(name: str) -> Any:
    if name == "LiberoEnv":
        from sb3_vla.envs.libero.env import LiberoEnv

        return LiberoEnv
    if name == "LiberoCamerasWrapper":
        from sb3_vla.envs.libero.cameras import LiberoCamerasWrapper

        return LiberoCamerasWrapper
    if name == "make_libero_env":
        from sb3_vla.envs.libero.make import make_libero_env

        return make_libero_env
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
