"""Residual action wrappers: the agent acts in ``Box(-1, 1)`` and the env executes base + scaled residual."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, unwrap_vec_wrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from sb3_vla.core.keys import ACTION_KEY, APPLIED_INFO_KEY, MAPPED_ACTION_KEY, RESIDUAL_INFO_KEY
from sb3_vla.core.residual_map import (
    ResidualMap,
    ResidualMapLike,
    compose_mapped,
    resolve_residual_map,
)
from sb3_vla.core.residual_math import compose_action
from sb3_vla.core.schedule import ResidualScaleSchedule
from sb3_vla.wrappers.exploration import ResidualGate

ResidualScale = float | Sequence[float] | np.ndarray | Callable[[int], Any] | Mapping[str, float]


def _validate_scale(value: Any, action_dim: int) -> np.ndarray:
    scale = np.asarray(value, dtype=np.float64)
    if scale.ndim > 1 or (scale.ndim == 1 and scale.shape[0] != action_dim):
        raise ValueError(
            f"residual_scale must be a float or a list of {action_dim} floats (one per action dim), "
            f"got shape {scale.shape}"
        )
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(
            f"residual_scale must be > 0 and finite (got {scale.tolist()}); it is the largest correction, in env "
            "action units, the policy can add to the base action. Use e.g. 0.1-0.3 of the action range"
        )
    return scale


class _ResidualCore:
    """Validation and composition shared by the single-env and vectorised wrappers."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        residual_scale: ResidualScale,
        absolute_dims: Sequence[int],
        base_key: str,
        override_dims: Sequence[int] = (),
        residual_map: ResidualMapLike | None = None,
        decision_interval: int = 1,
        residual_penalty: float = 0.0,
    ) -> None:
        if not np.isfinite(residual_penalty) or residual_penalty < 0:
            raise ValueError(
                f"residual_penalty must be >= 0 (reward cost per env step of a full-scale residual), got "
                f"{residual_penalty}"
            )
        self.residual_penalty = float(residual_penalty)
        if isinstance(decision_interval, bool) or not isinstance(decision_interval, int | np.integer):
            raise TypeError(
                f"decision_interval must be an int (env steps per agent decision), got {decision_interval!r}"
            )
        if decision_interval < 1:
            raise ValueError(
                f"decision_interval must be >= 1 env steps per agent decision, got {decision_interval}; 1 decides "
                "every step, k holds each residual for k env steps (e.g. the base's action chunk)"
            )
        self.decision_interval = int(decision_interval)
        self.gate = ResidualGate()
        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
            raise TypeError(f"residual wrappers need a 1-D Box action space, got {action_space}")
        if not isinstance(observation_space, spaces.Dict) or base_key not in observation_space.spaces:
            keys = sorted(observation_space.spaces) if isinstance(observation_space, spaces.Dict) else None
            raise ValueError(
                f"residual wrappers read the base action from observation key {base_key!r}, which is missing "
                f"(observation keys: {keys}); wrap the env with VLAObservationWrapper / VecVLAObservationWrapper "
                "first (add_action=True)"
            )
        if observation_space.spaces[base_key].shape != action_space.shape:
            raise ValueError(
                f"observation key {base_key!r} has shape {observation_space.spaces[base_key].shape} but the env's "
                f"action space has shape {action_space.shape}; the base action must be mapped into the env's "
                "action space (action_adapter)"
            )
        self.residual_map: ResidualMap | None = resolve_residual_map(residual_map)
        self.dim = int(action_space.shape[0])
        if self.residual_map is not None:
            self.residual_map.check(action_space)
            if len(absolute_dims) or len(override_dims):
                raise ValueError(
                    "absolute_dims / override_dims index the env's action dims, but with a residual_map the residual "
                    f"has its own {self.residual_map.dim} dims; leave them empty (the map composes every dim)"
                )
            self.dim = int(self.residual_map.dim)
        self.low = action_space.low.astype(np.float64)
        self.high = action_space.high.astype(np.float64)
        self.absolute_dims = np.asarray(list(absolute_dims), dtype=np.int64)
        if self.absolute_dims.size and (self.absolute_dims.min() < -self.dim or self.absolute_dims.max() >= self.dim):
            raise ValueError(f"absolute_dims {self.absolute_dims.tolist()} out of range for {self.dim} action dims")
        self.absolute_dims %= self.dim
        self.override_dims = np.asarray(list(override_dims), dtype=np.int64)
        if self.override_dims.size and (self.override_dims.min() < -self.dim or self.override_dims.max() >= self.dim):
            raise ValueError(f"override_dims {self.override_dims.tolist()} out of range for {self.dim} action dims")
        self.override_dims %= self.dim
        if np.intersect1d(self.override_dims, self.absolute_dims).size:
            raise ValueError("a dim cannot be both in absolute_dims and override_dims")
        self.base_key = base_key
        self.num_steps = 0
        self.clock: _ResidualCore | None = None  # another core whose env-step count drives the schedule
        if isinstance(residual_scale, Mapping):
            residual_scale = ResidualScaleSchedule.from_mapping(residual_scale)
        self._schedule = residual_scale if callable(residual_scale) else None
        self._fixed = None if self._schedule else _validate_scale(residual_scale, self.dim)
        self.residual_scale  # validate the schedule at step 0 # noqa: B018

    @property
    def schedule_step(self) -> int:
        """The env-step count the scale schedule reads: this wrapper's own, or the one it follows."""
        return self.clock.schedule_step if self.clock is not None else self.num_steps

    @property
    def residual_scale(self) -> np.ndarray:
        if self._schedule is None:
            assert self._fixed is not None
            scale = self._fixed
        else:
            scale = _validate_scale(self._schedule(self.schedule_step), self.dim)
        if self.override_dims.size:
            # full authority: a residual of +-1 reaches either bound from any base value
            scale = np.broadcast_to(scale, (self.dim,)).copy()
            scale[self.override_dims] = (self.high - self.low)[self.override_dims]
        return scale

    def penalty(self, residual: np.ndarray) -> np.ndarray:
        """Reward cost per env step of executing ``residual`` ``(n, dim)``: ``residual_penalty * mean(residual**2)``."""
        return (self.residual_penalty * np.mean(np.square(residual, dtype=np.float64), axis=-1)).astype(np.float32)

    def compose(self, base: np.ndarray, residual: np.ndarray, obs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        residual = np.asarray(residual, dtype=np.float32)
        if residual.shape[-1] != self.dim:
            raise ValueError(f"residual action has shape {residual.shape}; expected last dim {self.dim}")
        if not np.all(np.isfinite(residual)):
            raise ValueError(f"residual action contains NaN/inf: {residual}")
        if self.residual_map is not None:
            return compose_mapped(self.residual_map, base, residual, self.residual_scale, self.low, self.high, obs)
        return compose_action(base, residual, self.residual_scale, self.low, self.high, self.absolute_dims)

    def agent_space(self, observation_space: spaces.Dict, keep_base_in_obs: bool) -> spaces.Dict:
        items = dict(observation_space.spaces)
        if self.mapped_space is not None:
            if MAPPED_ACTION_KEY in items:
                raise ValueError(f"the observation already has a key {MAPPED_ACTION_KEY!r}; the residual map adds it")
            items[MAPPED_ACTION_KEY] = self.mapped_space
        if not keep_base_in_obs:
            items.pop(self.base_key)
        return spaces.Dict(items)

    @property
    def mapped_space(self) -> spaces.Box | None:
        return None if self.residual_map is None else self.residual_map.observation_space

    def agent_obs(self, obs: dict[str, np.ndarray], keep_base_in_obs: bool) -> dict[str, np.ndarray]:
        """The agent's view of a (single or batched) observation: the mapped base action added, the base dropped."""
        out = dict(obs)
        if self.mapped_space is not None:
            assert self.residual_map is not None
            base = np.asarray(obs[self.base_key], dtype=np.float64)
            batched = obs if base.ndim > 1 else {k: np.asarray(v)[None] for k, v in obs.items()}
            mapped = self.residual_map.observe(base.reshape(-1, base.shape[-1]), batched)
            out[MAPPED_ACTION_KEY] = mapped.reshape(*base.shape[:-1], *self.mapped_space.shape).astype(np.float32)
        if not keep_base_in_obs:
            out.pop(self.base_key, None)
        return out


class _ExplorationMixin:
    """``set_exploration`` and its read-outs, shared by the single-env and vectorised wrappers."""

    core: _ResidualCore

    @property
    def residual_scale(self) -> np.ndarray:
        """The residual scale in force now."""
        return self.core.residual_scale

    @property
    def decision_interval(self) -> int:
        """Env steps per agent decision."""
        return self.core.decision_interval

    @property
    def residual_prob(self) -> float:
        """Probability that a decision carries its residual (1 unless a training callback lowers it)."""
        return self.core.gate.prob

    def follow_schedule_of(self, training_env: Any) -> None:
        """Read the residual-scale schedule at ``training_env``'s env-step count from now on (a residual wrapper,
        or a vec env stack holding one), so that an evaluation env executes the residual at the scale training
        has reached. :func:`~sb3_vla.experiment.build_eval_env` links the eval stack this way."""
        self.core.clock = _residual_core_of(training_env)

    def set_schedule_step(self, env_steps: int) -> None:
        """Read the residual-scale schedule at ``env_steps`` (e.g. a loaded model's training steps) and stop
        following another env."""
        self.core.clock, self.core.num_steps = None, int(env_steps)

    def set_exploration(self, prob: float, gain: float = 1.0) -> None:
        """Apply the residual on a fraction ``prob`` of decisions, multiplied by ``gain``; masked decisions execute
        the pure base. Called on the training env by
        :class:`~sb3_vla.callbacks.ProgressiveExplorationCallback`; envs left alone always apply the residual."""
        self.core.gate.set(prob, gain)


def _residual_core_of(env: Any) -> _ResidualCore:
    if isinstance(env, _ExplorationMixin):
        return env.core
    if isinstance(env, VecEnvWrapper):
        found = unwrap_vec_wrapper(env, VecResidualActionWrapper)
        if found is not None:
            return found.core
    if isinstance(env, gym.Wrapper):
        inner: gym.Env = env
        while isinstance(inner, gym.Wrapper):
            if isinstance(inner, _ExplorationMixin):
                return inner.core
            inner = inner.env
    raise TypeError(f"{type(env).__name__} holds no residual wrapper to follow the residual-scale schedule of")


class ResidualActionWrapper(_ExplorationMixin, gym.Wrapper, gym.utils.RecordConstructorArgs):
    """The agent outputs a residual in ``Box(-1, 1)``; the env executes ``clip(base + residual_scale * residual)``.

    The base action is read from the observation key ``vla_action`` (added by :class:`VLAObservationWrapper`).
    Dims in ``absolute_dims`` are set by the policy alone: its ``[-1, 1]`` is mapped onto the env's bounds there, so
    a zero residual gives the middle of the range, not the base's value. Dims in ``override_dims`` stay residual but
    with a scale of the whole range: they start from the base's value and the policy can drive them to either bound
    (GarmentFold's stage-advance signal: the base's advance requests are kept at step 0, the policy may override).
    With ``decision_interval=k`` the agent decides once per ``k`` env steps: its residual is held for ``k`` steps,
    each composed with that step's base action (the base's chunk), and the rewards are summed (an episode end
    stops the chunk early). ``info`` gets ``base_action``, ``residual`` (the residual executed: zero where
    exploration masked it, see :meth:`set_exploration`), ``residual_applied`` and ``executed_action``.

    :param env: an env whose Dict observation holds ``base_key``.
    :param residual_scale: float, per-dim list, callable ``step -> scale`` or ``{start, end, steps}`` mapping.
    :param absolute_dims: action dims not added to the base.
    :param override_dims: action dims with full authority around the base (scale = action range).
    :param base_key: observation key of the base action.
    :param keep_base_in_obs: whether the agent sees ``vla_action``.
    :param residual_map: compose in another space (:class:`~sb3_vla.core.residual_map.ResidualMap` or
        ``"package.module:Name"``): the residual then has the map's size and ``residual_scale`` is in its units, e.g.
        ``"sb3_vla.envs.garment_fold:PinchResidualMap"`` (pinch-point offsets in metres on GarmentFold's joints).
    :param decision_interval: env steps per agent decision (chunk-level residual).
    :param residual_penalty: subtracted from every env step's reward, times the mean square of the executed
        residual (in ``[-1, 1]`` units): the critic then prefers the pure base unless a correction pays for itself.
        The Monitor below this wrapper, and evaluations, see the env's own reward.

    The arguments are the residual side of :class:`~sb3_vla.wrappers.ResidualConfig`, which holds them as one object.

    Example:

    >>> import gymnasium as gym
    >>> from sb3_vla.wrappers import VLAObservationWrapper
    >>> env = ResidualActionWrapper(VLAObservationWrapper(gym.make("Pendulum-v1"), base="zero"), residual_scale=0.5)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(np.array([1.0], dtype=np.float32))
    >>> info["executed_action"]
    array([0.5], dtype=float32)
    """

    def __init__(
        self,
        env: gym.Env,
        residual_scale: ResidualScale = 0.1,
        absolute_dims: Sequence[int] = (),
        base_key: str = ACTION_KEY,
        keep_base_in_obs: bool = True,
        override_dims: Sequence[int] = (),
        residual_map: ResidualMapLike | None = None,
        decision_interval: int = 1,
        residual_penalty: float = 0.0,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self,
            residual_scale=residual_scale,
            absolute_dims=list(absolute_dims),
            override_dims=list(override_dims),
            base_key=base_key,
            keep_base_in_obs=keep_base_in_obs,
            residual_map=residual_map,
            decision_interval=decision_interval,
            residual_penalty=residual_penalty,
        )
        gym.Wrapper.__init__(self, env)
        self.core = _ResidualCore(
            env.observation_space,
            env.action_space,
            residual_scale,
            absolute_dims,
            base_key,
            override_dims,
            residual_map,
            decision_interval,
            residual_penalty,
        )
        assert isinstance(env.observation_space, spaces.Dict)
        self.observation_space = self.core.agent_space(env.observation_space, keep_base_in_obs)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.core.dim,), dtype=np.float32)
        self.keep_base_in_obs = keep_base_in_obs
        self._base_action = np.zeros(self.core.low.shape[0], dtype=np.float32)
        self._obs: dict[str, np.ndarray] | None = None  # the last raw observation (for maps that read it)

    def _agent_obs(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._base_action = np.asarray(obs[self.core.base_key], dtype=np.float32).copy()
        self._obs = obs
        return self.core.agent_obs(obs, self.keep_base_in_obs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            self.core.gate.seed(seed)
        obs, info = self.env.reset(seed=seed, options=options)
        return self._agent_obs(obs), info

    def step(self, action: np.ndarray) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        gated, applied = self.core.gate(np.asarray(action, dtype=np.float32).reshape(1, -1))
        residual = gated[0]
        cost = float(self.core.penalty(gated)[0])
        total = 0.0
        for _ in range(self.core.decision_interval):
            base = self._base_action
            executed = self.core.compose(base, residual, self._obs)
            obs, reward, terminated, truncated, info = self.env.step(executed)
            self.core.num_steps += 1
            total += float(reward) - cost
            agent_obs = self._agent_obs(obs)
            if terminated or truncated:
                break
        info["base_action"] = base
        info[RESIDUAL_INFO_KEY] = residual
        info[APPLIED_INFO_KEY] = bool(applied[0])
        info["executed_action"] = executed
        keep = self.core.decision_interval == 1 and cost == 0.0  # the env's own reward object, untouched
        return agent_obs, reward if keep else total, terminated, truncated, info


class VecResidualActionWrapper(_ExplorationMixin, VecEnvWrapper):
    """Vectorised :class:`ResidualActionWrapper` (same arguments), for use over :class:`VecVLAObservationWrapper`.

    With ``decision_interval=k``, an env whose episode ends inside a chunk reports that end (its summed reward, its
    ``terminal_observation``) and runs the rest of the chunk on the pure base in its new episode, so the agent's
    next observation of it is up to ``k - 1`` steps into that episode.

    Example:

    >>> from stable_baselines3.common.env_util import make_vec_env
    >>> from sb3_vla.wrappers import VecVLAObservationWrapper
    >>> venv = VecResidualActionWrapper(VecVLAObservationWrapper(make_vec_env("Pendulum-v1", 4), "zero"), 0.2)
    >>> venv.action_space
    Box(-1.0, 1.0, (1,), float32)
    """

    def __init__(
        self,
        venv: VecEnv,
        residual_scale: ResidualScale = 0.1,
        absolute_dims: Sequence[int] = (),
        base_key: str = ACTION_KEY,
        keep_base_in_obs: bool = True,
        override_dims: Sequence[int] = (),
        residual_map: ResidualMapLike | None = None,
        decision_interval: int = 1,
        residual_penalty: float = 0.0,
    ) -> None:
        self.core = _ResidualCore(
            venv.observation_space,
            venv.action_space,
            residual_scale,
            absolute_dims,
            base_key,
            override_dims,
            residual_map,
            decision_interval,
            residual_penalty,
        )
        assert isinstance(venv.observation_space, spaces.Dict)
        super().__init__(
            venv,
            observation_space=self.core.agent_space(venv.observation_space, keep_base_in_obs),
            action_space=spaces.Box(-1.0, 1.0, shape=(self.core.dim,), dtype=np.float32),
        )
        self.keep_base_in_obs = keep_base_in_obs
        self._base_actions = np.zeros((self.num_envs, self.core.low.shape[0]), dtype=np.float32)
        self._gated = np.zeros((self.num_envs, self.core.dim), dtype=np.float32)
        self._applied = np.ones(self.num_envs, dtype=bool)
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._obs: dict[str, np.ndarray] | None = None  # the last raw observation (for maps that read it)

    def _agent_obs(self, obs: VecEnvObs) -> VecEnvObs:
        assert isinstance(obs, dict)
        self._base_actions = np.asarray(obs[self.core.base_key], dtype=np.float32).copy()
        self._obs = obs
        return self.core.agent_obs(obs, self.keep_base_in_obs)

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        self.core.gate.seed(seed)
        return self.venv.seed(seed)

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self.reset_infos = list(getattr(self.venv, "reset_infos", self.reset_infos))
        return self._agent_obs(obs)

    def _send(self, residual: np.ndarray) -> None:
        executed = self.core.compose(self._base_actions, residual, self._obs)
        self._last = (self._base_actions, residual, executed)
        self.venv.step_async(executed)

    def step_async(self, actions: np.ndarray) -> None:
        residual = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, self.core.dim)
        self._gated, self._applied = self.core.gate(residual)
        self._send(self._gated)

    def _annotate(self, infos: list[dict[str, Any]]) -> None:
        assert self._last is not None
        base, residual, executed = self._last
        for i, info in enumerate(infos):
            info["base_action"] = base[i]
            info[RESIDUAL_INFO_KEY] = residual[i]
            info[APPLIED_INFO_KEY] = bool(self._applied[i])
            info["executed_action"] = executed[i]
            term = info.get("terminal_observation")
            if isinstance(term, dict) and self.core.base_key in term:
                # the policy's observation space: PPO's truncation bootstrap would raise KeyError on a missing key
                info["terminal_observation"] = self.core.agent_obs(term, self.keep_base_in_obs)

    def step_wait(self) -> VecEnvStepReturn:
        n = self.num_envs
        total = np.zeros(n, dtype=np.float32)
        out_dones = np.zeros(n, dtype=bool)
        out_infos: list[dict[str, Any]] = [{} for _ in range(n)]
        cost = self.core.penalty(self._gated)
        for j in range(self.core.decision_interval):
            obs, rewards, dones, infos = self.venv.step_wait()
            self.core.num_steps += n
            self._annotate(infos)
            active = ~out_dones
            total[active] += np.asarray(rewards, dtype=np.float32)[active] - cost[active]
            for i in np.flatnonzero(active):
                out_infos[i] = infos[i]
            out_dones |= active & np.asarray(dones, dtype=bool)
            agent_obs = self._agent_obs(obs)
            if j == self.core.decision_interval - 1 or out_dones.all():
                break
            # envs whose episode ended inside this chunk run on the pure base in their new episode
            self._send(np.where(out_dones[:, None], np.float32(0.0), self._gated))
        return agent_obs, total, out_dones, out_infos
