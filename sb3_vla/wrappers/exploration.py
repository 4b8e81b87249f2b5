"""Controlled exploration of a residual: which agent decisions carry their residual, and at what gain.

The residual wrappers pass every agent decision through a :class:`ResidualGate`. By default the gate is open
(probability 1, gain 1), so evaluation and deployment always apply the residual. A training callback
(:class:`~sb3_vla.callbacks.ProgressiveExplorationCallback`) narrows it on the training env only: progressive
exploration (Policy Decorator) applies the residual with a probability that ramps up over training, and a warm-up
gain damps the uniform random actions SB3 takes before ``learning_starts``. Masked decisions execute the pure base,
and the wrappers report the residual actually executed in ``info["residual"]``, so
:class:`~sb3_vla.buffers.ResidualReplayBuffer` stores what happened.
"""

from __future__ import annotations

import numpy as np

from sb3_vla.core.keys import APPLIED_INFO_KEY, RESIDUAL_INFO_KEY

__all__ = ["APPLIED_INFO_KEY", "RESIDUAL_INFO_KEY", "ResidualGate"]


class ResidualGate:
    """Apply an agent's residual with probability ``prob``, multiplied by ``gain``; masked rows become zero.

    :param prob: probability that a decision carries its residual, in ``[0, 1]``.
    :param gain: factor on the residual in ``(0, 1]``.
    :param seed: seed of the gate's own random generator (the env's seed when the wrapper is seeded).

    Example:

    >>> gate = ResidualGate(prob=0.0)
    >>> gated, applied = gate(np.ones((2, 3), dtype=np.float32))
    >>> gated.tolist(), applied.tolist()
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [False, False])
    """

    def __init__(self, prob: float = 1.0, gain: float = 1.0, seed: int | None = None) -> None:
        self.prob = 1.0
        self.gain = 1.0
        self.set(prob, gain)
        self.rng = np.random.default_rng(seed)

    def set(self, prob: float, gain: float = 1.0) -> None:
        """Change the probability and gain (called by the exploration callback on the training env)."""
        prob, gain = float(prob), float(gain)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"residual probability must be in [0, 1], got {prob}")
        if not 0.0 < gain <= 1.0:
            raise ValueError(f"residual gain must be in (0, 1], got {gain}")
        self.prob, self.gain = prob, gain

    def seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    @property
    def is_open(self) -> bool:
        """Whether every residual passes unchanged (no random draw is made then)."""
        return self.prob >= 1.0 and self.gain >= 1.0

    def __call__(self, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gate a batch of residuals ``(n, dim)``; return ``(executed residuals (n, dim) float32, applied (n,))``."""
        residual = np.asarray(residual, dtype=np.float32)
        n = residual.shape[0]
        if self.is_open:
            return residual, np.ones(n, dtype=bool)
        applied: np.ndarray = np.ones(n, dtype=bool) if self.prob >= 1.0 else np.asarray(self.rng.random(n) < self.prob)
        gated = residual * np.float32(self.gain) * applied[:, None].astype(np.float32)
        return gated.astype(np.float32), applied
