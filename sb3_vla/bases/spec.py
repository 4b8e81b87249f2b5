"""The base spec grammar: ``<prefix>[:<argument>][?key=value&...]``, compositions ``a+b``, factories ``pkg.mod:Name``.

Parsing only: no base is built and nothing is imported here (see :mod:`sb3_vla.bases.registry`).

>>> split_spec("hf:/models/openvla?unnorm_key=bridge_orig")
('hf', '/models/openvla?unnorm_key=bridge_orig')
>>> is_composition("scripted+clip:ViT-B-32@random"), is_composition("ray:scripted+clip:x")
(True, False)
>>> split_composition("scripted+clip:ViT-B-32@random?include_text=False")
['scripted', 'clip:ViT-B-32@random?include_text=False']
"""

from __future__ import annotations

from sb3_vla.bases.base import batch_size
from sb3_vla.core.options import parse_query

__all__ = ["batch_size", "is_composition", "is_factory_path", "parse_query", "split_composition", "split_spec"]

#: prefixes whose argument is itself a spec, so a ``+`` inside it belongs to the inner spec
WRAPPING_PREFIXES = ("compose", "ray")


def split_spec(spec: str) -> tuple[str, str]:
    """``"<prefix>:<argument>"`` -> ``(prefix, argument)``; a bare prefix gives an empty argument."""
    prefix, _, arg = spec.partition(":")
    return prefix, arg


def is_composition(spec: str) -> bool:
    """Whether ``spec`` is a bare composition ``a+b[+...]`` (a ``+`` before any ``?``, outside compose:/ray:)."""
    return "+" in spec.partition("?")[0] and split_spec(spec)[0] not in WRAPPING_PREFIXES


def split_composition(spec: str) -> list[str]:
    """Split ``a+b:x+c:y?opts`` on ``+`` before the first ``?`` (so nested specs in options stay whole)."""
    head, q, tail = spec.partition("?")
    parts = head.split("+")
    if q:
        parts[-1] = f"{parts[-1]}?{tail}"
    return parts


def is_factory_path(prefix: str) -> bool:
    """Whether a spec's prefix is a module path (``pkg.mod`` in ``pkg.mod:make_base``), not a backend prefix."""
    return "." in prefix and all(part.isidentifier() for part in prefix.split("."))
