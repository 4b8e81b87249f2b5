"""The one importer of objects named in specs, YAML and CLI options: ``package.module:Name``.

``Name`` may be an attribute path (``package.module:Outer.inner``). The older dotted form ``package.module.Name``
is accepted too, so names written by earlier releases keep loading.

>>> import_object("collections:OrderedDict")
<class 'collections.OrderedDict'>
>>> import_object("os.path:join").__name__
'join'
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_object", "split_import_path"]

FORM_HINT = "'package.module:Name', e.g. 'sb3_vla.envs.garment_fold:PinchResidualMap'"


def split_import_path(path: str) -> tuple[str, str]:
    """Split ``package.module:Name`` (or the dotted ``package.module.Name``) into module and attribute path.

    :raises ValueError: naming the expected form when ``path`` has neither form.
    """
    if ":" in path:
        module, _, name = path.partition(":")
    else:
        module, _, name = path.rpartition(".")
    if not module or not name or not all(p.isidentifier() for p in (*module.split("."), *name.split("."))):
        raise ValueError(f"{path!r} is not an import path; the form is {FORM_HINT}")
    return module, name


def import_object(path: str, what: str = "object") -> Any:
    """Import the object named by ``package.module:Name``.

    :param path: the import path.
    :param what: what the object is for, used in error messages (``"residual_map"``, ``"base factory"`` ...).
    :return: the object.
    :raises ValueError: the path is malformed, the module does not import, or it lacks the name; the message
        names the path, the cause and the expected form.
    """
    module_name, name = split_import_path(path)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{what} {path!r}: cannot import module {module_name!r} ({e}); the form is {FORM_HINT}") from e
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no attribute {name!r}")
        obj = getattr(obj, part)
    return obj
