"""Training callbacks: residual/base statistics for TensorBoard."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


class VLAStatsCallback(BaseCallback):
    """Log residual and base-model statistics from the wrappers' ``info`` entries.

    Logged every rollout end: ``vla/residual_abs_mean`` (mean |residual| in [-1, 1] units),
    ``vla/correction_abs_mean`` (mean |executed - base| in env units) and ``vla/nonfinite_events`` (env steps whose
    base output was non-finite and zeroed, cumulative).

    Example::

        model.learn(10_000, callback=VLAStatsCallback())
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self._res: list[float] = []
        self._corr: list[float] = []
        self.nonfinite_events = 0

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "residual" in info:
                self._res.append(float(np.abs(info["residual"]).mean()))
                self._corr.append(float(np.abs(info["executed_action"] - info["base_action"]).mean()))
            if info.get("vla_nonfinite"):
                self.nonfinite_events += 1
        return True

    def _on_rollout_end(self) -> None:
        if self._res:
            self.logger.record("vla/residual_abs_mean", float(np.mean(self._res)))
            self.logger.record("vla/correction_abs_mean", float(np.mean(self._corr)))
            self._res.clear()
            self._corr.clear()
        self.logger.record("vla/nonfinite_events", self.nonfinite_events)
