"""Built-in bases that need no model weights: zero, any callable, and an env's own scripted controller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_vla.bases.base import BaseModel, VLABatch


class ZeroBase(BaseModel):
    """A base whose action is all zeros: plain RL, with the residual wrappers kept in place.

    :param action_space: the action space to produce zeros in.
    :param embedding_dim: size of an all-zero embedding (0 for none).

    Example::

        base = ZeroBase(env.action_space)
    """

    def __init__(self, action_space: spaces.Box, embedding_dim: int = 0) -> None:
        self.action_space = action_space
        self._shape = tuple(action_space.shape)
        self.embedding_dim = int(embedding_dim)

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        b = len(batch)
        action = np.zeros((b, *self._shape), dtype=np.float32)
        emb = np.zeros((b, self.embedding_dim), dtype=np.float32) if self.embedding_dim else None
        return action, emb


class CallableBase(BaseModel):
    """Wrap any function of the observation as a base.

    :param fn: ``fn(obs) -> action``. With ``batched=True`` it receives the stacked observation dict
        ``key -> (B, ...)`` and returns ``(B, A)``; otherwise it receives one env's observation (its dict, or the
        plain array when the env's observation is a ``Box`` wrapped as ``{"obs": ...}``) and returns ``(A,)``.
    :param action_space: the space of the actions ``fn`` returns.
    :param batched: whether ``fn`` takes a batch.
    :param name: name used in error messages.

    Example::

        def pd_controller(obs):  # Pendulum-v1: obs = [cos, sin, thdot]
            return np.array([-2.0 * obs[2]], dtype=np.float32)

        base = CallableBase(pd_controller, action_space=env.action_space)
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        action_space: spaces.Box,
        batched: bool = False,
        name: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"CallableBase needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.action_space = action_space
        self._shape = tuple(action_space.shape)
        self.batched = batched
        self._name = str(name or getattr(fn, "__name__", type(fn).__name__))

    @property
    def name(self) -> str:
        return self._name

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        if self.batched:
            return np.asarray(self.fn(batch.obs), dtype=np.float32), None
        rows = []
        for i in range(len(batch)):
            single = {k: v[i] for k, v in batch.obs.items()}
            if set(single) == {"obs"}:
                rows.append(self.fn(single["obs"]))
            else:
                rows.append(self.fn(single))
        return np.asarray(rows, dtype=np.float32).reshape(len(batch), *self._shape), None


class EnvScriptedBase(BaseModel):
    """The env's own (usually privileged) scripted controller as a base.

    The wrapper calls ``env.unwrapped.<method>()`` in each env (inside the worker process for subprocess vec
    envs, so scripted controllers run in parallel) and this base stacks the results.

    :param action_space: the space of the scripted actions (normally the env's action space).
    :param method: name of the env method returning one action for the env's current state.

    Example::

        base = EnvScriptedBase(env.action_space)  # calls env.unwrapped.scripted_action()
    """

    stateless = False

    def __init__(self, action_space: spaces.Box, method: str = "scripted_action") -> None:
        self.action_space = action_space
        self._shape = tuple(action_space.shape)
        self.env_query = method

    @property
    def name(self) -> str:
        return f"scripted({self.env_query})"

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        if batch.env_outputs is None:
            raise RuntimeError(
                f"{self.name} needs the wrapper to call env.unwrapped.{self.env_query}(); "
                "use it through VLAObservationWrapper / VecVLAObservationWrapper"
            )
        action = np.asarray(batch.env_outputs, dtype=np.float32)
        return action.reshape(len(batch), *self._shape), None
