"""Batched base-model querying shared by the single-env and vectorised observation wrappers.

The single-env wrapper is this engine with a batch of one, so both behave identically on the same seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_vla.bases.base import BaseModel, VLABatch
from sb3_vla.core.adapters import ActionAdapterLike, resolve_adapter

NONFINITE_MODES = ("raise", "zero")


class BaseModelError(RuntimeError):
    """The frozen base raised or returned non-finite values; the message names the env, step and base."""


def as_dict_space(space: spaces.Space) -> tuple[spaces.Dict, bool]:
    """Return ``(dict_space, wrapped)``; a non-Dict space becomes ``Dict(obs=space)``."""
    if isinstance(space, spaces.Dict):
        return space, False
    return spaces.Dict({"obs": space}), True


def sb3_compatible(space: spaces.Space) -> bool:
    """Whether SB3's ``MultiInputPolicy`` can take this sub-space."""
    return isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary))


class BaseQueryEngine:
    """Keeps per-env chunks and decides which envs need a new base query.

    :param base: the frozen base model.
    :param observation_space: the env's Dict observation space (raw, before keys are dropped).
    :param action_space: the env's action space.
    :param num_envs: batch size.
    :param query_interval: query the base every this many steps, or sooner when its chunk runs out.
    :param action_adapter: maps base actions into the env's action space when their shapes differ.
    :param nonfinite: ``"raise"`` (stop with :class:`BaseModelError`) or ``"zero"`` (zero that env's output for
        the step and count the event).
    :param env_call: ``env_call(method, env_ids) -> list`` calls ``method()`` on those envs (for bases that
        declare ``env_query``).
    """

    def __init__(
        self,
        base: BaseModel,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        num_envs: int,
        query_interval: int = 1,
        action_adapter: ActionAdapterLike | str | None = None,
        nonfinite: str = "raise",
        env_call: Callable[[str, list[int]], list[Any]] | None = None,
    ) -> None:
        if not isinstance(base, BaseModel):
            raise TypeError(f"base must be a sb3_vla.bases.BaseModel, got {type(base).__name__}")
        if not isinstance(action_space, spaces.Box):
            raise TypeError(f"the env's action space must be a Box, got {action_space}")
        if int(query_interval) < 1:
            raise ValueError(f"query_interval must be >= 1, got {query_interval}")
        if nonfinite not in NONFINITE_MODES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
        missing = [k for k in base.obs_keys if k not in observation_space.spaces]
        if missing:
            raise ValueError(
                f"base {base.name} needs observation keys {missing} that the env does not provide; "
                f"available keys: {sorted(observation_space.spaces)}. Enable them in the env (e.g. an obs_mode "
                "with images) or choose a base that does not need them"
            )
        if base.action_space is None:
            raise ValueError(
                f"base {base.name} gives no action (embedding only); combine it with an action base, "
                "e.g. sb3_vla.bases.backends.ComposedBase(action_base, embedding_base) or a 'zero+...' spec"
            )
        if base.env_query is not None and env_call is None:
            raise ValueError(f"base {base.name} needs env.{base.env_query}() but no env access was given")
        self.base = base
        self.observation_space = observation_space
        self.action_space: spaces.Box = action_space
        self.num_envs = int(num_envs)
        self.query_interval = int(query_interval)
        self.nonfinite = nonfinite
        self.env_call = env_call
        self.adapter = resolve_adapter(action_adapter)
        self.env_shape = tuple(action_space.shape)
        self.base_shape = tuple(base.action_space.shape)
        self._check_adapter()
        self.chunk_size = max(1, int(base.chunk_size))
        self.embedding_dim = int(base.embedding_dim)
        n, h = self.num_envs, self.chunk_size
        self.chunks = np.zeros((n, h, *self.env_shape), dtype=np.float32)
        self.chunk_pos = np.zeros(n, dtype=np.int64)
        self.since_query = np.zeros(n, dtype=np.int64)
        self.needs_query = np.ones(n, dtype=bool)
        self.embeddings = np.zeros((n, self.embedding_dim), dtype=np.float32)
        self.episode_steps = np.zeros(n, dtype=np.int64)
        self.instructions: list[str | None] = [None] * n
        self.num_queries = 0  # number of predict() calls
        self.num_nonfinite = 0  # env-steps whose base output was zeroed
        # the base's cost (read through cost_stats())
        self.num_rows_queried = 0  # batch rows over all predict() calls
        self.num_env_steps = 0  # env transitions stepped (num_envs per advance())
        self.query_seconds = 0.0  # wall time in predict() and the env_query calls it needs

    # ------------------------------------------------------------------ set-up checks
    def _check_adapter(self) -> None:
        if self.adapter is None:
            if self.base_shape != self.env_shape:
                raise ValueError(
                    f"base {self.base.name} acts in shape {self.base_shape} but the env's action space has shape "
                    f"{self.env_shape}; pass an explicit action_adapter (e.g. "
                    "sb3_vla.wrappers.IndexActionAdapter or LinearActionAdapter) that maps one to the other"
                )
            return
        probe = np.zeros((1, *self.base_shape), dtype=np.float32)
        try:
            out = np.asarray(self.adapter(probe))
        except Exception as e:
            raise ValueError(f"action_adapter failed on a base action of shape {probe.shape}: {e}") from e
        if out.shape != (1, *self.env_shape):
            raise ValueError(
                f"action_adapter maps base actions of shape {self.base_shape} to {out.shape[1:]}, "
                f"but the env's action space has shape {self.env_shape}"
            )

    # ------------------------------------------------------------------ state
    def reset_envs(self, env_ids: Sequence[int]) -> None:
        """Start new episodes in ``env_ids``: reset the base there and force a query."""
        ids = list(env_ids)
        if not ids:
            return
        self.base.reset(ids)
        self.needs_query[ids] = True
        self.episode_steps[ids] = 0

    def advance(self) -> None:
        """Move every env one step along its chunk (after an env step)."""
        self.chunk_pos += 1
        self.since_query += 1
        self.num_env_steps += self.num_envs
        self.episode_steps += 1
        self.needs_query |= (self.chunk_pos >= self.chunk_size) | (self.since_query >= self.query_interval)

    def set_instructions(self, env_ids: Sequence[int], infos: Sequence[dict[str, Any]]) -> None:
        for i, info in zip(env_ids, infos):
            instr = info.get("instruction") if isinstance(info, dict) else None
            if isinstance(instr, str):
                self.instructions[i] = instr

    def cost_stats(self) -> dict[str, float]:
        """The base's cost so far: ``calls`` (batched ``predict`` calls), ``rows`` (env observations they
        covered), ``env_steps`` (env transitions stepped) and ``seconds`` (wall time in ``predict`` and the env
        queries it needs). Counters only grow; take differences for a period.

        Example::

            >>> from gymnasium import spaces
            >>> from sb3_vla.bases import ZeroBase
            >>> box = spaces.Box(-1, 1, (2,))
            >>> engine = BaseQueryEngine(ZeroBase(box), spaces.Dict(obs=box), box, num_envs=4)
            >>> _ = engine.query({"obs": np.zeros((4, 2), dtype=np.float32)})
            >>> engine.advance()
            >>> {k: v for k, v in engine.cost_stats().items() if k != "seconds"}
            {'calls': 1.0, 'rows': 4.0, 'env_steps': 4.0}
        """
        return {
            "calls": float(self.num_queries),
            "rows": float(self.num_rows_queried),
            "env_steps": float(self.num_env_steps),
            "seconds": float(self.query_seconds),
        }

    # ------------------------------------------------------------------ querying
    def _check_obs(self, obs: dict[str, np.ndarray], b: int) -> None:
        """Refuse observations that differ from the declared space (a wrong image size or dtype, a point cloud of
        the wrong shape): the base would otherwise fail later with a less helpful message, or silently misread."""
        for key, value in obs.items():
            space = self.observation_space.spaces.get(key)
            if not isinstance(space, spaces.Box):
                continue
            if value.shape[1:] != space.shape:
                raise ValueError(
                    f"observation key {key!r} has shape {value.shape[1:]} but the env's observation space declares "
                    f"{space.shape}; make the env emit what it declares (e.g. its image_size / point count settings)"
                )
            if value.dtype != space.dtype and not (value.dtype.kind == space.dtype.kind == "f"):
                raise ValueError(
                    f"observation key {key!r} has dtype {value.dtype} but the env's observation space declares "
                    f"{space.dtype}" + ("; images must be uint8 in [0, 255]" if space.dtype == np.uint8 else "")
                )

    def _predict(
        self, obs: dict[str, np.ndarray], env_ids: np.ndarray, instructions: list[str | None]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Query the base on ``obs`` rows; return ``(chunks (B,H,*A_env), embeddings (B,D), bad (B,))``."""
        keys = self.base.obs_keys or tuple(obs)
        batch_obs = {k: obs[k] for k in keys}
        self._check_obs(batch_obs, len(env_ids))
        t0 = time.perf_counter()
        env_outputs = None
        if self.base.env_query is not None:
            assert self.env_call is not None
            env_outputs = self.env_call(self.base.env_query, env_ids.tolist())
        batch = VLABatch(
            obs=batch_obs,
            instructions=None if all(s is None for s in instructions) else [s or "" for s in instructions],
            env_ids=env_ids,
            env_outputs=env_outputs,
        )
        b = len(env_ids)
        try:
            action, emb = self.base.predict(batch)
        except BaseModelError:
            raise
        except Exception as e:
            raise BaseModelError(
                f"base {self.base.name} raised {type(e).__name__} at env indices {env_ids.tolist()}, "
                f"episode steps {self.episode_steps[env_ids].tolist()}: {e}"
            ) from e
        self.query_seconds += time.perf_counter() - t0
        self.num_queries += 1
        self.num_rows_queried += b
        action = np.asarray(action, dtype=np.float32)
        if action.shape == (b, *self.base_shape):
            action = action[:, None]
        if action.shape[0] != b or action.shape[2:] != self.base_shape or action.ndim != 2 + len(self.base_shape):
            raise BaseModelError(
                f"base {self.base.name} returned actions of shape {action.shape}; expected ({b}, *{self.base_shape}) "
                f"or an action chunk ({b}, H, *{self.base_shape})"
            )
        if emb is None:
            emb = np.zeros((b, self.embedding_dim), dtype=np.float32)
        emb = np.asarray(emb, dtype=np.float32).reshape(b, -1)
        if emb.shape[1] != self.embedding_dim:
            raise BaseModelError(
                f"base {self.base.name} returned embeddings of size {emb.shape[1]} but declares "
                f"embedding_dim={self.embedding_dim}"
            )
        bad = ~(np.isfinite(action).reshape(b, -1).all(1) & np.isfinite(emb).all(1))
        if bad.any():
            if self.nonfinite == "raise":
                rows = np.flatnonzero(bad)
                raise BaseModelError(
                    f"base {self.base.name} returned NaN/inf for env index {env_ids[rows].tolist()} at episode step "
                    f"{self.episode_steps[env_ids[rows]].tolist()}; fix the model or its inputs, or pass "
                    "nonfinite='zero' to zero its output for that step and count the event"
                )
            action[bad] = 0.0
            emb[bad] = 0.0
            self.num_nonfinite += int(bad.sum())
        h = action.shape[1]
        if self.adapter is not None:
            flat = action.reshape(b * h, *self.base_shape)
            action = np.asarray(self.adapter(flat), dtype=np.float32).reshape(b, h, *self.env_shape)
        # the env cannot execute more than its bounds, and vla_action's space is the env's action space
        np.clip(action, self.action_space.low, self.action_space.high, out=action)
        return action, emb, bad

    def query(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Query the envs that need it; return ``(vla_action (N,*A), vla_embedding (N,D), nonfinite (N,))``."""
        ids = np.flatnonzero(self.needs_query)
        bad_all = np.zeros(self.num_envs, dtype=bool)
        if len(ids):
            sub = obs if len(ids) == self.num_envs else {k: v[ids] for k, v in obs.items()}  # no copy when all query
            chunks, emb, bad = self._predict(sub, ids, [self.instructions[i] for i in ids])
            h = chunks.shape[1]
            if h != self.chunk_size:  # a base may return shorter chunks than it declares
                self.chunk_size = h
                self.chunks = np.zeros((self.num_envs, h, *self.env_shape), dtype=np.float32)
            self.chunks[ids] = chunks
            self.embeddings[ids] = emb
            self.chunk_pos[ids] = 0
            self.since_query[ids] = 0
            self.needs_query[ids] = False
            bad_all[ids] = bad
        action = self.chunks[np.arange(self.num_envs), np.minimum(self.chunk_pos, self.chunk_size - 1)]
        return action.copy(), self.embeddings.copy(), bad_all

    def peek(self, obs: dict[str, np.ndarray], env_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Base output for terminal observations, as the single-env wrapper would inject it, without changing state.

        Envs due for a query get a fresh prediction when the base is stateless; otherwise (or for stateful bases,
        whose env has already been reset) the chunk continues.
        """
        pos = np.minimum(self.chunk_pos[env_ids], self.chunk_size - 1)
        action, emb = self.chunks[env_ids, pos].copy(), self.embeddings[env_ids].copy()
        if self.base.stateless and self.base.env_query is None:
            rows = np.flatnonzero(self.needs_query[env_ids])
            if len(rows):
                ids = env_ids[rows]
                chunks, fresh, _ = self._predict(
                    {k: v[rows] for k, v in obs.items()}, ids, [self.instructions[i] for i in ids]
                )
                action[rows], emb[rows] = chunks[:, 0], fresh
        return action, emb
