"""Known controllers for Gymnasium's classic-control envs, used as frozen bases in examples, tests and benchmarks."""

from __future__ import annotations

import numpy as np


def pendulum_swing_up(obs: np.ndarray, bias: float = 0.0) -> np.ndarray:
    """Energy-shaping swing-up and PD balance for Pendulum-v1 (return about -130 unbiased), plus a torque bias.

    :param obs: one Pendulum-v1 observation ``(cos theta, sin theta, theta_dot)``.
    :param bias: a constant torque added to the action (a deliberately imperfect base).
    :return: the clipped torque, shape ``(1,)``.

    Example::

        >>> pendulum_swing_up(np.array([1.0, 0.0, 0.0]), bias=0.5)
        array([0.5], dtype=float32)
    """
    c, s, w = (float(x) for x in obs)
    angle = np.arctan2(s, c)
    if c > 0.85:
        u = -(10.0 * angle + 2.0 * w)
    else:  # dE/dt = 3 u w: pump energy towards the upright energy 15
        energy = 0.5 * w * w + 15.0 * c
        u = float(np.clip(0.5 * (15.0 - energy), -2, 2)) * (np.sign(w) if abs(w) > 1e-3 else 1.0)
    return np.clip(np.array([u + bias], dtype=np.float32), -2.0, 2.0)
