"""One call from an env id and a base to a residual env that stock SB3 algorithms train on: vectorised
(:func:`make_residual_vec_env`) or single (:func:`make_residual_env`, for ``check_env`` and plain Gymnasium loops)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from sb3_vla.bases.base import BaseModel
from sb3_vla.core.residual_map import ResidualMapLike
from sb3_vla.wrappers.adapters import ActionAdapterLike
from sb3_vla.wrappers.observation import VecVLAObservationWrapper, VLAObservationWrapper
from sb3_vla.wrappers.residual import ResidualActionWrapper, ResidualScale, VecResidualActionWrapper


def make_registered_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **kwargs)`` with ``render_mode="rgb_array"`` unless given (as SB3's ``make_vec_env``).

    A module-level function, so a subprocess that unpickles it imports ``sb3_vla`` and with it our env ids:
    ``SubprocVecEnv``'s forkserver workers otherwise know only Gymnasium's own envs.
    """
    try:
        return gym.make(env_id, **{"render_mode": "rgb_array", **kwargs})
    except TypeError:  # the env takes no render_mode
        return gym.make(env_id, **kwargs)


def env_factory(env_id: str | Callable[..., gym.Env]) -> Callable[..., gym.Env]:
    """A picklable env constructor for ``make_vec_env`` that also works in ``SubprocVecEnv`` workers."""
    return functools.partial(make_registered_env, env_id) if isinstance(env_id, str) else env_id


def make_residual_env(
    env_id: str | Callable[..., gym.Env],
    base: BaseModel | str,
    residual_scale: ResidualScale = 0.1,
    env_kwargs: dict[str, Any] | None = None,
    query_interval: int = 1,
    drop_keys: Sequence[str] = (),
    base_kwargs: dict[str, Any] | None = None,
    **residual_kwargs: Any,
) -> gym.Env:
    """One env with the per-env stack: :class:`VLAObservationWrapper` -> :class:`ResidualActionWrapper`.

    The same observation and action spaces as one env of :func:`make_residual_vec_env` (which batches the base
    over its envs instead), so Gymnasium's and SB3's ``check_env`` can check what the agent will see.

    :param env_id: a registered env id or an env factory.
    :param base: a :class:`~sb3_vla.bases.BaseModel` or a spec string.
    :param residual_scale: see :class:`~sb3_vla.wrappers.ResidualActionWrapper`.
    :param env_kwargs: keyword arguments for the env constructor.
    :param query_interval: query the base every this many steps (or when its chunk runs out).
    :param drop_keys: raw observation keys hidden from the agent (the base still sees them).
    :param base_kwargs: keyword arguments for building ``base`` from a spec string.
    :param residual_kwargs: more :class:`~sb3_vla.wrappers.ResidualActionWrapper` arguments (``residual_map``,
        ``decision_interval`` ...).

    Example::

        >>> from stable_baselines3.common.env_checker import check_env
        >>> env = make_residual_env("Pendulum-v1", base="zero", residual_scale=2.0)
        >>> check_env(env)
        >>> sorted(env.observation_space.spaces)
        ['obs', 'vla_action']
    """
    make = env_factory(env_id)
    env = make(**(env_kwargs or {}))
    env = VLAObservationWrapper(env, base, query_interval=query_interval, drop_keys=drop_keys, base_kwargs=base_kwargs)
    return ResidualActionWrapper(env, residual_scale=residual_scale, **residual_kwargs)


def make_residual_vec_env(
    env_id: str | Callable[..., gym.Env],
    base: BaseModel | str,
    n_envs: int = 1,
    residual_scale: ResidualScale = 0.1,
    absolute_dims: Sequence[int] = (),
    override_dims: Sequence[int] = (),
    query_interval: int = 1,
    action_adapter: ActionAdapterLike | str | None = None,
    seed: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    vec_env_cls: type[VecEnv] | str | None = None,
    monitor_dir: str | None = None,
    wrapper_class: Callable[[gym.Env], gym.Env] | None = None,
    drop_keys: Sequence[str] = (),
    keep_base_in_obs: bool = True,
    nonfinite: str = "raise",
    instruction: str | None = None,
    base_kwargs: dict[str, Any] | None = None,
    residual_map: ResidualMapLike | None = None,
    decision_interval: int = 1,
    residual_penalty: float = 0.0,
) -> VecEnv:
    """Build ``n_envs`` copies of an env, batch the frozen base over them, and expose a residual action space.

    The stack is ``make_vec_env`` (Monitor + your ``wrapper_class``) -> :class:`VecVLAObservationWrapper`
    (one forward pass for all envs) -> :class:`VecResidualActionWrapper`. Put ``VecNormalize`` on top if needed.

    :param env_id: a registered env id or an env factory.
    :param base: a :class:`~sb3_vla.bases.BaseModel` or a spec string (``zero``, ``scripted``, ``hf:...``).
    :param n_envs: number of envs.
    :param residual_scale: see :class:`~sb3_vla.wrappers.ResidualActionWrapper`.
    :param absolute_dims: action dims the policy sets directly.
    :param override_dims: residual dims with full authority (scale = action range), starting from the base.
    :param query_interval: query the base every this many steps (or when its chunk runs out).
    :param action_adapter: maps base actions into the env's action space when shapes differ.
    :param seed: seed of the first env (env ``i`` gets ``seed + i``).
    :param env_kwargs: keyword arguments for the env constructor.
    :param vec_env_cls: ``DummyVecEnv`` (default), ``SubprocVecEnv``, :class:`~sb3_vla.ray.RayVecEnv`, or
        ``"dummy"`` / ``"subproc"`` / ``"ray"`` (envs in Ray actors; ``pip install -e ".[ray]"``).
    :param monitor_dir: where Monitor writes its CSV files.
    :param wrapper_class: a per-env wrapper applied after Monitor.
    :param drop_keys: raw observation keys hidden from the agent (the base still sees them).
    :param keep_base_in_obs: whether the agent sees ``vla_action``.
    :param nonfinite: ``"raise"`` or ``"zero"`` when the base returns NaN/inf.
    :param instruction: fixed instruction for envs that give none.
    :param base_kwargs: keyword arguments for building ``base`` from a spec string.
    :param residual_map: compose the residual in another space (e.g. pinch-point offsets on GarmentFold), see
        :class:`~sb3_vla.core.residual_map.ResidualMap`.
    :param decision_interval: env steps per agent decision: the residual is held over them and their rewards summed
        (chunk-level residual), see :class:`~sb3_vla.wrappers.ResidualActionWrapper`.
    :param residual_penalty: reward cost per env step of a full-scale residual, see
        :class:`~sb3_vla.wrappers.ResidualActionWrapper`.
    :return: the vectorised residual env.

    Example::

        from stable_baselines3 import SAC
        from sb3_vla import VLAFeaturesExtractor, make_residual_vec_env

        env = make_residual_vec_env("Pendulum-v1", base="zero", n_envs=4, residual_scale=2.0)
        model = SAC("MultiInputPolicy", env, policy_kwargs=dict(features_extractor_class=VLAFeaturesExtractor))
        model.learn(1_000)
    """
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
    venv = VecVLAObservationWrapper(
        venv,
        base,
        query_interval=query_interval,
        action_adapter=action_adapter,
        drop_keys=drop_keys,
        nonfinite=nonfinite,
        instruction=instruction,
        base_kwargs=base_kwargs,
    )
    return VecResidualActionWrapper(
        venv,
        residual_scale=residual_scale,
        absolute_dims=absolute_dims,
        override_dims=override_dims,
        keep_base_in_obs=keep_base_in_obs,
        residual_map=residual_map,
        decision_interval=decision_interval,
        residual_penalty=residual_penalty,
    )
