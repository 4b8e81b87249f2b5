"""The residual-scale schedule: one definition for the training wrappers and for replaying a trained policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ResidualScaleSchedule"]

_FIELDS = ("start", "end", "steps")


class ResidualScaleSchedule:
    """Residual scale as a function of env steps: ``start -> end`` linearly over ``steps``, ``end`` after.

    Usable from YAML as ``residual_scale: {start: 0.05, end: 0.3, steps: 100000}``.

    :param start: scale at step 0 (scalar or per-dim).
    :param end: scale after ``steps`` env steps.
    :param steps: length of the ramp, in env steps.

    Example:

    >>> schedule = ResidualScaleSchedule(0.05, 0.3, 100_000)
    >>> float(schedule(50_000))
    0.175
    >>> float(ResidualScaleSchedule.from_mapping({"start": 0.1, "end": 0.2, "steps": 10})(99))
    0.2
    """

    def __init__(self, start: float | Sequence[float], end: float | Sequence[float], steps: int) -> None:
        self.start = np.asarray(start, dtype=np.float64)
        self.end = np.asarray(end, dtype=np.float64)
        self.steps = max(1, int(steps))

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> ResidualScaleSchedule:
        """A schedule from its YAML form ``{start, end, steps}``; other or missing keys raise a ``ValueError``."""
        keys = set(value)
        if keys != set(_FIELDS):
            raise ValueError(
                f"residual_scale schedule {dict(value)} must have exactly the keys start, end, steps (missing: "
                f"{sorted(set(_FIELDS) - keys)}, unknown: {sorted(keys - set(_FIELDS))}), e.g. "
                "{start: 0.05, end: 0.3, steps: 100000}"
            )
        return cls(value["start"], value["end"], value["steps"])

    def __call__(self, step: int) -> np.ndarray:
        frac = min(1.0, max(0.0, step / self.steps))
        return self.start + frac * (self.end - self.start)
