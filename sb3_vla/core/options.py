"""The one option grammar: ``key=value`` pairs after ``?`` in a spec, ``key:value`` items after ``-params``.

Values are read by :func:`parse_value` in both places: YAML (``0.1``, ``true``, ``[1, 2]``, ``{a: 1}``), and where
YAML gives a string, a Python literal (``None``, ``True``, ``(1, 2)``, ``1e-4``, ``{'a': 1}``); otherwise the
string itself.

>>> parse_query("hf:/models/openvla?unnorm_key=bridge_orig&max_batch=32")
('hf:/models/openvla', {'unnorm_key': 'bridge_orig', 'max_batch': 32})
>>> parse_key_values(["learning_rate:1e-4", "policy_kwargs:{net_arch: [64, 64]}"])
{'learning_rate': 0.0001, 'policy_kwargs': {'net_arch': [64, 64]}}
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Any

import yaml

__all__ = ["parse_key_values", "parse_query", "parse_value"]


def parse_value(text: str) -> Any:
    """Read one option value: YAML first, then a Python literal, else the string unchanged."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        try:
            return ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
    return value


def parse_query(arg: str) -> tuple[str, dict[str, Any]]:
    """Split ``"<argument>?key=value&key2=value2"`` into the argument and its typed options.

    :raises ValueError: for a pair without ``=`` or without a key, naming the pair and the form.
    """
    main, sep, query = arg.partition("?")
    opts: dict[str, Any] = {}
    if not sep:
        return main, opts
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"bad option {part!r} in {arg!r}; the form is ?key=value&key2=value2")
        opts[key] = parse_value(value)
    return main, opts


def parse_key_values(items: Iterable[str] | None, example: str = "-params learning_rate:0.001") -> dict[str, Any]:
    """Parse ``key:value`` items (the CLI's ``-params``/``--env-kwargs``); values as in :func:`parse_value`.

    :raises ValueError: for an item without ``:`` or without a key, naming the item and an example.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ValueError(f"expected key:value, got {item!r} (e.g. {example})")
        out[key] = parse_value(value)
    return out
