"""Build base models from spec strings (``--base SPEC`` on the CLI, ``base: SPEC`` in YAML).

Spec forms:

- ``zero``: :class:`~sb3_vla.bases.builtin.ZeroBase` in the env's action space.
- ``scripted`` or ``scripted:<method>``: the env's own controller, ``env.unwrapped.<method>()``
  (default ``scripted_action``).
- ``<action spec>+<embedding spec>``: an action base combined with embedding-only bases (``scripted+clip:...``).
- ``<prefix>:<argument>``: a backend registered with :func:`register_base` (``hf:``, ``clip:``, ``module:``,
  ``sb3:`` ...).
- ``<package.module>:<callable>``: any importable factory returning a :class:`BaseModel`; it is called with
  the keyword arguments ``observation_space``, ``action_space`` and the extra ``base_kwargs``. The module path must
  contain a dot (``my_pkg.bases:make_my_base``), which tells it from a backend prefix.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from gymnasium import spaces

from sb3_vla.bases.base import BaseModel
from sb3_vla.bases.builtin import EnvScriptedBase, ZeroBase


class BaseFactory(Protocol):
    def __call__(
        self,
        arg: str,
        *,
        observation_space: spaces.Space | None,
        action_space: spaces.Box | None,
        **kwargs: Any,
    ) -> BaseModel: ...


_REGISTRY: dict[str, BaseFactory] = {}


def register_base(prefix: str, factory: BaseFactory) -> None:
    """Register a factory for specs ``<prefix>`` or ``<prefix>:<argument>``.

    :param prefix: the spec prefix, e.g. ``"hf"``.
    :param factory: called as ``factory(argument, observation_space=..., action_space=..., **base_kwargs)``.

    Example::

        register_base("const", lambda arg, *, observation_space, action_space, **kw: ConstantBase(float(arg)))
        base = make_base("const:0.5", action_space=env.action_space)
    """
    _REGISTRY[prefix] = factory


def registered_bases() -> list[str]:
    """The registered spec prefixes."""
    _load_optional_backends()
    return sorted(_REGISTRY)


def _zero(arg: str, *, observation_space: Any, action_space: spaces.Box | None, **kwargs: Any) -> BaseModel:
    if action_space is None:
        raise ValueError("base spec 'zero' needs the env's action space to build zeros in")
    return ZeroBase(action_space, embedding_dim=int(kwargs.get("embedding_dim", 0)))


def _scripted(arg: str, *, observation_space: Any, action_space: spaces.Box | None, **kwargs: Any) -> BaseModel:
    if action_space is None:
        raise ValueError("base spec 'scripted' needs the env's action space")
    return EnvScriptedBase(action_space, method=arg or "scripted_action")


register_base("zero", _zero)
register_base("scripted", _scripted)

_OPTIONAL_LOADED = False


def _load_optional_backends() -> None:
    """Import the backend modules that register more prefixes (they import heavy libraries lazily)."""
    global _OPTIONAL_LOADED
    if _OPTIONAL_LOADED:
        return
    _OPTIONAL_LOADED = True
    for mod in ("sb3_vla.bases.backends",):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def make_base(
    spec: str | BaseModel | Callable[..., Any],
    observation_space: spaces.Space | None = None,
    action_space: spaces.Box | None = None,
    **base_kwargs: Any,
) -> BaseModel:
    """Build a :class:`BaseModel` from a spec string, or pass a ready one through.

    :param spec: a spec string (see the module docstring) or a :class:`BaseModel`.
    :param observation_space: the env's observation space (some backends check it).
    :param action_space: the env's action space (``zero`` and ``scripted`` produce actions in it).
    :param base_kwargs: extra keyword arguments for the backend factory (device, checkpoint, config ...).
    :return: the base model.

    Example::

        base = make_base("zero", action_space=env.action_space)
    """
    if isinstance(spec, BaseModel):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"base must be a spec string or a sb3_vla.bases.BaseModel, got {type(spec).__name__}; "
            "wrap a plain function with sb3_vla.bases.CallableBase(fn, action_space)"
        )
    _load_optional_backends()
    # 'scripted+clip:...' = 'compose:...'; 'ray:a+b' serves the composition
    if "+" in spec.partition("?")[0] and not spec.startswith(("compose:", "ray:")):
        from sb3_vla.bases.backends import make_composed_base

        return make_composed_base(spec, observation_space, action_space, **base_kwargs)
    prefix, _, arg = spec.partition(":")
    if prefix in _REGISTRY:
        return _REGISTRY[prefix](arg, observation_space=observation_space, action_space=action_space, **base_kwargs)
    if arg and "." in prefix:
        try:
            module = importlib.import_module(prefix)
        except ModuleNotFoundError as e:
            raise ValueError(f"base spec {spec!r}: cannot import module {prefix!r} ({e})") from e
        factory = getattr(module, arg, None)
        if factory is None:
            raise ValueError(f"base spec {spec!r}: module {prefix!r} has no attribute {arg!r}")
        base = factory(observation_space=observation_space, action_space=action_space, **base_kwargs)
        if not isinstance(base, BaseModel):
            raise TypeError(f"base factory {spec!r} returned {type(base).__name__}, expected a BaseModel")
        return base
    known = ", ".join(registered_bases())
    if arg:
        raise ValueError(
            f"unknown base spec {spec!r}: {prefix!r} is not a registered prefix (known: {known}); if it names a "
            f"factory, the module path before ':' needs a dot: the form is 'package.module:Name', e.g. "
            "'my_pkg.bases:make_my_base' for a function make_my_base in my_pkg/bases.py (called with "
            "observation_space=, action_space= and the base_kwargs, returning a BaseModel); a top-level module "
            f"{prefix!r} cannot be told from a backend prefix, so put the factory in a package module"
        )
    dotted = prefix.partition("?")[0]
    if "." in dotted and all(part.isidentifier() for part in dotted.split(".")):
        mod_name, _, name = dotted.rpartition(".")
        raise ValueError(
            f"unknown base spec {spec!r}; a factory spec separates the module from the name with ':', "
            f"'package.module:Name', e.g. {f'{mod_name}:{name}'!r}; known prefixes: {known}"
        )
    raise ValueError(f"unknown base spec {spec!r}; known prefixes: {known}, or a factory 'package.module:Name'")
