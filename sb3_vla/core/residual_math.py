"""The residual composition rule, shared by the single-env and vectorised residual wrappers and by bases that
replay a trained residual policy (``sb3:`` specs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["compose_action"]


def compose_action(
    base_action: np.ndarray,
    residual: np.ndarray,
    residual_scale: float | np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    absolute_dims: Sequence[int] | np.ndarray = (),
) -> np.ndarray:
    """Return ``clip(base + residual_scale * residual, low, high)`` with absolute dims taken from the policy.

    :param base_action: base actions in env units, ``(A,)`` or ``(B, A)``.
    :param residual: policy outputs in ``[-1, 1]``, same shape as ``base_action``.
    :param residual_scale: scalar or per-dimension ``(A,)`` scale, in env units per unit of residual.
    :param low: lower bounds of the env's action space, ``(A,)``.
    :param high: upper bounds of the env's action space, ``(A,)``.
    :param absolute_dims: dimensions the policy sets directly (not added to the base): the residual's
        ``[-1, 1]`` is mapped affinely onto ``[low, high]`` there (e.g. a stage-advance signal).
    :return: the executed action, float32, same shape as ``base_action``.

    Example::

        >>> compose_action(np.array([0.5]), np.array([1.0]), 0.2, np.array([-1.0]), np.array([1.0]))
        array([0.7], dtype=float32)
    """
    base = np.asarray(base_action, dtype=np.float64)
    res = np.clip(np.asarray(residual, dtype=np.float64), -1.0, 1.0)
    out = base + np.asarray(residual_scale, dtype=np.float64) * res
    if len(absolute_dims):
        idx = np.asarray(absolute_dims, dtype=np.int64)
        lo, hi = np.asarray(low, dtype=np.float64)[idx], np.asarray(high, dtype=np.float64)[idx]
        out[..., idx] = lo + (res[..., idx] + 1.0) * 0.5 * (hi - lo)
    return np.clip(out, low, high).astype(np.float32)
