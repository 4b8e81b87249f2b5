"""The frozen base-model protocol.

Every frozen base (a large VLA, an open_clip encoder, an SB3 checkpoint, a scripted controller) implements
:class:`BaseModel`. The observation wrappers in :mod:`sb3_vla.wrappers` build a :class:`VLABatch` from the
observations of all environments that need a new query, call :meth:`BaseModel.predict` once for the whole
batch, and inject the result into the observation as ``vla_action`` / ``vla_embedding``.

A base model never runs inside the RL policy: SAC builds several copies of its features extractor, and
whatever sits in the policy is saved in every model zip.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces


@dataclass
class VLABatch:
    """The inputs of one batched query of a base model.

    :param obs: observation arrays stacked over the batch, ``key -> (B, ...)``; images are uint8 ``(B, H, W, C)``
        or ``(B, C, H, W)`` exactly as the env emits them.
    :param instructions: one language instruction per batch row (``None`` when the env has none).
    :param env_ids: index of the env each row belongs to, ``(B,)``.
    :param env_outputs: results of ``env.<base.env_query>()`` for each row when the base declares
        :attr:`BaseModel.env_query` (the env's own scripted controller), else ``None``.
    """

    obs: dict[str, np.ndarray]
    instructions: list[str] | None = None
    env_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    env_outputs: list[Any] | None = None

    def __len__(self) -> int:
        return int(len(self.env_ids))


def batch_size(batch: VLABatch) -> int:
    """Rows in a :class:`~sb3_vla.bases.VLABatch`: ``len(env_ids)``, else the length of its first observation array."""
    if len(batch.env_ids):
        return int(len(batch.env_ids))
    for value in batch.obs.values():
        return int(len(value))
    return len(batch.instructions or [])


class BaseModel(ABC):
    """A frozen base policy that supplies a base action and, optionally, an embedding.

    Subclasses set :attr:`action_space` (the base's own action space), :attr:`embedding_dim` (0 when the base
    gives no embedding) and :attr:`chunk_size` (``H`` when :meth:`predict` returns action chunks ``(B, H, A)``).

    Optional declarations the wrappers check or use:

    - :attr:`obs_keys`: observation keys the base reads; the wrapper refuses an env that lacks one.
    - :attr:`env_query`: name of a method on ``env.unwrapped`` whose result the wrapper passes in
      :attr:`VLABatch.env_outputs` (e.g. ``"scripted_action"`` for an env's own privileged controller).
    - :attr:`stateless`: ``True`` when ``predict`` is a pure function of its batch; the wrapper then also queries
      the base on terminal observations, otherwise it repeats the last output there.

    Example::

        class ConstantBase(BaseModel):
            def __init__(self, action):
                self.action_space = spaces.Box(-1, 1, shape=(len(action),))
                self.action = np.asarray(action, dtype=np.float32)

            def predict(self, batch):
                return np.tile(self.action, (len(batch), 1)), None
    """

    action_space: spaces.Box  # embedding-only bases (clip:) set None
    embedding_dim: int = 0
    chunk_size: int = 1
    obs_keys: tuple[str, ...] = ()
    env_query: str | None = None
    stateless: bool = True

    @property
    def name(self) -> str:
        """A short human-readable name used in error messages and logs."""
        return type(self).__name__

    def reset(self, env_ids: Sequence[int] | None = None) -> None:  # noqa: B027 - optional hook
        """Forget any per-env state (called on episode start); ``None`` means all envs."""

    @abstractmethod
    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        """Return ``(action, embedding)``.

        :param batch: the stacked inputs of ``len(batch)`` envs.
        :return: ``action`` of shape ``(B, A)`` or an action chunk ``(B, H, A)`` in the base's
            :attr:`action_space` units, and ``embedding`` of shape ``(B, D)`` or ``None``.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (GPU memory, renderers)."""

    def __repr__(self) -> str:
        shape = None if self.action_space is None else tuple(self.action_space.shape)
        return f"{self.name}(action_shape={shape}, embedding_dim={self.embedding_dim}, chunk_size={self.chunk_size})"
