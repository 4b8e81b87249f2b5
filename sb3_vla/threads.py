"""One torch CPU thread per process under rl-zoo, unless the user chose a thread count.

``python -m rl_zoo3.train --gym-packages sb3_vla`` imports ``sb3_vla`` before it builds anything; rl-zoo itself
leaves torch at one thread per core unless given ``--num-threads``. Small RL networks gain nothing from more threads,
and OpenMP spin-waits made 2000 Pendulum steps several times slower when other processes share the cores (see the
README). So on import, when the importing program is rl-zoo's CLI (``rl_zoo3.train`` / ``enjoy`` /
``record_video`` imported, or ``__main__`` is an ``rl_zoo3`` module), no CUDA device is present and
``OMP_NUM_THREADS`` is unset, :func:`apply_zoo_thread_default` sets ``torch.set_num_threads(1)`` and
``OMP_NUM_THREADS=1`` for the processes it starts (``--vec-env subproc`` workers).

The user's choice wins: ``OMP_NUM_THREADS=N`` in the environment turns this off, and rl-zoo's ``--num-threads N``
is applied after the import. ``sb3_vla.train`` has its own ``--num-threads``.
"""

from __future__ import annotations

import os
import sys

ZOO_MODULES = ("rl_zoo3.train", "rl_zoo3.enjoy", "rl_zoo3.record_video")


def running_under_rl_zoo() -> bool:
    """Whether the program importing us is one of rl-zoo's command-line scripts.

    Example::

        >>> running_under_rl_zoo()  # a plain interpreter, doctest or pytest
        False
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if str(getattr(spec, "name", "") or "").startswith("rl_zoo3"):
        return True
    return any(name in sys.modules for name in ZOO_MODULES)


def apply_zoo_thread_default() -> bool:
    """Set one torch thread (and ``OMP_NUM_THREADS=1`` for child processes) under rl-zoo's CLI on a CPU-only
    machine when ``OMP_NUM_THREADS`` is unset; return whether it did."""
    if "OMP_NUM_THREADS" in os.environ or not running_under_rl_zoo():
        return False
    import torch as th

    if th.cuda.is_available():
        return False
    th.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    print(
        "sb3_vla: torch uses 1 CPU thread under rl_zoo3 (small RL nets are faster so); "
        "pass --num-threads N or set OMP_NUM_THREADS to choose",
        file=sys.stderr,
    )
    return True
