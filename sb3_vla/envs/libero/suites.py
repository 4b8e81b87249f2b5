"""The LIBERO suites and our env ids ``LIBERO-<Suite>-<task>-v0``, without importing LIBERO (fast to register)."""

from __future__ import annotations

import re
from dataclasses import dataclass

ENV_ID_PREFIX = "LIBERO"


@dataclass(frozen=True)
class LiberoSuite:
    """One LIBERO benchmark suite.

    :param name: LIBERO's name (``libero_spatial``), the key of ``benchmark.get_benchmark_dict()``.
    :param short: the part of our env id (``Spatial`` in ``LIBERO-Spatial-0-v0``).
    :param n_tasks: number of tasks (task ids ``0 .. n_tasks - 1``, LIBERO's default task order).
    :param max_episode_steps: episode length in control steps (20 Hz) after the settle steps; the values OpenVLA's
        LIBERO evaluation uses (about 1.5x the longest demonstration of the suite).
    """

    name: str
    short: str
    n_tasks: int
    max_episode_steps: int

    def env_id(self, task_id: int) -> str:
        return f"{ENV_ID_PREFIX}-{self.short}-{int(task_id)}-v0"


SUITES: dict[str, LiberoSuite] = {
    s.name: s
    for s in (
        LiberoSuite("libero_spatial", "Spatial", 10, 220),
        LiberoSuite("libero_object", "Object", 10, 280),
        LiberoSuite("libero_goal", "Goal", 10, 300),
        LiberoSuite("libero_10", "10", 10, 520),
        LiberoSuite("libero_90", "90", 90, 400),
    )
}

_ID_RE = re.compile(rf"^{ENV_ID_PREFIX}-(?P<short>[A-Za-z0-9]+)-(?P<task>\d+)-v0$")


def get_suite(suite: str) -> LiberoSuite:
    """The suite named ``suite``: LIBERO's name (``libero_spatial``) or our short name (``Spatial``), any case."""
    key = suite.lower()
    for s in SUITES.values():
        if key in (s.name, s.short.lower(), f"libero_{s.short.lower()}"):
            return s
    raise ValueError(f"unknown LIBERO suite {suite!r}; expected one of {sorted(SUITES)}")


def check_task_id(suite: LiberoSuite, task_id: int) -> int:
    if not 0 <= int(task_id) < suite.n_tasks:
        raise ValueError(f"task_id must be in [0, {suite.n_tasks}) for {suite.name}, got {task_id}")
    return int(task_id)


def parse_env_id(env_id: str) -> tuple[LiberoSuite, int]:
    """``"LIBERO-Goal-3-v0"`` -> (the libero_goal suite, 3)."""
    m = _ID_RE.match(env_id)
    if m is None:
        raise ValueError(f"not a LIBERO env id: {env_id!r}; expected e.g. 'LIBERO-Spatial-0-v0'")
    suite = get_suite(m["short"])
    return suite, check_task_id(suite, int(m["task"]))


def all_env_ids() -> list[tuple[str, str, int, int]]:
    """``(env_id, suite name, task id, max_episode_steps)`` for every task of every suite."""
    return [(s.env_id(i), s.name, i, s.max_episode_steps) for s in SUITES.values() for i in range(s.n_tasks)]
