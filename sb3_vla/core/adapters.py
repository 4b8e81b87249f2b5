"""Explicit maps from a base model's action space into an env's action space.

A 7-D end-effector VLA does not drive a 61-D joint env by itself: the mapping must be stated. An adapter is any
callable ``(N, A_base) -> (N, A_env)``; the classes here cover the common cases and declare their shapes so the
wrappers can check them when they are built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import numpy as np

from sb3_vla.core.imports import import_object

__all__ = ["ActionAdapter", "ActionAdapterLike", "IndexActionAdapter", "LinearActionAdapter", "resolve_adapter"]

ActionAdapterLike = Union["ActionAdapter", Callable[[np.ndarray], np.ndarray]]


class ActionAdapter:
    """Base class of action adapters: ``__call__((N, A_base)) -> (N, A_env)``."""

    def __call__(self, action: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class IndexActionAdapter(ActionAdapter):
    """Place the base's action dims into chosen env dims; the other env dims get a constant.

    :param env_dim: size of the env's action.
    :param env_indices: for each base dim, the env dim it drives (``len == A_base``).
    :param fill: value of env dims no base dim drives (a float or an ``(env_dim,)`` array).
    :param scale: optional per-base-dim scale applied first.

    Example: a 2-D base driving dims 0 and 2 of a 4-D env, dim 3 held at 1

    >>> adapter = IndexActionAdapter(4, env_indices=[0, 2], fill=[0.0, 0.0, 0.0, 1.0])
    >>> adapter(np.array([[0.5, -0.5]], dtype=np.float32))
    array([[ 0.5,  0. , -0.5,  1. ]], dtype=float32)
    """

    def __init__(
        self,
        env_dim: int,
        env_indices: Sequence[int],
        fill: float | np.ndarray = 0.0,
        scale: float | Sequence[float] = 1.0,
    ) -> None:
        self.env_dim = int(env_dim)
        self.env_indices = np.asarray(list(env_indices), dtype=np.int64)
        if self.env_indices.size and (self.env_indices.min() < 0 or self.env_indices.max() >= self.env_dim):
            raise ValueError(f"env_indices must lie in [0, {self.env_dim}), got {self.env_indices.tolist()}")
        self.fill = np.broadcast_to(np.asarray(fill, dtype=np.float32), (self.env_dim,)).copy()
        self.scale = np.asarray(scale, dtype=np.float32)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        action = np.asarray(action, dtype=np.float32)
        if action.shape[-1] != len(self.env_indices):
            raise ValueError(
                f"IndexActionAdapter expects base actions of size {len(self.env_indices)}, got shape {action.shape}"
            )
        out = np.tile(self.fill, (*action.shape[:-1], 1))
        out[..., self.env_indices] = action * self.scale
        return out


class LinearActionAdapter(ActionAdapter):
    """``env_action = base_action @ matrix.T + bias``.

    :param matrix: ``(A_env, A_base)``.
    :param bias: ``(A_env,)`` or None.

    Example: a 2-D base whose two dims are averaged into one env dim

    >>> adapter = LinearActionAdapter(np.array([[0.5, 0.5]]))
    >>> adapter(np.array([[1.0, 0.0]], dtype=np.float32))
    array([[0.5]], dtype=float32)
    """

    def __init__(self, matrix: np.ndarray, bias: np.ndarray | None = None) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float32)
        if self.matrix.ndim != 2:
            raise ValueError(f"matrix must be (A_env, A_base), got shape {self.matrix.shape}")
        self.bias = np.zeros(self.matrix.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        return np.asarray(action, dtype=np.float32) @ self.matrix.T + self.bias


def resolve_adapter(adapter: ActionAdapterLike | str | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """Accept an adapter object, a callable, or a dotted ``package.module:name`` string (for YAML; a class is
    instantiated).

    >>> type(resolve_adapter("sb3_vla.core.adapters:ActionAdapter")).__name__
    'ActionAdapter'
    """
    if adapter is None or callable(adapter):
        return adapter
    if isinstance(adapter, str):
        obj = import_object(adapter, "action_adapter")
        return obj() if isinstance(obj, type) else obj
    raise TypeError(f"action_adapter must be callable or a 'package.module:name' string, got {type(adapter).__name__}")
