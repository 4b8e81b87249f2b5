"""Deprecated: GarmentFold's pretraining moved to :mod:`sb3_vla.envs.garment_fold.pretrain`.

``python -m sb3_vla.pretrain ...`` still runs it (same flags, same outputs) and ``from sb3_vla.pretrain import
main`` still works, each with a ``DeprecationWarning``; both are removed in the next release. Use::

    python -m sb3_vla.envs.garment_fold.pretrain --env GarmentFold-v0 --demos 200 --out DIR
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from sb3_vla.deprecation import warn_moved

NEW = "sb3_vla.envs.garment_fold.pretrain"
#: the old module-level names and the module of the new package that defines each
_MODULES = ("rollouts", "dataset", "training", "card", "cli")
_RENAMED = {"_run_jobs": "run_jobs"}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    new_name = _RENAMED.get(name, name)
    for sub in _MODULES:
        module = importlib.import_module(f"{NEW}.{sub}")
        if hasattr(module, new_name):
            where = NEW if hasattr(importlib.import_module(NEW), new_name) else f"{NEW}.{sub}"
            warn_moved(f"sb3_vla.pretrain.{name}", f"{where}.{new_name}")
            return getattr(module, new_name)
    raise AttributeError(f"module 'sb3_vla.pretrain' has no attribute {name!r} (it moved to {NEW})")


if __name__ == "__main__":
    warnings.warn(
        f"python -m sb3_vla.pretrain moved to python -m {NEW} (the old command is removed in the next release)",
        DeprecationWarning,
        stacklevel=1,
    )
    importlib.import_module(f"{NEW}.cli").main()
