"""One base instance for several env stacks of a process (the train and eval envs of ``sb3_vla.train``).

A large base loaded twice costs twice its memory and load time. :class:`SharedBase` lends one base to a second
wrapper: it forwards everything but :meth:`~SharedBase.close`, so the owner's wrapper alone releases the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sb3_vla.bases.base import BaseModel, VLABatch


def can_share(base: BaseModel) -> bool:
    """Whether ``base`` can serve two env stacks at once: it keeps no per-env state of its own (``stateless``, or
    :meth:`BaseModel.reset` not overridden, as for the env's scripted controller whose state lives in the env).

    A base with per-env state indexes it by env index, which the train env and the eval env would both use.

    Example::

        >>> from gymnasium import spaces
        >>> from sb3_vla.bases import ZeroBase
        >>> can_share(ZeroBase(spaces.Box(-1, 1, (2,))))
        True
    """
    return bool(base.stateless) or type(base).reset is BaseModel.reset


class SharedBase(BaseModel):
    """A borrowed view of another wrapper's base: same model, same outputs, but :meth:`close` does nothing.

    :param base: the base to share; it must pass :func:`can_share`.

    Example::

        >>> from gymnasium import spaces
        >>> from sb3_vla.bases import ZeroBase
        >>> owner = ZeroBase(spaces.Box(-1, 1, (2,)))
        >>> borrowed = SharedBase(owner)
        >>> borrowed.close()  # the owner's model stays loaded
        >>> borrowed.name, borrowed.action_space is owner.action_space
        ('shared(ZeroBase)', True)
    """

    def __init__(self, base: BaseModel) -> None:
        if not isinstance(base, BaseModel):
            raise TypeError(f"SharedBase takes a sb3_vla.bases.BaseModel, got {type(base).__name__}")
        if not can_share(base):
            raise ValueError(
                f"base {base.name} keeps per-env state (stateless=False and its own reset()); it cannot serve two "
                "env stacks at once: build a second instance for the other env"
            )
        self.inner = base
        self.action_space = base.action_space
        self.embedding_dim = base.embedding_dim
        self.chunk_size = base.chunk_size
        self.obs_keys = base.obs_keys
        self.env_query = base.env_query
        self.stateless = base.stateless

    @property
    def name(self) -> str:
        return f"shared({self.inner.name})"

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        self.inner.reset(env_ids)

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        return self.inner.predict(batch)

    def close(self) -> None:
        """Nothing: the wrapper that owns the base closes it."""
