"""Compositions: the action of one base with the embeddings of several (``scripted+clip:...``).

:class:`ComposedBase` takes base instances; :func:`make_composed_base` builds the parts of a spec string with
:func:`~sb3_vla.bases.registry.make_base` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_vla.bases.base import BaseModel, VLABatch
from sb3_vla.bases.registry import make_base
from sb3_vla.bases.spec import batch_size, split_composition

__all__ = ["ComposedBase", "make_composed_base"]


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
    parts = split_composition(spec)
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


def compose_factory(arg: str, *, observation_space: Any, action_space: Any, **kwargs: Any) -> BaseModel:
    """The ``compose:<action spec>+<embedding spec>[+...]`` factory (also used for a bare ``a+b`` spec)."""
    return make_composed_base(arg, observation_space, action_space, **kwargs)
