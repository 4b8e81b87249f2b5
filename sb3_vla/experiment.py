"""The pieces of one experiment, shared by ``python -m sb3_vla.train``, the tuner (:mod:`sb3_vla.tuning`) and the
benchmarks: the config of a command line, the env stack (``make_vec_env`` -> our batched wrappers -> VecNormalize),
the model, the callbacks and the run folder.

Each function takes a :class:`~sb3_vla.config.ResolvedConfig` (the YAML entry with its overrides, split by
destination), so every entry point builds the same stack from the same YAML:

>>> from sb3_vla.config import resolve
>>> cfg = resolve("sac", "Pendulum-v1", {"n_timesteps": 64, "learning_starts": 32}, base="zero")
>>> env = build_vec_env(cfg, n_envs=2, seed=0)
>>> sorted(env.observation_space.spaces)
['obs', 'vla_action']
>>> model = build_model(cfg, env, seed=0, device="cpu", tensorboard_log=None)
>>> type(model.policy).__name__
'ResidualSACPolicy'
>>> env.close()
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecNormalize,
    unwrap_vec_wrapper,
)

import sb3_vla  # noqa: F401 - registers the env ids
from sb3_vla.bases.base import BaseModel
from sb3_vla.bases.shared import SharedBase, can_share
from sb3_vla.callbacks import VLAStatsCallback
from sb3_vla.config import ResolvedConfig, default_conf_dir, load_hyperparams, resolve
from sb3_vla.core.algos import algorithms
from sb3_vla.core.imports import import_object
from sb3_vla.core.options import parse_key_values
from sb3_vla.env_util import env_factory
from sb3_vla.run_folder import env_folder_name
from sb3_vla.wrappers import VecResidualActionWrapper, VecVLAObservationWrapper

# ------------------------------------------------------------------------------------------- the command line


def configure_threads(num_threads: int, device: str) -> None:
    """Torch CPU threads: ``num_threads`` if > 0, else 1 when training on CPU (small RL nets gain nothing from more
    threads, and OpenMP stalls made them up to 30x slower when other processes share the cores)."""
    if num_threads > 0 or not th.cuda.is_available() or str(device).startswith("cpu"):
        th.set_num_threads(num_threads if num_threads > 0 else 1)


def resolve_env_alias(env_id: str) -> str:
    """Map a bare ManiSkill task id (``PickCube-v1``) to our SB3-compatible adapter (``ManiSkill-PickCube-v1``);
    ManiSkill registers the bare ids itself, for batched torch envs SB3 cannot take."""
    from sb3_vla.envs.maniskill.tasks import resolve_env_id

    return resolve_env_id(env_id)


def check_env_id(env_id: str) -> None:
    """Raise a clear error for an unregistered env id, with close matches."""
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown env id {env_id!r}.{hint} Env ids must be registered with gymnasium: sb3_vla registers "
        "GarmentFold-v0 and its adapters on import; for other packages import them first (rl-zoo: --gym-packages)."
    )


def conf_file_of(args: argparse.Namespace) -> str | Path | None:
    """``--conf-file``, else ``zoo_configs/<algo>.yml`` when it exists, else ``None`` (SB3 defaults)."""
    if args.conf_file is not None:
        return str(args.conf_file)
    candidate = default_conf_dir() / f"{args.algo}.yml"
    return candidate if candidate.is_file() else None


def resolve_from_args(args: argparse.Namespace) -> ResolvedConfig:
    """The resolved config of a command line: the YAML entry (:func:`conf_file_of`), ``-params``, ``--base``,
    ``-n`` and ``--env-kwargs``."""
    hyperparams, source = load_hyperparams(conf_file_of(args), args.env, required=args.conf_file is not None)
    overrides = parse_key_values(args.hyperparams)
    cfg = resolve(args.algo, args.env, hyperparams, overrides, base=args.base, n_timesteps=args.n_timesteps)
    if args.env_kwargs:
        cfg.env_kwargs.update(parse_key_values(args.env_kwargs))
        cfg.saved["env_kwargs"] = dict(cfg.env_kwargs)
    if args.verbose:
        print(f"Hyperparameters from {source or 'SB3 defaults (no YAML entry)'}")
    return cfg


# ------------------------------------------------------------------------------------------- the env stack


def free_cores() -> int:
    """Cores this process may use minus the ones already busy (1-minute load average), at least 0."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:
        busy = 0
    return max(0, usable - busy)


def choose_vec_env(name: str, n_envs: int) -> str:
    """Resolve ``--vec-env auto``: ``subproc`` (one process per env, envs step in parallel) when there are several
    envs and more than one free core, else ``dummy``. Other names pass through."""
    if name != "auto":
        return name
    return "subproc" if n_envs > 1 and free_cores() > 1 else "dummy"


def vec_env_class(name: str) -> type[DummyVecEnv] | type[SubprocVecEnv]:
    """``dummy``, ``subproc`` or ``ray`` (:class:`sb3_vla.ray.RayVecEnv`, needing ``pip install -e ".[ray]"``)."""
    if name == "ray":
        from sb3_vla.ray import ray_vec_env_class

        # SB3's make_vec_env annotates only its own two classes; any VecEnv class works there
        return ray_vec_env_class("--vec-env ray")  # type: ignore[return-value]
    return SubprocVecEnv if name == "subproc" else DummyVecEnv


def per_env_wrapper(wrappers: list[tuple[str, dict[str, Any]]]) -> Any:
    """One ``wrapper_class`` for ``make_vec_env`` applying the ``env_wrapper`` list in order (``None`` if empty)."""
    if not wrappers:
        return None
    classes = [(import_object(name), kwargs) for name, kwargs in wrappers]

    def wrap(env: gym.Env) -> gym.Env:
        for cls, kwargs in classes:
            env = cls(env, **kwargs)
        return env

    return wrap


def build_vec_env(
    cfg: ResolvedConfig,
    n_envs: int,
    seed: int,
    vec_env: str = "dummy",
    device: str = "auto",
    monitor_dir: str | None = None,
    training: bool = True,
    base: BaseModel | None = None,
    monitor_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """The env stack of a run: ``make_vec_env`` (with the ``env_wrapper`` list) -> the ``vec_env_wrapper`` list
    (our two batched wrappers first) -> VecNormalize (if configured), as rl-zoo builds it.

    :param base: a ready base instance (e.g. :func:`shared_base` of the train env) instead of building the
        configured spec again.
    :param training: ``False`` for an eval env: VecNormalize does not update its statistics nor scale rewards.
    """
    venv: VecEnv = make_vec_env(
        env_factory(cfg.env_id),
        n_envs=n_envs,
        seed=seed,
        env_kwargs=cfg.env_kwargs,
        vec_env_cls=vec_env_class(choose_vec_env(vec_env, n_envs)),
        monitor_dir=monitor_dir,
        wrapper_class=per_env_wrapper(cfg.other_wrappers),
        monitor_kwargs=monitor_kwargs,
    )
    if cfg.obs_wrapper_kwargs is not None:
        kwargs = dict(cfg.obs_wrapper_kwargs)
        spec = kwargs.pop("base")
        base_kwargs = dict(kwargs.pop("base_kwargs", None) or {})
        if device != "auto":
            base_kwargs.setdefault("device", device)
        if base is not None:
            spec, base_kwargs = base, {}
        venv = VecVLAObservationWrapper(venv, spec, base_kwargs=base_kwargs, **kwargs)
        venv = VecResidualActionWrapper(venv, **(cfg.residual_kwargs or {}))
    for name, kwargs in cfg.vec_env_wrappers:
        venv = import_object(name)(venv, **kwargs)
    if cfg.normalize is not None:
        kwargs = dict(cfg.normalize)
        obs_space = venv.observation_space
        if isinstance(obs_space, gym.spaces.Dict) and "norm_obs_keys" not in kwargs:
            # only float vectors: images are scaled by the policy, point clouds keep their geometry
            kwargs["norm_obs_keys"] = [
                k
                for k, s in obs_space.spaces.items()
                if isinstance(s, gym.spaces.Box) and s.dtype != np.uint8 and len(s.shape) == 1
            ]
        if not training:
            kwargs["norm_reward"] = False
        venv = VecNormalize(venv, training=training, **kwargs)
    return venv


def shared_base(venv: VecEnv) -> BaseModel | None:
    """The base of ``venv``'s :class:`VecVLAObservationWrapper`, lent for a second env stack of the same config
    (:class:`~sb3_vla.bases.shared.SharedBase`: only ``venv`` closes it); ``None`` when ``venv`` has no base or the base
    keeps per-env state (the second stack then builds its own)."""
    v: Any = venv
    while isinstance(v, VecEnvWrapper):
        if isinstance(v, VecVLAObservationWrapper):
            return SharedBase(v.base) if can_share(v.base) else None
        v = v.venv
    return None


def build_eval_env(cfg: ResolvedConfig, train_env: VecEnv, n_envs: int, seed: int, device: str = "auto") -> VecEnv:
    """The eval stack beside ``train_env``: in this process, VecNormalize frozen, the train env's base lent to it
    (:func:`shared_base`) when it can be shared, and a residual-scale schedule read at the training env's step
    count (the scale the policy is being trained at)."""
    eval_env = build_vec_env(cfg, n_envs, seed, "dummy", device, training=False, base=shared_base(train_env))
    residual = unwrap_vec_wrapper(eval_env, VecResidualActionWrapper)
    if residual is not None and unwrap_vec_wrapper(train_env, VecResidualActionWrapper) is not None:
        residual.follow_schedule_of(train_env)
    return eval_env


def set_schedule_step(venv: VecEnv, num_timesteps: int) -> None:
    """Put ``venv``'s residual-scale schedule where a model trained for ``num_timesteps`` (SB3's count: agent
    decisions x envs) left it, e.g. on resuming from a checkpoint or evaluating a saved model."""
    residual = unwrap_vec_wrapper(venv, VecResidualActionWrapper)
    if residual is not None:
        residual.set_schedule_step(int(num_timesteps) * residual.decision_interval)


# ------------------------------------------------------------------------------------------- the model


def replay_buffer_bytes(env: VecEnv, buffer_size: int, optimize_memory_usage: bool = False) -> int:
    """Bytes SB3's replay buffer allocates for ``env``'s spaces: observations and next observations (once with
    ``optimize_memory_usage``, Box observations only), actions, rewards, dones and timeouts."""
    spaces = (
        list(env.observation_space.spaces.values())
        if isinstance(env.observation_space, gym.spaces.Dict)
        else [env.observation_space]
    )
    obs = 0
    for space in spaces:
        obs += int(np.prod(space.shape or ())) * np.dtype(space.dtype).itemsize
    copies = 1 if optimize_memory_usage and not isinstance(env.observation_space, gym.spaces.Dict) else 2
    action = int(np.prod(env.action_space.shape or (1,))) * 4
    return buffer_size * (copies * obs + action + 3 * 4)  # per slot; SB3 stores (buffer_size // n_envs, n_envs, ...)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable`` on Linux), or ``None`` where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_replay_memory(env: VecEnv, buffer_size: int, optimize_memory_usage: bool = False) -> None:
    """Fail before allocating a replay buffer that cannot fit in memory, naming the size and the fix.

    SB3 allocates the whole buffer up front (``np.zeros``); with camera images at the default ``buffer_size`` of
    1e6 that is tens of GiB and a bare ``ArrayMemoryError`` deep inside SB3.
    """
    need = replay_buffer_bytes(env, buffer_size, optimize_memory_usage)
    avail = available_memory()
    if avail is None or need <= 0.8 * avail:
        return
    per_slot = need / buffer_size
    fits = int(0.5 * avail / per_slot)
    raise ValueError(
        f"the replay buffer would need {need / 2**30:.1f} GiB (buffer_size {buffer_size} x {per_slot / 1e3:.1f} KB "
        f"per transition) but only {avail / 2**30:.1f} GiB of memory is available. "
        f"Pass -params buffer_size:{max(1, fits)} (or smaller), give the env fewer / smaller camera images "
        "(env_kwargs), or set buffer_size in the YAML entry"
    )


def build_model(cfg: ResolvedConfig, env: VecEnv, seed: int, device: str, tensorboard_log: str | None) -> BaseAlgorithm:
    """The algorithm of ``cfg`` on ``env``: its policy (default ``MultiInputPolicy`` on a Dict observation), model
    kwargs and action noise (``noise_type`` / ``noise_std``); a replay buffer that cannot fit in memory fails first."""
    algo_cls = algorithms()[cfg.algo]
    kwargs = dict(cfg.model_kwargs)
    noise = kwargs.pop("action_noise_spec", None)
    if noise is not None:
        kind, std = noise
        n_act = env.action_space.shape[0]  # type: ignore[index]
        cls = {"normal": NormalActionNoise, "ornstein-uhlenbeck": OrnsteinUhlenbeckActionNoise}.get(kind)
        if cls is None:
            raise ValueError(f"noise_type must be 'normal' or 'ornstein-uhlenbeck', got {kind!r}")
        kwargs["action_noise"] = cls(mean=np.zeros(n_act), sigma=std * np.ones(n_act))
    policy = cfg.policy
    if policy is None:
        policy = "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"
    if issubclass(algo_cls, OffPolicyAlgorithm):
        check_replay_memory(env, int(kwargs.get("buffer_size", 1_000_000)), bool(kwargs.get("optimize_memory_usage")))
    try:
        return algo_cls(policy, env, seed=seed, device=device, tensorboard_log=tensorboard_log, **kwargs)
    except TypeError as e:
        raise ValueError(f"cannot build {algo_cls.__name__} with the hyperparameters {sorted(kwargs)}: {e}") from e


# ------------------------------------------------------------------------------------------- the callbacks


def build_callbacks(cfg: ResolvedConfig, stats: bool = False) -> list[BaseCallback]:
    """The YAML's ``callback`` list, built; with ``stats`` a :class:`~sb3_vla.callbacks.VLAStatsCallback` first
    unless the list has one."""
    configured: list[BaseCallback] = [import_object(name)(**kwargs) for name, kwargs in cfg.callbacks]
    if stats and not any(isinstance(c, VLAStatsCallback) for c in configured):
        return [VLAStatsCallback(), *configured]
    return configured


# ------------------------------------------------------------------------------------------- the run folder


def make_run_dir(log_folder: str, algo: str, env_id: str) -> Path:
    """Create the next free run folder ``<log_folder>/<algo>/<env>_<N>`` (rl-zoo's layout).

    :raises ValueError: the log folder is not writable (the message names it and ``--log-folder``).
    """
    safe = env_folder_name(env_id)
    root = Path(log_folder) / algo
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"log folder {str(root)!r} is not writable ({e}); pass --log-folder DIR") from e
    n = 1 + max(
        [int(p.name.rsplit("_", 1)[1]) for p in root.glob(f"{safe}_*") if p.name.rsplit("_", 1)[1].isdigit()] or [0]
    )
    path = root / f"{safe}_{n}"
    path.mkdir()
    return path


def write_run_files(params_dir: Path, cfg: ResolvedConfig, args: argparse.Namespace, module: str) -> None:
    """``config.yml`` (the resolved zoo entry), ``args.yml`` and ``command.txt`` (``python -m <module> ...``)."""
    params_dir.mkdir(parents=True, exist_ok=True)
    (params_dir / "config.yml").write_text(yaml.safe_dump(yaml_safe(cfg.saved), sort_keys=True))
    (params_dir / "args.yml").write_text(yaml.safe_dump(yaml_safe(vars(args)), sort_keys=True))
    (params_dir / "command.txt").write_text(" ".join([sys.executable, "-m", module, *sys.argv[1:]]))


def yaml_safe(value: Any) -> Any:
    """``value`` with plain YAML types only: numpy scalars as numbers, classes as dotted names, others as ``repr``."""
    if isinstance(value, dict):
        return {str(k): yaml_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [yaml_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)
