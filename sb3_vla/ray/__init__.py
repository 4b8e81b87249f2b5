"""Scale out on Ray: env workers across machines, one batched frozen-base server, base latency hidden behind chunks.

- :class:`RayVecEnv` (``--vec-env ray``, ``vec_env_cls="ray"``): an SB3 ``VecEnv`` whose envs live in Ray actors.
- :class:`RayServedBase` and the ``ray:<inner spec>?max_batch=32&max_wait_ms=5`` base spec: one named actor holds
  the frozen base (on a GPU where the cluster has one) and serves every env worker and wrapper with dynamic
  batching; ``prefetch=k`` requests the next action chunk ``k`` steps before the current one runs out.

Ray is optional (``pip install -e ".[ray]"``): this package imports it only when one of these is used, and
:mod:`sb3_vla.ray.base_server` imports nothing above the base-model layer (:mod:`sb3_vla.bases`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sb3_vla.ray._common import RAY_EXTRA_HINT, RayWorkerError, ensure_ray, import_ray

if TYPE_CHECKING:
    from sb3_vla.ray.base_server import RayServedBase, serve_base
    from sb3_vla.ray.vec_env import RayVecEnv

__all__ = [
    "RAY_EXTRA_HINT",
    "RayServedBase",
    "RayVecEnv",
    "RayWorkerError",
    "ensure_ray",
    "import_ray",
    "ray_vec_env_class",
    "serve_base",
]

_LAZY = {
    "RayVecEnv": "sb3_vla.ray.vec_env",
    "RayServedBase": "sb3_vla.ray.base_server",
    "serve_base": "sb3_vla.ray.base_server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def ray_vec_env_class(feature: str = "vec_env_cls='ray'") -> type[RayVecEnv]:
    """:class:`RayVecEnv`, or an ``ImportError`` naming ``pip install -e ".[ray]"`` when Ray is missing.

    :param feature: what asked for it, for the message (``"--vec-env ray"``).
    """
    import_ray(feature)
    from sb3_vla.ray.vec_env import RayVecEnv

    return RayVecEnv
