"""Frozen base-model backends: Hugging Face VLAs, open_clip encoders, any ``nn.Module``, SB3 checkpoints.

The registry (:mod:`sb3_vla.bases.registry`) names each prefix's factory as a lazy entry point, so nothing here is
imported before a base of that kind is built. torch/transformers/open_clip are imported only when a base is built;
a missing one raises an ``ImportError`` naming ``pip install -e ".[vla]"``.

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
- ``sb3:<model.zip>``: :class:`SB3PolicyBase`, a trained SB3 policy. A residual policy saved by
  ``python -m sb3_vla.train`` replays on its own base: its inner base and residual settings are read from the run
  folder's saved ``config.yml`` (plain YAML), e.g. ``sb3:logs/sac/GarmentFold-v0_1/GarmentFold-v0.zip``; options
  given explicitly win (``inner_base`` a spec, ``residual_scale``, ``absolute_dims`` ..., ``inner_base=None`` for a
  plain replay). Options: ``vec_normalize``, ``algo``, ``deterministic``, ``embedding``, ``device``,
  ``inner_base_kwargs``.
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

from typing import TYPE_CHECKING, Any

from sb3_vla.bases.composed import ComposedBase, make_composed_base

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
