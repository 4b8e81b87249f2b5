"""Inject the frozen base's action (``vla_action``) and embedding (``vla_embedding``) into Dict observations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from sb3_vla.bases.base import BaseModel
from sb3_vla.bases.registry import make_base
from sb3_vla.core.adapters import ActionAdapterLike
from sb3_vla.core.keys import ACTION_KEY, EMBEDDING_KEY
from sb3_vla.wrappers.engine import (
    BaseQueryEngine,
    as_dict_space,
    sb3_compatible,
)


def _injected_space(
    raw: spaces.Dict,
    action_space: spaces.Box,
    embedding_dim: int,
    drop_keys: Sequence[str],
    add_action: bool,
) -> tuple[spaces.Dict, list[str]]:
    """The agent-facing Dict space and the raw keys kept in it."""
    unknown = [k for k in drop_keys if k not in raw.spaces]
    if unknown:
        raise ValueError(f"drop_keys {unknown} are not observation keys; available: {sorted(raw.spaces)}")
    for key in (ACTION_KEY, EMBEDDING_KEY):
        if key in raw.spaces:
            raise ValueError(
                f"the env's observation already has a key {key!r}; is the env wrapped twice with a VLA observation "
                "wrapper? Rename the env's key or remove the inner wrapper"
            )
    kept = [k for k, s in raw.spaces.items() if k not in drop_keys and sb3_compatible(s)]
    new: dict[str, spaces.Space] = {k: raw.spaces[k] for k in kept}
    if add_action:
        new[ACTION_KEY] = spaces.Box(
            low=action_space.low.astype(np.float32),
            high=action_space.high.astype(np.float32),
            dtype=np.float32,
        )
    if embedding_dim > 0:
        new[EMBEDDING_KEY] = spaces.Box(-np.inf, np.inf, shape=(embedding_dim,), dtype=np.float32)
    return spaces.Dict(new), kept


def _resolve_base(
    base: BaseModel | str,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    base_kwargs: dict[str, Any] | None,
) -> BaseModel:
    if not isinstance(action_space, spaces.Box):
        raise TypeError(f"the VLA wrappers need a Box action space, got {action_space}")
    return make_base(base, observation_space=observation_space, action_space=action_space, **(base_kwargs or {}))


class VLAObservationWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Add the base's action and embedding to a single env's Dict observation.

    A ``Box`` observation is wrapped as ``Dict(obs=...)``. Keys SB3 cannot take (text) are dropped, and so are
    ``drop_keys`` (e.g. raw images the policy should not see; the base still sees them).

    :param env: the env to wrap.
    :param base: a :class:`~sb3_vla.bases.BaseModel` or a spec string (``zero``, ``scripted``, ``hf:...``).
    :param query_interval: query the base every this many steps, or sooner when its action chunk runs out.
    :param action_adapter: maps base actions into the env's action space when their shapes differ.
    :param drop_keys: raw observation keys hidden from the agent.
    :param add_action: put ``vla_action`` in the observation (the residual wrapper needs it).
    :param nonfinite: ``"raise"`` or ``"zero"`` when the base returns NaN/inf (see :class:`BaseQueryEngine`).
    :param instruction: a fixed language instruction for envs that give none in ``info["instruction"]``.
    :param base_kwargs: keyword arguments for building ``base`` from a spec string.

    The arguments are the base side of :class:`~sb3_vla.wrappers.ResidualConfig`, which holds them as one object.

    Example:

    >>> env = VLAObservationWrapper(gym.make("Pendulum-v1"), base="zero")
    >>> obs, info = env.reset(seed=0)
    >>> sorted(obs), obs["vla_action"]
    (['obs', 'vla_action'], array([0.], dtype=float32))
    """

    def __init__(
        self,
        env: gym.Env,
        base: BaseModel | str,
        query_interval: int = 1,
        action_adapter: ActionAdapterLike | str | None = None,
        drop_keys: Sequence[str] = (),
        add_action: bool = True,
        nonfinite: str = "raise",
        instruction: str | None = None,
        base_kwargs: dict[str, Any] | None = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self,
            base=base,
            query_interval=query_interval,
            action_adapter=action_adapter,
            drop_keys=list(drop_keys),
            add_action=add_action,
            nonfinite=nonfinite,
            instruction=instruction,
            base_kwargs=base_kwargs,
        )
        gym.Wrapper.__init__(self, env)
        self._raw_space, self._box_obs = as_dict_space(env.observation_space)
        self.base = _resolve_base(base, env.observation_space, env.action_space, base_kwargs)
        self.engine = BaseQueryEngine(
            self.base,
            self._raw_space,
            env.action_space,
            num_envs=1,
            query_interval=query_interval,
            action_adapter=action_adapter,
            nonfinite=nonfinite,
            env_call=lambda method, _ids: [self.env.get_wrapper_attr(method)()],
        )
        self.default_instruction = instruction
        self.observation_space, self._kept = _injected_space(
            self._raw_space, self.engine.action_space, self.engine.embedding_dim, drop_keys, add_action
        )
        self._add_action = add_action

    def _inject(self, obs: Any, info: dict[str, Any]) -> dict[str, np.ndarray]:
        raw = {"obs": obs} if self._box_obs else obs
        batch = {k: np.asarray(v)[None] for k, v in raw.items() if isinstance(v, np.ndarray | np.generic | float)}
        action, emb, bad = self.engine.query(batch)
        out = {k: raw[k] for k in self._kept}
        if self._add_action:
            out[ACTION_KEY] = action[0]
        if self.engine.embedding_dim:
            out[EMBEDDING_KEY] = emb[0]
        if bad[0]:
            info["vla_nonfinite"] = True
        return out

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.engine.reset_envs([0])
        self.engine.instructions[0] = self.default_instruction
        self.engine.set_instructions([0], [info])
        return self._inject(obs, info), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.engine.advance()
        self.engine.set_instructions([0], [info])
        return self._inject(obs, info), reward, terminated, truncated, info

    @property
    def instruction(self) -> str | None:
        """The instruction the base last saw."""
        return self.engine.instructions[0]

    def close(self) -> None:
        self.base.close()
        super().close()


class VecVLAObservationWrapper(VecEnvWrapper):
    """Vectorised :class:`VLAObservationWrapper`: one batched base forward pass for all envs that need a query.

    Envs re-use their action chunk between queries; an env is queried again every ``query_interval`` steps, when
    its chunk runs out, or when its episode restarts (the base is reset for that env). ``terminal_observation``
    entries in ``infos`` get the injected keys too.

    :param venv: the vectorised env to wrap.
    :param base: a :class:`~sb3_vla.bases.BaseModel` or a spec string.
    :param query_interval: see :class:`VLAObservationWrapper`.
    :param action_adapter: see :class:`VLAObservationWrapper`.
    :param drop_keys: see :class:`VLAObservationWrapper`.
    :param add_action: see :class:`VLAObservationWrapper`.
    :param nonfinite: see :class:`VLAObservationWrapper`.
    :param instruction: see :class:`VLAObservationWrapper`.
    :param base_kwargs: see :class:`VLAObservationWrapper`.

    Example:

    >>> from stable_baselines3.common.env_util import make_vec_env
    >>> venv = VecVLAObservationWrapper(make_vec_env("Pendulum-v1", n_envs=8), base="zero")
    >>> obs = venv.reset()
    >>> obs["vla_action"].shape
    (8, 1)
    >>> _ = [venv.step(np.zeros((8, 1), dtype=np.float32)) for _ in range(3)]
    >>> venv.engine.num_queries, venv.engine.num_rows_queried  # one forward pass per step for all 8 envs
    (4, 32)
    """

    def __init__(
        self,
        venv: VecEnv,
        base: BaseModel | str,
        query_interval: int = 1,
        action_adapter: ActionAdapterLike | str | None = None,
        drop_keys: Sequence[str] = (),
        add_action: bool = True,
        nonfinite: str = "raise",
        instruction: str | None = None,
        base_kwargs: dict[str, Any] | None = None,
    ) -> None:
        raw_space, self._box_obs = as_dict_space(venv.observation_space)
        self.base = _resolve_base(base, venv.observation_space, venv.action_space, base_kwargs)
        self.engine = BaseQueryEngine(
            self.base,
            raw_space,
            venv.action_space,
            num_envs=venv.num_envs,
            query_interval=query_interval,
            action_adapter=action_adapter,
            nonfinite=nonfinite,
            env_call=lambda method, ids: self.venv.env_method(method, indices=ids),
        )
        obs_space, self._kept = _injected_space(
            raw_space, self.engine.action_space, self.engine.embedding_dim, drop_keys, add_action
        )
        super().__init__(venv, observation_space=obs_space)
        self._add_action = add_action
        self.default_instruction = instruction

    def _as_dict(self, obs: VecEnvObs) -> dict[str, np.ndarray]:
        if self._box_obs:
            return {"obs": np.asarray(obs)}
        assert isinstance(obs, dict)
        return obs

    def _assemble(self, raw: dict[str, Any], action: np.ndarray, emb: np.ndarray) -> dict[str, np.ndarray]:
        out = {k: raw[k] for k in self._kept}
        if self._add_action:
            out[ACTION_KEY] = action
        if self.engine.embedding_dim:
            out[EMBEDDING_KEY] = emb
        return out

    def reset(self) -> VecEnvObs:
        raw = self._as_dict(self.venv.reset())
        self.reset_infos = list(self.venv.reset_infos)
        ids = list(range(self.num_envs))
        self.engine.reset_envs(ids)
        self.engine.instructions = [self.default_instruction] * self.num_envs
        self.engine.set_instructions(ids, self.reset_infos)
        action, emb, _ = self.engine.query(raw)
        return self._assemble(raw, action, emb)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        raw = self._as_dict(obs)
        self.engine.advance()
        done_ids = np.flatnonzero(dones)
        running = [i for i in range(self.num_envs) if not dones[i]]
        self.engine.set_instructions(running, [infos[i] for i in running])
        if len(done_ids):
            self._inject_terminal(done_ids, infos)
            self.engine.reset_envs(done_ids.tolist())
            reset_infos = getattr(self.venv, "reset_infos", [{}] * self.num_envs)
            for i in done_ids:
                self.engine.instructions[i] = self.default_instruction
            self.engine.set_instructions(done_ids.tolist(), [reset_infos[i] for i in done_ids])
        action, emb, bad = self.engine.query(raw)
        for i in np.flatnonzero(bad):
            infos[i]["vla_nonfinite"] = True
        return self._assemble(raw, action, emb), rewards, dones, infos

    def _inject_terminal(self, done_ids: np.ndarray, infos: list[dict[str, Any]]) -> None:
        rows = [i for i in done_ids if "terminal_observation" in infos[i]]
        if not rows:
            return
        ids = np.asarray(rows, dtype=np.int64)
        terms = [infos[i]["terminal_observation"] for i in rows]
        if self._box_obs:
            batch = {"obs": np.stack([np.asarray(t) for t in terms])}
        else:
            batch = {k: np.stack([np.asarray(t[k]) for t in terms]) for k in terms[0]}
        action, emb = self.engine.peek(batch, ids)
        for j, i in enumerate(rows):
            term = {k: (batch[k][j]) for k in self._kept}
            if self._add_action:
                term[ACTION_KEY] = action[j]
            if self.engine.embedding_dim:
                term[EMBEDDING_KEY] = emb[j]
            infos[i]["terminal_observation"] = term

    @property
    def instructions(self) -> list[str | None]:
        """The instruction each env's base last saw."""
        return list(self.engine.instructions)

    def close(self) -> None:
        self.base.close()
        self.venv.close()
