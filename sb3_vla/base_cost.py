"""The frozen base's cost during training: forward calls per env step, milliseconds per call, share of wall time.

Read from the counters of each :class:`~sb3_vla.wrappers.engine.BaseQueryEngine`
(:meth:`~sb3_vla.wrappers.engine.BaseQueryEngine.cost_stats`), found on the batched VecEnv wrappers
(``sb3_vla.train``) or on the per-env gym wrappers of a ``DummyVecEnv`` (rl-zoo). Per-env wrappers inside a
``SubprocVecEnv`` live in other processes and are not read (nothing is logged then).
"""

from __future__ import annotations

import time
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_vla.wrappers.engine import BaseQueryEngine

COST_KEYS = ("calls", "rows", "env_steps", "seconds")


def find_engines(venv: VecEnv | None) -> list[BaseQueryEngine]:
    """The base-query engines of ``venv``: its batched VLA wrapper's, else those of its per-env wrappers (in a
    ``DummyVecEnv`` only); empty when it has none."""
    if venv is None:
        return []
    engine = getattr(venv, "engine", None)  # VecEnvWrapper looks the attribute up along the wrapper chain
    if isinstance(engine, BaseQueryEngine):
        return [engine]
    if isinstance(venv.unwrapped, DummyVecEnv):
        try:
            found = venv.get_attr("engine")
        except AttributeError:
            return []
        return [e for e in found if isinstance(e, BaseQueryEngine)]
    return []


def total_cost(engines: list[BaseQueryEngine]) -> dict[str, float]:
    """The engines' :meth:`~sb3_vla.wrappers.engine.BaseQueryEngine.cost_stats` summed."""
    out = dict.fromkeys(COST_KEYS, 0.0)
    for engine in engines:
        for key, value in engine.cost_stats().items():
            out[key] += value
    return out


class BaseCostCallback(BaseCallback):
    """Log the base's cost to TensorBoard at every rollout end, cumulative since training start:

    - ``vla/base_calls_per_step``: batched forward calls per env transition of the training env (``1 / n_envs``
      with one call for all envs every step; less with ``query_interval`` or action chunks);
    - ``vla/base_rows_per_step``: observations sent to the base per env transition (1 = every env every step);
    - ``vla/base_ms_per_call``: wall milliseconds per forward call (training env);
    - ``vla/base_time_share``: the base's time (training and ``eval_env``) over the wall time since training start.

    :param eval_env: the eval env stack, whose base time counts in the time share too.

    Example::

        cost = BaseCostCallback(eval_env)
        model.learn(10_000, callback=cost)
        print(cost.describe())  # base: 0.50 calls per env step, 3.1 ms per call, 12% of wall time
    """

    def __init__(self, eval_env: VecEnv | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.eval_env = eval_env
        self.engines: list[BaseQueryEngine] = []
        self.eval_engines: list[BaseQueryEngine] = []
        self._start: dict[str, float] = {}
        self._eval_start: dict[str, float] = {}
        self._t0 = 0.0
        self.last: dict[str, float] = {}

    def _on_training_start(self) -> None:
        self.engines = find_engines(self.training_env)
        self.eval_engines = find_engines(self.eval_env)
        self._start = total_cost(self.engines)
        self._eval_start = total_cost(self.eval_engines)
        self._t0 = time.perf_counter()

    def _on_step(self) -> bool:
        return True

    def stats(self) -> dict[str, float]:
        """The cost since training start (empty when the env has no base): ``calls_per_step``, ``rows_per_step``,
        ``ms_per_call``, ``time_share``, and the raw ``calls``, ``env_steps``, ``seconds``, ``eval_seconds``,
        ``wall_seconds``."""
        if not self.engines:
            return {}
        now = total_cost(self.engines)
        ev = total_cost(self.eval_engines)
        d = {k: now[k] - self._start.get(k, 0.0) for k in COST_KEYS}
        eval_s = ev["seconds"] - self._eval_start.get("seconds", 0.0)
        wall = max(time.perf_counter() - self._t0, 1e-9)
        steps = max(d["env_steps"], 1.0)
        return {
            "calls_per_step": d["calls"] / steps,
            "rows_per_step": d["rows"] / steps,
            "ms_per_call": 1e3 * d["seconds"] / max(d["calls"], 1.0),
            "time_share": min(1.0, (d["seconds"] + eval_s) / wall),
            "calls": d["calls"],
            "env_steps": d["env_steps"],
            "seconds": d["seconds"],
            "eval_seconds": eval_s,
            "wall_seconds": wall,
        }

    def _record(self) -> None:
        self.last = self.stats()
        if not self.last:
            return
        for key in ("calls_per_step", "rows_per_step", "ms_per_call", "time_share"):
            self.logger.record(f"vla/base_{key}", self.last[key])

    def _on_rollout_end(self) -> None:
        self._record()

    def _on_training_end(self) -> None:
        self.last = self.stats() or self.last

    def describe(self) -> str:
        """One line for the end-of-run summary."""
        s: dict[str, Any] = self.last or self.stats()
        if not s:
            return "base: no VLA wrapper found, no cost measured"
        return (
            f"base: {s['calls_per_step']:.2f} forward calls per env step ({s['rows_per_step']:.2f} observations), "
            f"{s['ms_per_call']:.2f} ms per call, {100 * s['time_share']:.1f}% of wall time "
            f"({s['seconds'] + s['eval_seconds']:.1f} s of {s['wall_seconds']:.1f} s, evaluations included)"
        )
