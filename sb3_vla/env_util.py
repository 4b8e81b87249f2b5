"""One call from an env id and a base to a residual env that stock SB3 algorithms train on: vectorised
(:func:`make_residual_vec_env`) or single (:func:`make_residual_env`, for ``check_env`` and plain Gymnasium loops)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from sb3_vla.bases.base import BaseModel
from sb3_vla.wrappers.config import ResidualConfig


def make_registered_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **kwargs)`` with ``render_mode="rgb_array"`` unless given (as SB3's ``make_vec_env``).

    A module-level function, so a subprocess that unpickles it imports ``sb3_vla`` and with it our env ids:
    ``SubprocVecEnv``'s forkserver workers otherwise know only Gymnasium's own envs.

    >>> make_registered_env("Pendulum-v1").render_mode
    'rgb_array'
    """
    try:
        return gym.make(env_id, **{"render_mode": "rgb_array", **kwargs})
    except TypeError:  # the env takes no render_mode
        return gym.make(env_id, **kwargs)


def env_factory(env_id: str | Callable[..., gym.Env]) -> Callable[..., gym.Env]:
    """A picklable env constructor for ``make_vec_env`` that also works in ``SubprocVecEnv`` workers.

    >>> import pickle
    >>> pickle.loads(pickle.dumps(env_factory("Pendulum-v1")))(max_episode_steps=5).spec.max_episode_steps
    5
    """
    return functools.partial(make_registered_env, env_id) if isinstance(env_id, str) else env_id


def make_residual_env(
    env_id: str | Callable[..., gym.Env],
    base: BaseModel | str | None = None,
    *,
    config: ResidualConfig | None = None,
    env_kwargs: dict[str, Any] | None = None,
    **settings: Any,
) -> gym.Env:
    """One env with the per-env stack: :class:`VLAObservationWrapper` -> :class:`ResidualActionWrapper`.

    The same observation and action spaces as one env of :func:`make_residual_vec_env` (which batches the base
    over its envs instead), so Gymnasium's and SB3's ``check_env`` can check what the agent will see.

    :param env_id: a registered env id or an env factory.
    :param base: a :class:`~sb3_vla.bases.BaseModel` or a spec string (or ``config.base``).
    :param config: the residual settings as one :class:`~sb3_vla.wrappers.ResidualConfig`.
    :param env_kwargs: keyword arguments for the env constructor.
    :param settings: residual settings (:class:`~sb3_vla.wrappers.ResidualConfig` fields: ``residual_scale``,
        ``query_interval``, ``residual_map``, ``decision_interval`` ...), applied over ``config``.

    Example:

    >>> from stable_baselines3.common.env_checker import check_env
    >>> env = make_residual_env("Pendulum-v1", base="zero", residual_scale=2.0)
    >>> check_env(env)
    >>> sorted(env.observation_space.spaces)
    ['obs', 'vla_action']
    """
    cfg = ResidualConfig.from_arguments(base, config, **settings)
    return cfg.wrap_env(env_factory(env_id)(**(env_kwargs or {})))


def make_residual_vec_env(
    env_id: str | Callable[..., gym.Env],
    base: BaseModel | str | None = None,
    n_envs: int = 1,
    *,
    config: ResidualConfig | None = None,
    seed: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    vec_env_cls: type[VecEnv] | str | None = None,
    monitor_dir: str | None = None,
    wrapper_class: Callable[[gym.Env], gym.Env] | None = None,
    **settings: Any,
) -> VecEnv:
    """Build ``n_envs`` copies of an env, batch the frozen base over them, and expose a residual action space.

    The stack is ``make_vec_env`` (Monitor + your ``wrapper_class``) -> :class:`VecVLAObservationWrapper`
    (one forward pass for all envs) -> :class:`VecResidualActionWrapper`. Put ``VecNormalize`` on top if needed.
    The residual settings are the fields of :class:`~sb3_vla.wrappers.ResidualConfig`, given as keyword arguments
    (``residual_scale=0.2, query_interval=4``), as one ``config=ResidualConfig(...)``, or both (the keyword
    arguments win).

    :param env_id: a registered env id or an env factory.
    :param base: a :class:`~sb3_vla.bases.BaseModel` or a spec string (``zero``, ``scripted``, ``hf:...``); or
        ``config.base``.
    :param n_envs: number of envs.
    :param config: the residual settings as one :class:`~sb3_vla.wrappers.ResidualConfig`.
    :param seed: seed of the first env (env ``i`` gets ``seed + i``).
    :param env_kwargs: keyword arguments for the env constructor.
    :param vec_env_cls: ``DummyVecEnv`` (default), ``SubprocVecEnv``, :class:`~sb3_vla.ray.RayVecEnv`, or
        ``"dummy"`` / ``"subproc"`` / ``"ray"`` (envs in Ray actors; ``pip install -e ".[ray]"``).
    :param monitor_dir: where Monitor writes its CSV files.
    :param wrapper_class: a per-env wrapper applied after Monitor.
    :param settings: residual settings (:class:`~sb3_vla.wrappers.ResidualConfig` fields): ``residual_scale``,
        ``absolute_dims``, ``override_dims``, ``query_interval``, ``action_adapter``, ``drop_keys``,
        ``keep_base_in_obs``, ``nonfinite``, ``instruction``, ``base_kwargs``, ``residual_map``,
        ``decision_interval``, ``residual_penalty`` ...; an unknown name raises a ``TypeError`` naming the closest.
    :return: the vectorised residual env.

    Example:

    >>> import numpy as np
    >>> env = make_residual_vec_env("Pendulum-v1", base="zero", n_envs=4, residual_scale=2.0, seed=0)
    >>> obs = env.reset()
    >>> obs, rewards, dones, infos = env.step(np.full((4, 1), 0.5, dtype=np.float32))
    >>> infos[0]["executed_action"]  # the zero base + 2.0 * 0.5
    array([1.], dtype=float32)
    >>> same = make_residual_vec_env("Pendulum-v1", n_envs=4, config=ResidualConfig(base="zero", residual_scale=2.0))
    >>> same.observation_space == env.observation_space and same.action_space == env.action_space
    True

    Train it with any stock SB3 algorithm: ``SAC(ResidualSACPolicy, env).learn(20_000)``.
    """
    cfg = ResidualConfig.from_arguments(base, config, **settings)  # unknown settings fail before any env is built
    if isinstance(env_id, str) and env_id not in gym.registry:
        raise ValueError(
            f"unknown env id {env_id!r}; register it with gymnasium first (import the package that registers it), "
            f"e.g. one of: {', '.join(sorted(k for k in gym.registry if not k.startswith('ALE/'))[:12])} ..."
        )
    if isinstance(vec_env_cls, str):
        classes: dict[str, type[VecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
        if vec_env_cls == "ray":  # sb3_vla.ray.RayVecEnv; a missing Ray raises an ImportError naming the extra
            from sb3_vla.ray import ray_vec_env_class

            classes["ray"] = ray_vec_env_class("vec_env_cls='ray'")
        if vec_env_cls not in classes:
            raise ValueError(f"vec_env_cls must be 'dummy', 'subproc' or 'ray', got {vec_env_cls!r}")
        vec_env_cls = classes[vec_env_cls]
    venv = make_vec_env(
        env_factory(env_id),
        n_envs=n_envs,
        seed=seed,
        env_kwargs=env_kwargs,
        vec_env_cls=vec_env_cls,  # type: ignore[arg-type]  # SB3 annotates its two classes; any VecEnv class works
        monitor_dir=monitor_dir,
        wrapper_class=wrapper_class,
    )
    return cfg.wrap(venv)
