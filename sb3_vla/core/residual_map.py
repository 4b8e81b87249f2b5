"""Residuals in a space other than the env's action space (say, end-effector offsets on a joint-space env).

By default a residual policy acts in the env's own action space: ``executed = clip(base + scale * residual)``. On a
joint-position env the corrections a base needs are often Cartesian (its perception put the hand 3 cm off), and a
joint-space residual is a poor way to express them: the same offset needs a different mix of joints in every arm
pose, and per-joint clipping turns it. A :class:`ResidualMap` states the composition instead::

    executed = clip(residual_map(base, residual_scale * residual), low, high)

with the residual (and its scale) in the map's own units. The residual wrappers accept one as ``residual_map``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_vla.core.imports import import_object
from sb3_vla.core.keys import MAPPED_ACTION_KEY

__all__ = ["MAPPED_ACTION_KEY", "ResidualMap", "ResidualMapLike", "compose_mapped", "resolve_residual_map"]


class ResidualMap:
    """Base class: ``__call__(base (B, A), delta (B, R)) -> executed (B, A)``, ``delta`` already scaled.

    :attr dim: the residual's size ``R`` (the policy's action space is ``Box(-1, 1, (R,))``).
    :attr action_shape: the env action shape ``(A,)`` the map works on.
    :attr observation_space: optional ``Box`` of :meth:`observe`: the base action seen in the residual's space
        (the wrappers add it to the observation as ``vla_action_mapped``), ``None`` for no such view.
    :attr needs_obs: ``True`` for maps whose composition reads the observation (a residual relative to observed
        points): ``__call__(base, delta, obs=obs)`` then gets the env's observation, batched like ``base``.

    Example::

        class AddFirstTwo(ResidualMap):
            dim, action_shape = 2, (7,)

            def __call__(self, base, delta):
                out = base.copy()
                out[:, :2] += delta
                return out
    """

    dim: int
    action_shape: tuple[int, ...]
    observation_space: spaces.Box | None = None
    needs_obs: bool = False

    def __call__(self, base: np.ndarray, delta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def observe(self, base: np.ndarray, obs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The base actions ``(B, A)`` in the residual's space ``(B, *observation_space.shape)`` (e.g. the pinch
        points the base commands), for policies that correct them; only called when :attr:`observation_space` is
        set. ``obs`` is the env's observation, batched like ``base``, for views that relate the two (say, the offset
        from each commanded pinch point to the keypoint it should reach)."""
        raise NotImplementedError

    def check(self, action_space: spaces.Box) -> None:
        """Raise a clear error when the env's action space is not the one this map was built for."""
        if tuple(action_space.shape) != tuple(self.action_shape):
            raise ValueError(
                f"{type(self).__name__} maps residuals onto actions of shape {tuple(self.action_shape)}, but the "
                f"env's action space has shape {tuple(action_space.shape)}; use the map of this env (or none)"
            )


#: a map, a ``"package.module:Name"`` string, or (YAML) ``{"package.module:Name": {kwarg: value}}``
ResidualMapLike = ResidualMap | str | Mapping[str, Mapping[str, Any]]


def compose_mapped(
    residual_map: ResidualMap,
    base_action: np.ndarray,
    residual: np.ndarray,
    residual_scale: float | np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    obs: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """``clip(residual_map(base, residual_scale * clip(residual, -1, 1)), low, high)`` for ``(A,)`` or ``(B, A)``
    base actions and ``(R,)`` or ``(B, R)`` residuals; float32, the shape of ``base_action``. ``obs``: the env's
    observation (single or batched like ``base_action``), passed on to maps with :attr:`ResidualMap.needs_obs`."""
    base2 = np.asarray(base_action, dtype=np.float64).reshape(-1, np.shape(low)[0])
    delta = np.clip(np.asarray(residual, dtype=np.float64), -1.0, 1.0) * np.asarray(residual_scale, dtype=np.float64)
    delta = delta.reshape(base2.shape[0], residual_map.dim)
    if residual_map.needs_obs:
        if obs is None:
            raise ValueError(f"{type(residual_map).__name__} composes from the observation, but none was passed")
        batched = {
            k: np.asarray(v).reshape(base2.shape[0], *np.shape(v)[np.ndim(base_action) - 1 :]) for k, v in obs.items()
        }
        out = np.asarray(residual_map(base2, delta, obs=batched), dtype=np.float64)  # type: ignore[call-arg]
    else:
        out = np.asarray(residual_map(base2, delta), dtype=np.float64)
    if out.shape != base2.shape or not np.all(np.isfinite(out)):
        raise ValueError(
            f"{type(residual_map).__name__} returned {out.shape} actions with NaN/inf or of the wrong shape "
            f"(expected {base2.shape}, finite)"
        )
    return np.clip(out, low, high).astype(np.float32).reshape(np.shape(base_action))


def resolve_residual_map(residual_map: ResidualMapLike | None) -> ResidualMap | None:
    """Accept a :class:`ResidualMap`, a ``package.module:Name`` string (YAML) naming a class or an instance, or
    ``{"package.module:Name": {kwarg: value}}`` naming a class and its arguments (rl-zoo's ``env_wrapper`` form).

    Example::

        >>> m = resolve_residual_map({"sb3_vla.envs.garment_fold:PinchResidualMap": {"iters": 3}})
        >>> type(m).__name__, m.iters
        ('PinchResidualMap', 3)
    """
    if residual_map is None or isinstance(residual_map, ResidualMap):
        return residual_map
    kwargs: Mapping[str, Any] = {}
    if isinstance(residual_map, Mapping) and len(residual_map) == 1:
        residual_map, kwargs = next(iter(residual_map.items()))
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"residual_map {{name: kwargs}}: the kwargs must be a mapping, got {kwargs!r}")
    if isinstance(residual_map, str):
        obj = import_object(residual_map, "residual_map")
        if isinstance(obj, type):
            obj = obj(**kwargs)
        elif kwargs:
            raise TypeError(f"residual_map {residual_map!r} names an instance; kwargs {dict(kwargs)} need a class")
        if isinstance(obj, ResidualMap):
            return obj
    raise TypeError(
        "residual_map must be a ResidualMap, a 'package.module:Name' string naming one or {name: kwargs}, "
        f"got {residual_map!r}"
    )
