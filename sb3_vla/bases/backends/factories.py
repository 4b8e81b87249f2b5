"""Spec-string factories of the backends: ``hf:``, ``clip:``, ``module:`` (``sb3:`` lives in :mod:`.sb3_policy`).

Each turns the argument after the prefix (and its ``?key=value`` options, overridden by ``base_kwargs``) into the
backend's constructor call, and imports the backend (and its heavy libraries) only then. The registry names them
as entry points (:data:`sb3_vla.bases.registry.ENTRY_POINTS`).
"""

from __future__ import annotations

from typing import Any

from sb3_vla.bases.backends._common import call_with_options
from sb3_vla.bases.base import BaseModel
from sb3_vla.core.options import parse_query as parse_options

__all__ = ["make_clip_base", "make_hf_base", "make_module_base"]


def _merge(inline: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Inline ``?key=value`` options, overridden by ``base_kwargs``."""
    return {**inline, **kwargs}


def make_hf_base(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
    model, opts = parse_options(arg)
    if not model:
        raise ValueError("base spec 'hf:' needs a model directory or hub id: hf:/path/to/model or hf:org/name")
    from sb3_vla.bases.backends.hf import HFVLABase

    return call_with_options(HFVLABase, f"hf:{model}", model, **_merge(opts, kwargs))


def make_clip_base(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
    main, opts = parse_options(arg)
    model, at, pretrained = main.partition("@")
    if not model or not at or not pretrained:
        raise ValueError(
            f"base spec 'clip:{arg}' must be clip:<model>@<pretrained>, e.g. clip:ViT-B-32@/path/to/weights.pt "
            "(a checkpoint file, a directory, a cached tag, or 'random' for random init)"
        )
    from sb3_vla.bases.backends.clip import ClipBase

    return call_with_options(
        ClipBase,
        f"clip:{main}",
        model,
        None if pretrained == "random" else pretrained,
        **_merge(opts, kwargs),
    )


def make_module_base(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
    main, opts = parse_options(arg)
    cls_path, at, checkpoint = main.partition("@")
    if not cls_path or "." not in cls_path:
        raise ValueError(
            f"base spec 'module:{arg}' must be module:<package.module.Class>[@<checkpoint>], "
            "e.g. module:my_pkg.nets.TinyVLA@/ckpt/tiny.pt"
        )
    options = _merge(opts, kwargs)
    if at:
        options.setdefault("checkpoint", checkpoint)
    options.setdefault("observation_space", observation_space)
    options.setdefault("fallback_action_space", action_space)
    from sb3_vla.bases.backends.module import ModuleBase

    return call_with_options(ModuleBase, f"module:{cls_path}", cls_path, **options)
