"""Build base models from spec strings (``--base SPEC`` on the CLI, ``base: SPEC`` in YAML).

Spec forms:

- ``zero``: :class:`~sb3_vla.bases.builtin.ZeroBase` in the env's action space.
- ``scripted`` or ``scripted:<method>``: the env's own controller, ``env.unwrapped.<method>()``
  (default ``scripted_action``).
- ``<action spec>+<embedding spec>``: an action base combined with embedding-only bases (``scripted+clip:...``).
- ``<prefix>:<argument>``: a backend, found in :data:`ENTRY_POINTS` (``hf:``, ``clip:``, ``module:``, ``sb3:``,
  ``ray:``, ``compose:``, ``small-vla:``), registered with :func:`register_base`, or published by an installed
  package under the ``sb3_vla.bases`` entry-point group.
- ``<package.module>:<callable>``: any importable factory returning a :class:`BaseModel`; it is called with
  the keyword arguments ``observation_space``, ``action_space`` and the extra ``base_kwargs``. The module path must
  contain a dot (``my_pkg.bases:make_my_base``), which tells it from a backend prefix.


Like Gymnasium's ``EnvSpec.entry_point``, a prefix maps to a ``package.module:function`` string that is imported
only when a base of that kind is built, so the registry imports no backend (and no torch-heavy library) itself.
A package adds its own prefix without sb3_vla importing it, in its packaging metadata::

    [options.entry_points]
    sb3_vla.bases =
        mybase = my_pkg.bases:make_my_base

>>> from gymnasium import spaces
>>> "hf" in registered_bases() and "small-vla" in registered_bases()
True
>>> make_base("zero", action_space=spaces.Box(-1, 1, (2,))).action_space.shape
(2,)
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any, Protocol

from gymnasium import spaces

from sb3_vla.bases.base import BaseModel
from sb3_vla.bases.builtin import EnvScriptedBase, ZeroBase
from sb3_vla.bases.spec import is_composition, is_factory_path, split_spec
from sb3_vla.core.imports import import_object

__all__ = ["ENTRY_POINTS", "BaseFactory", "make_base", "register_base", "registered_bases"]

#: entry-point group under which installed packages publish base factories
ENTRY_POINT_GROUP = "sb3_vla.bases"


class BaseFactory(Protocol):
    def __call__(
        self,
        arg: str,
        *,
        observation_space: spaces.Space | None,
        action_space: spaces.Box | None,
        **kwargs: Any,
    ) -> BaseModel: ...


def _zero(arg: str, *, observation_space: Any, action_space: spaces.Box | None, **kwargs: Any) -> BaseModel:
    if action_space is None:
        raise ValueError("base spec 'zero' needs the env's action space to build zeros in")
    return ZeroBase(action_space, embedding_dim=int(kwargs.get("embedding_dim", 0)))


def _scripted(arg: str, *, observation_space: Any, action_space: spaces.Box | None, **kwargs: Any) -> BaseModel:
    if action_space is None:
        raise ValueError("base spec 'scripted' needs the env's action space")
    return EnvScriptedBase(action_space, method=arg or "scripted_action")


#: the built-in prefixes: a factory, or the ``package.module:function`` entry point imported on first use
ENTRY_POINTS: dict[str, BaseFactory | str] = {
    "zero": _zero,
    "scripted": _scripted,
    "hf": "sb3_vla.bases.backends.factories:make_hf_base",
    "clip": "sb3_vla.bases.backends.factories:make_clip_base",
    "module": "sb3_vla.bases.backends.factories:make_module_base",
    "sb3": "sb3_vla.bases.backends.sb3_policy:make_sb3_base",
    "compose": "sb3_vla.bases.composed:compose_factory",
    "ray": "sb3_vla.ray.base_server:ray_base_factory",
    "small-vla": "sb3_vla.models:small_vla_factory",
}

_REGISTRY: dict[str, BaseFactory | str] = dict(ENTRY_POINTS)
_PLUGINS_LOADED = False


def register_base(prefix: str, factory: BaseFactory | str) -> None:
    """Register a factory for specs ``<prefix>`` or ``<prefix>:<argument>``.

    :param prefix: the spec prefix, e.g. ``"const"``.
    :param factory: called as ``factory(argument, observation_space=..., action_space=..., **base_kwargs)``, or
        its ``package.module:function`` entry point, imported when the first such base is built.

    >>> from sb3_vla.bases import ZeroBase
    >>> register_base("const", lambda arg, *, observation_space, action_space, **kw: ZeroBase(action_space))
    >>> make_base("const:0", action_space=spaces.Box(-1, 1, (1,))).predict  # doctest: +ELLIPSIS
    <bound method ZeroBase.predict of ...>
    """
    _REGISTRY[prefix] = factory


def _load_plugins() -> None:
    """Add the prefixes installed packages publish under :data:`ENTRY_POINT_GROUP` (ours win on a clash)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        _REGISTRY.setdefault(ep.name, ep.value)


def registered_bases() -> list[str]:
    """The known spec prefixes (nothing is imported to list them)."""
    _load_plugins()
    return sorted(_REGISTRY)


def _factory(prefix: str) -> BaseFactory | None:
    _load_plugins()
    factory = _REGISTRY.get(prefix)
    if isinstance(factory, str):
        factory = import_object(factory, f"base factory for {prefix!r}")
        _REGISTRY[prefix] = factory
    return factory


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

    >>> make_base("zero", action_space=spaces.Box(-1, 1, (3,))).action_space.shape
    (3,)
    """
    if isinstance(spec, BaseModel):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"base must be a spec string or a sb3_vla.bases.BaseModel, got {type(spec).__name__}; "
            "wrap a plain function with sb3_vla.bases.CallableBase(fn, action_space)"
        )
    if is_composition(spec):  # 'scripted+clip:...' = 'compose:scripted+clip:...'
        prefix, arg = "compose", spec
    else:
        prefix, arg = split_spec(spec)
    factory = _factory(prefix)
    if factory is not None:
        return factory(arg, observation_space=observation_space, action_space=action_space, **base_kwargs)
    if arg and "." in prefix:
        user_factory = import_object(f"{prefix}:{arg}", f"base spec {spec!r}")
        base = user_factory(observation_space=observation_space, action_space=action_space, **base_kwargs)
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
    if is_factory_path(dotted):
        mod_name, _, name = dotted.rpartition(".")
        raise ValueError(
            f"unknown base spec {spec!r}; a factory spec separates the module from the name with ':', "
            f"'package.module:Name', e.g. {f'{mod_name}:{name}'!r}; known prefixes: {known}"
        )
    raise ValueError(f"unknown base spec {spec!r}; known prefixes: {known}, or a factory 'package.module:Name'")
