"""Ray as an optional dependency: a lazy import with a clear error, and joining or starting a cluster."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

RAY_EXTRA_HINT = 'pip install -e ".[ray]"'
NAMESPACE = "sb3_vla"  # named actors (the base servers) live here, so that separate jobs find each other's


class RayWorkerError(RuntimeError):
    """A Ray actor (an env worker or the base server) died or did not answer in time; the message names which."""


def import_ray(feature: str = "sb3_vla.ray") -> ModuleType:
    """Import ``ray`` or raise an ``ImportError`` naming the extra to install.

    :param feature: what needs Ray, for the message (e.g. ``"--vec-env ray"``).
    """
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            f"{feature} needs the optional dependency 'ray', which is not installed: {RAY_EXTRA_HINT} "
            "(or pip install ray)"
        ) from e
    return ray


def ensure_ray(address: str | None = None, num_cpus: float | None = None, **init_kwargs: Any) -> ModuleType:
    """Make sure this process is connected to a Ray cluster and return the ``ray`` module.

    Inside a Ray worker, or after the user's own ``ray.init``, nothing happens. Otherwise ``address`` (or the
    ``RAY_ADDRESS`` environment variable, e.g. ``auto`` or ``ray://head:10001``) joins an existing cluster;
    without one a local cluster is started with ``num_cpus`` logical CPUs (default: the machine's cores).

    :param address: an existing cluster's address; ``None`` reads ``RAY_ADDRESS``.
    :param num_cpus: logical CPUs of a local cluster (ignored when joining one).
    :param init_kwargs: more keyword arguments for ``ray.init`` (``runtime_env``, ``namespace`` ...).

    Example::

        ray = ensure_ray(num_cpus=2)  # a local cluster unless RAY_ADDRESS is set
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    init_kwargs.setdefault("include_dashboard", False)
    init_kwargs.setdefault("log_to_driver", True)
    if address:
        init_kwargs.pop("include_dashboard")  # a setting of the cluster, not of a joining driver
        ray.init(address=address, **init_kwargs)
    else:
        ray.init(num_cpus=None if num_cpus is None else int(round(num_cpus)), **init_kwargs)
    return ray


def cluster_resources(ray: ModuleType) -> dict[str, float]:
    """The cluster's total resources (``CPU``, ``GPU``, custom ones), or ``{}`` when Ray cannot say."""
    try:
        return {k: float(v) for k, v in ray.cluster_resources().items()}
    except Exception:  # pragma: no cover - a cluster that is still starting
        return {}
