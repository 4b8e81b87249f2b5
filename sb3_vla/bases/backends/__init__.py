"""Frozen base-model backends: Hugging Face VLAs, open_clip encoders, any ``nn.Module``, SB3 checkpoints.

Importing this module registers the spec prefixes below with :func:`sb3_vla.bases.register_base` (``make_base``
imports it on first use). torch/transformers/open_clip are imported only when a base is built; a missing one
raises an ``ImportError`` naming ``pip install -e ".[vla]"``.

Spec strings (``--base SPEC`` on the CLI, ``base: SPEC`` in YAML). Every backend also takes options, either as
``base_kwargs`` or inline after ``?`` as ``key=value`` pairs joined by ``&`` (values are Python literals when they
parse as one, else strings); ``base_kwargs`` win over inline options.

- ``hf:<local dir or hub id>``: :class:`HFVLABase`, a transformers VLA emitting OpenVLA-style action tokens.
  Options: ``unnorm_key``, ``norm_stats``, ``unnormalize``, ``action_dim``, ``chunk_size``, ``image_key``,
  ``instruction``, ``prompt``, ``embedding`` (``vision``/``llm``/``vision+llm``/``none``), ``llm_pool``,
  ``trust_remote_code``, ``dtype``, ``device``, ``quantization`` (``4bit``/``8bit``), ``max_batch_size`` ...
  e.g. ``hf:/models/openvla-7b?unnorm_key=bridge_orig&trust_remote_code=True&quantization=4bit``.
  A hub id must be in the Hugging Face cache when offline (``HF_HUB_OFFLINE=1`` or no network).
- ``clip:<model>@<pretrained>``: :class:`ClipBase`, open_clip image (+ instruction text) embeddings, **no action**.
  ``<pretrained>`` is a tag in the cache, a checkpoint file, a directory with ``open_clip_config.json``, or
  ``random`` (random init, for timing). Options: ``image_key``, ``include_text``, ``instruction``, ``normalize``,
  ``device``, ``precision``. e.g. ``clip:ViT-B-32@/weights/vit_b_32.safetensors?include_text=False``.
- ``module:<package.module.Class>[@<checkpoint>]``: :class:`ModuleBase`, any ``nn.Module`` with
  ``forward(obs) -> action`` (and optional ``embed(obs)``), built as ``Class(**model_config)``. Options:
  ``model_config`` (a dict), ``checkpoint``, ``obs_keys``, ``instruction_key``, ``state_dict_key``, ``strict``,
  ``chunk_size``, ``embedding_dim``, ``device``.
  e.g. ``module:my_pkg.nets.TinyVLA@/ckpt/tiny.pt?model_config={'hidden':64}``.
- ``sb3:<model.zip>``: :class:`SB3PolicyBase`, a trained SB3 policy. For a residual policy add ``inner_base`` (a
  spec) and ``residual_scale`` (+ ``absolute_dims``) as used in its training, e.g.
  ``sb3:logs/stage1.zip?inner_base=scripted&residual_scale=0.2``. Options: ``vec_normalize``, ``algo``,
  ``deterministic``, ``embedding``, ``device``, ``inner_base_kwargs``.
- ``ray:<inner spec>``: the inner base served to every env worker and wrapper by one Ray actor, on a GPU where the
  cluster has one, with dynamic batching (:mod:`sb3_vla.ray`; ``pip install -e ".[ray]"``). Options: ``max_batch``,
  ``max_wait_ms``, ``prefetch`` (request the next chunk that many steps early), ``name``, ``num_gpus``, ``num_cpus``,
  ``detached``, ``address``, ``timeout_s``; other options go to the inner spec.
  e.g. ``ray:hf:/models/openvla-7b?unnorm_key=bridge_orig&max_batch=32&max_wait_ms=5``.
- ``compose:<action spec>+<embedding spec>[+...]``: :class:`ComposedBase`, the action (and chunks, env query) of the
  first base with the embeddings of all bases concatenated, e.g. ``compose:scripted+clip:ViT-B-32@/w/clip.pt``.
  ``base_kwargs`` entries named after a part's prefix (``clip={...}``) go to that part only; the other entries go
  to every part. Inline ``?`` options belong to the last part; the ``+`` separators must come before any ``?``.

Example::

    from sb3_vla.bases import make_base
    from sb3_vla.bases.backends import ComposedBase

    base = make_base("compose:scripted+clip:ViT-B-32@/weights/clip.pt", env.observation_space, env.action_space,
                     clip={"instruction": "fold the cloth"})
    # the same in Python:
    base = ComposedBase(EnvScriptedBase(env.action_space), ClipBase("ViT-B-32", "/weights/clip.pt"))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from sb3_vla.bases.backends._common import batch_size, call_with_options
from sb3_vla.bases.base import BaseModel, VLABatch
from sb3_vla.bases.registry import make_base, register_base
from sb3_vla.core.options import parse_query as parse_options

if TYPE_CHECKING:  # the backend classes import torch-heavy libraries lazily; expose them lazily too
    from sb3_vla.bases.backends.clip import ClipBase
    from sb3_vla.bases.backends.hf import HFVLABase
    from sb3_vla.bases.backends.module import ModuleBase
    from sb3_vla.bases.backends.sb3_policy import SB3PolicyBase

__all__ = [
    "ClipBase",
    "ComposedBase",
    "HFVLABase",
    "ModuleBase",
    "SB3PolicyBase",
    "make_composed_base",
]

_LAZY = {
    "ClipBase": "sb3_vla.bases.backends.clip",
    "HFVLABase": "sb3_vla.bases.backends.hf",
    "ModuleBase": "sb3_vla.bases.backends.module",
    "SB3PolicyBase": "sb3_vla.bases.backends.sb3_policy",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ComposedBase(BaseModel):
    """An action base plus embedding-only bases: the first gives the action, all give embeddings.

    :param action_base: supplies the action (or chunk), ``env_query`` and ``chunk_size``; its own embedding, if
        any, comes first in the concatenated embedding.
    :param embedding_bases: bases whose embeddings are appended (their actions, if any, are ignored).

    Example::

        base = ComposedBase(EnvScriptedBase(env.action_space), ClipBase("ViT-B-32", "/weights/clip.pt"))
        action, emb = base.predict(batch)  # scripted action, CLIP image+text embedding
    """

    def __init__(self, action_base: BaseModel, *embedding_bases: BaseModel) -> None:
        parts = (action_base, *embedding_bases)
        for b in parts:
            if not isinstance(b, BaseModel):
                raise TypeError(f"ComposedBase takes BaseModel instances, got {type(b).__name__}")
        if getattr(action_base, "action_space", None) is None:
            raise ValueError(
                f"the first base of a composition gives the action, but {action_base.name} gives none; "
                "put an action base (scripted, zero, hf:, module:, sb3:) first"
            )
        if not embedding_bases:
            raise ValueError("ComposedBase needs at least one embedding base after the action base")
        for b in embedding_bases:
            if b.env_query is not None:
                raise ValueError(f"embedding base {b.name} queries the env ({b.env_query}); only the action base may")
            if b.embedding_dim <= 0:
                raise ValueError(f"base {b.name} gives no embedding; it cannot be an embedding part of a composition")
        self.action_base = action_base
        self.embedding_bases = tuple(embedding_bases)
        self.action_space = action_base.action_space
        self.chunk_size = action_base.chunk_size
        self.env_query = action_base.env_query
        self.stateless = all(b.stateless for b in parts)
        self.embedding_dim = sum(int(b.embedding_dim) for b in parts)
        # () means "every key": if any part reads every key, so does the composition
        self.obs_keys = (
            () if any(not b.obs_keys for b in parts) else tuple(dict.fromkeys(sum((b.obs_keys for b in parts), ())))
        )

    @property
    def name(self) -> str:
        return "+".join(b.name for b in (self.action_base, *self.embedding_bases))

    @staticmethod
    def _sub_batch(base: BaseModel, batch: VLABatch) -> VLABatch:
        if not base.obs_keys:
            return batch
        missing = [k for k in base.obs_keys if k not in batch.obs]
        if missing:
            raise KeyError(f"base {base.name} needs observation keys {missing}; the batch has {sorted(batch.obs)}")
        return VLABatch(
            obs={k: batch.obs[k] for k in base.obs_keys},
            instructions=batch.instructions,
            env_ids=batch.env_ids,
            env_outputs=batch.env_outputs,
        )

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        for b in (self.action_base, *self.embedding_bases):
            b.reset(env_ids)

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        n = batch_size(batch)
        action, emb = self.action_base.predict(self._sub_batch(self.action_base, batch))
        embs = [np.asarray(emb, dtype=np.float32).reshape(n, -1)] if self.action_base.embedding_dim else []
        for b in self.embedding_bases:
            _, e = b.predict(self._sub_batch(b, batch))
            if e is None:
                raise ValueError(f"embedding base {b.name} returned no embedding")
            embs.append(np.asarray(e, dtype=np.float32).reshape(n, -1))
        return action, np.concatenate(embs, axis=-1)

    def close(self) -> None:
        for b in (self.action_base, *self.embedding_bases):
            b.close()


# ---------------------------------------------------------------------------------------------------- factories
def _merge(inline: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Inline ``?key=value`` options, overridden by ``base_kwargs``."""
    return {**inline, **kwargs}


def _hf_factory(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
    model, opts = parse_options(arg)
    if not model:
        raise ValueError("base spec 'hf:' needs a model directory or hub id: hf:/path/to/model or hf:org/name")
    from sb3_vla.bases.backends.hf import HFVLABase

    return call_with_options(HFVLABase, f"hf:{model}", model, **_merge(opts, kwargs))


def _clip_factory(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
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


def _module_factory(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
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


def _sb3_factory(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
    path, opts = parse_options(arg)
    if not path:
        raise ValueError("base spec 'sb3:' needs a model zip: sb3:/path/to/model.zip")
    options = _merge(opts, kwargs)
    options.setdefault("observation_space", observation_space)
    if action_space is not None:
        options.setdefault("action_space", action_space)
    from sb3_vla.bases.backends.sb3_policy import SB3PolicyBase

    return call_with_options(SB3PolicyBase, f"sb3:{path}", path, **options)


def _split_composition(spec: str) -> list[str]:
    """Split ``a+b:x+c:y?opts`` on ``+`` before the first ``?`` (so nested specs in options stay whole)."""
    head, q, tail = spec.partition("?")
    parts = head.split("+")
    if q:
        parts[-1] = f"{parts[-1]}?{tail}"
    return parts


def make_composed_base(
    spec: str,
    observation_space: spaces.Space | None = None,
    action_space: spaces.Box | None = None,
    **base_kwargs: Any,
) -> ComposedBase:
    """Build a :class:`ComposedBase` from ``"<action spec>+<embedding spec>[+...]"``.

    :param spec: the parts joined by ``+`` (without the ``compose:`` prefix).
    :param base_kwargs: entries named after a part's prefix (a dict) go to that part only; others go to every part.

    Example::

        base = make_composed_base("zero+clip:ViT-B-32@/w/clip.pt", action_space=env.action_space,
                                  clip={"include_text": False})
    """
    parts = _split_composition(spec)
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"composition spec {spec!r} must be '<action spec>+<embedding spec>[+...]'")
    prefixes = [p.partition(":")[0].partition("?")[0] for p in parts]
    per_part = {k: v for k, v in base_kwargs.items() if k in prefixes and isinstance(v, dict)}
    shared = {k: v for k, v in base_kwargs.items() if k not in per_part}
    bases = [
        make_base(p, observation_space, action_space, **{**shared, **per_part.get(prefix, {})})
        for p, prefix in zip(parts, prefixes)
    ]
    composed = ComposedBase(bases[0], *bases[1:])
    if isinstance(observation_space, spaces.Dict):
        needed = {k for b in bases for k in b.obs_keys}
        missing = sorted(needed - set(observation_space.spaces))
        if missing:
            raise ValueError(
                f"base {composed.name} needs observation keys {missing} that the env does not provide; "
                f"available keys: {sorted(observation_space.spaces)}"
            )
    return composed


def _compose_factory(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
    return make_composed_base(arg, observation_space, action_space, **kwargs)


register_base("hf", _hf_factory)
register_base("clip", _clip_factory)
register_base("module", _module_factory)
register_base("sb3", _sb3_factory)
register_base("compose", _compose_factory)


def _ray_factory(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
    """``ray:<inner spec>?max_batch=32&max_wait_ms=5``: the inner base served by one Ray actor (sb3_vla.ray)."""
    from sb3_vla.ray import import_ray

    import_ray(f"base spec 'ray:{arg}'")
    from sb3_vla.ray.base_server import make_ray_base

    return make_ray_base(arg, observation_space=observation_space, action_space=action_space, **kwargs)


register_base("ray", _ray_factory)

import sb3_vla.models  # noqa: E402, F401 - registers 'small-vla' (our behaviour-cloned VLA; torch loads lazily)
