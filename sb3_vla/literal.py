"""Config strings read as data: rl-zoo's ``policy_kwargs`` / ``normalize`` / ``env_kwargs`` strings
(``"dict(net_arch=[64, 64], activation_fn=nn.ReLU)"``) without ``eval``, so a YAML file or a run folder runs no
code. rl-zoo itself still ``eval``-s these strings when ``python -m rl_zoo3.train`` reads the same YAML.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

import numpy as np
import torch as th
from torch import nn

_CALLS = {"dict": dict, "list": list, "tuple": tuple, "set": set}
_BINOPS: dict[type, Any] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Pow: lambda a, b: a**b,
}


def _literal(node: ast.AST, scope: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        items = [_literal(e, scope) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("'**' unpacking is not supported")
        return {_literal(k, scope): _literal(v, scope) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand, scope)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError("unary minus / plus only applies to numbers")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _literal(node.left, scope), _literal(node.right, scope)
        if not all(isinstance(v, int | float | list | tuple) and not isinstance(v, bool) for v in (left, right)):
            raise ValueError("arithmetic applies to numbers (and list repetition) only")
        if (
            isinstance(node.op, ast.Pow)
            and abs(right) > 64
            or isinstance(node.op, ast.Mult)
            and (isinstance(left, list | tuple) and right > 4096 or isinstance(right, list | tuple) and left > 4096)
        ):
            raise ValueError(f"{ast.unparse(node)} is too large for a config value")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS:
        if any(k.arg is None for k in node.keywords):
            raise ValueError("'**' unpacking is not supported")
        args = [_literal(a, scope) for a in node.args]
        kwargs = {str(k.arg): _literal(k.value, scope) for k in node.keywords}
        return _CALLS[node.func.id](*args, **kwargs)
    if isinstance(node, ast.Name | ast.Attribute):
        value = _dotted(node, scope)
        if isinstance(value, type) or (isinstance(value, int | float) and not isinstance(value, bool)):
            return value
        raise ValueError(f"{ast.unparse(node)} is not a class or a number")
    raise ValueError(f"{ast.unparse(node)!r} is not a literal, a dict(...) call or a th/nn/np class")


def _dotted(node: ast.AST, scope: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        if node.id not in scope:
            raise ValueError(f"unknown name {node.id!r} (only {sorted(scope)} are in scope)")
        return scope[node.id]
    if isinstance(node, ast.Attribute) and not node.attr.startswith("_"):
        base = _dotted(node.value, scope)
        if not inspect.ismodule(base):
            raise ValueError(f"{ast.unparse(node)}: attributes are read from modules only")
        try:
            return getattr(base, node.attr)
        except AttributeError as e:
            raise ValueError(f"{ast.unparse(node)} does not exist") from e
    raise ValueError(f"{ast.unparse(node)!r} is not a dotted name")


def parse_config_string(value: Any, key: str) -> Any:
    """Read an rl-zoo config string as data, never running it: Python literals, ``dict(...)`` / ``list(...)`` /
    ``tuple(...)`` calls, arithmetic on numbers, and classes or numbers named under ``th``, ``nn`` and ``np``
    (rl-zoo's ``eval`` scope for these strings). Non-strings are returned unchanged.

    rl-zoo itself still ``eval``-s the same strings when it reads the YAML (``python -m rl_zoo3.train``).

    >>> parse_config_string("dict(net_arch=[64] * 2, activation_fn=nn.ReLU)", "policy_kwargs")
    {'net_arch': [64, 64], 'activation_fn': <class 'torch.nn.modules.activation.ReLU'>}
    """
    if not isinstance(value, str):
        return value
    try:
        tree = ast.parse(value.strip(), mode="eval")
        return _literal(tree.body, {"th": th, "nn": nn, "np": np})
    except (SyntaxError, ValueError, TypeError) as e:
        reason = f"{type(e).__name__}: {e}" if isinstance(e, SyntaxError) else str(e)
        raise ValueError(
            f"{key}: cannot read {value!r} ({reason}). Config strings are read as data, not run: write a YAML "
            "mapping or a literal such as dict(net_arch=[64, 64], activation_fn=nn.ReLU)"
        ) from e
