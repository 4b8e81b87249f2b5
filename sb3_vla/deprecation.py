"""Old import paths of moved modules keep working for one release, with a ``DeprecationWarning``.

:func:`alias_package` makes ``old.sub.module`` import as ``new.sub.module`` (the same module object, so
``isinstance`` checks and registries agree) and warns once per old name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["alias_package", "moved_attribute", "warn_moved"]


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` moved to ``new`` and will be removed in the next release."""
    warnings.warn(
        f"{old} moved to {new}; import it from {new} (the old path is removed in the next release)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed under its new name


class _AliasFinder(importlib.abc.MetaPathFinder):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.old + "."):
            return None
        new_name = self.new + fullname[len(self.old) :]
        warn_moved(fullname, new_name, stacklevel=4)
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new_name))


def alias_package(old: str, new: str) -> None:
    """Serve the submodules of package ``old`` from package ``new`` (call it from ``old/__init__.py``)."""
    if not any(isinstance(f, _AliasFinder) and f.old == old for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder(old, new))


def moved_attribute(module: str, moved: dict[str, str], name: str) -> Any:
    """A module ``__getattr__`` body: serve ``name`` from its new home ``moved[name]`` (``package.module.Name``)
    with a warning, or raise ``AttributeError`` as Python does.

    Use in the old module: ``def __getattr__(name): return moved_attribute(__name__, _MOVED, name)``.
    """
    if name not in moved:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = moved[name]
    warn_moved(f"{module}.{name}", new, stacklevel=4)
    new_module, _, attr = new.rpartition(".")
    return getattr(importlib.import_module(new_module), attr)
