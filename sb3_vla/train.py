"""Train a residual policy on a frozen base with a stock SB3 algorithm.

Usage::

    python -m sb3_vla.train --algo sac --env GarmentFold-v0 [-n STEPS] [--conf-file zoo_configs/sac.yml]
        [--base SPEC] [--seed S] [--device auto|cpu|cuda] [--log-folder DIR] [-params key:value ...]
        [--resume RUN_DIR]

Hyperparameters come from an rl-zoo-format YAML keyed by env id (default ``zoo_configs/<algo>.yml``); ``-params``
and the flags override it. The run folder ``<log-folder>/<algo>/<env>_<N>/`` receives the model
(``<env>.zip``), ``<env>/vecnormalize.pkl``, ``<env>/config.yml`` (the resolved config), ``<env>/args.yml``,
TensorBoard logs under ``tb/``, evaluations (``evaluations.npz``, ``best_model.zip``) and ``checkpoints/``.
"""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper, VecNormalize

import sb3_vla  # noqa: F401 - registers the env ids
from sb3_vla.base_cost import BaseCostCallback
from sb3_vla.bases.base import BaseModel
from sb3_vla.bases.shared import SharedBase, can_share
from sb3_vla.callbacks import VLAStatsCallback
from sb3_vla.checkpoint import CheckpointCallback, DiskFullError, load_latest_checkpoint, save_checkpoint
from sb3_vla.config import ResolvedConfig, default_conf_dir, load_hyperparams, resolve
from sb3_vla.core.algos import algorithms
from sb3_vla.core.imports import import_object
from sb3_vla.core.options import parse_key_values
from sb3_vla.env_util import env_factory
from sb3_vla.evaluation import FixedSeedEvalCallback, run_summary
from sb3_vla.run_checks import check_action_space, check_device, check_env_kwargs, warn_no_updates
from sb3_vla.run_folder import frozen_config, resume_args, save_model_files
from sb3_vla.wrappers import BaseModelError, VecResidualActionWrapper, VecVLAObservationWrapper


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sb3_vla.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", required=False, default="sac", choices=sorted(algorithms()), help="RL algorithm")
    p.add_argument("--env", required=False, help="gymnasium env id (e.g. GarmentFold-v0, Pendulum-v1)")
    p.add_argument("-n", "--n-timesteps", type=int, default=None, help="total env steps (overrides the YAML; > 0)")
    p.add_argument(
        "--conf-file", default=None, help="rl-zoo-format YAML keyed by env id (default zoo_configs/<algo>.yml)"
    )
    p.add_argument(
        "--base", default=None, help="frozen base spec: zero, scripted, hf:..., clip:..., module:..., sb3:..."
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (policy and base)")
    p.add_argument("-f", "--log-folder", default="logs")
    p.add_argument("-params", "--hyperparams", nargs="+", default=None, metavar="KEY:VALUE", help="overrides")
    p.add_argument("--env-kwargs", nargs="+", default=None, metavar="KEY:VALUE", help="env constructor kwargs")
    p.add_argument(
        "--vec-env",
        choices=["auto", "dummy", "subproc", "ray"],
        default="auto",
        help="how the training envs run: auto (default) = subproc when n_envs > 1 and more than one core is free, "
        "else dummy (in this process); ray = one Ray actor per env (pip install -e '.[ray]')",
    )
    p.add_argument("--eval-freq", type=int, default=10_000, help="evaluate every N env steps (<= 0: never)")
    p.add_argument(
        "--eval-episodes",
        type=int,
        default=20,
        help="episodes per evaluation, the same seeded ones every time (20: 5 points of success each)",
    )
    p.add_argument("--eval-seed", type=int, default=None, help="reset seed of the first eval episode (seed + 10000)")
    p.add_argument("--n-eval-envs", type=int, default=1)
    p.add_argument("--save-freq", type=int, default=10_000, help="checkpoint every N env steps (<= 0: never)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="on --resume: take the YAML / -params as they are now even where they differ from the run's config",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="on --resume: allow a run folder whose saved config loads files with trust_remote_code",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.add_argument(
        "--num-threads",
        type=int,
        default=-1,
        help="torch CPU threads (default: 1 on CPU, where small RL nets gain nothing from more)",
    )
    p.add_argument("--verbose", type=int, default=1)
    p.add_argument(
        "--optimize",
        "--optimize-hyperparameters",
        dest="optimize",
        action="store_true",
        help="tune hyperparameters with Optuna (see python -m sb3_vla.tune)",
    )
    p.add_argument("--n-trials", type=int, default=10)
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite file in the log folder)")
    p.add_argument("--study-name", default=None)
    return add_tune_arguments(p)


def add_tune_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the tuning flags that ``python -m sb3_vla.train`` does not have."""
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    p.add_argument("--pruner", choices=["median", "halving", "none"], default="median")
    p.add_argument("--n-startup-trials", type=int, default=5, help="random trials before TPE / pruning start")
    p.add_argument("--n-evaluations", type=int, default=4, help="evaluations per trial (pruning points)")
    p.add_argument("--max-total-trials", type=int, default=None, help="stop when the study has this many trials")
    p.add_argument("--best-yaml", default=None, help="write the best trial here (default <log>/<algo>/<env>_best.yml)")
    p.add_argument(
        "--final-timesteps",
        type=int,
        default=None,
        help="n_timesteps written into the best-trial YAML (default: the YAML entry's; -n is each trial's budget)",
    )
    p.add_argument("--heartbeat-interval", type=int, default=60, help="seconds; 0: no heartbeat (RDB storages)")
    p.add_argument("--heartbeat-grace", type=int, default=180, help="seconds before a silent RUNNING trial is FAIL")
    p.add_argument("--query-intervals", type=int, nargs="+", default=None, help="query_interval choices (1 2 4)")
    return p


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


def _vec_cls(name: str) -> type[DummyVecEnv] | type[SubprocVecEnv]:
    """``dummy``, ``subproc`` or ``ray`` (:class:`sb3_vla.ray.RayVecEnv`, needing ``pip install -e ".[ray]"``)."""
    if name == "ray":
        from sb3_vla.ray import ray_vec_env_class

        # SB3's make_vec_env annotates only its own two classes; any VecEnv class works there
        return ray_vec_env_class("--vec-env ray")  # type: ignore[return-value]
    return SubprocVecEnv if name == "subproc" else DummyVecEnv


def _per_env_wrapper(wrappers: list[tuple[str, dict[str, Any]]]) -> Any:
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
    """The env stack of a run: ``make_vec_env`` -> batched VLA wrappers -> VecNormalize (if configured).

    :param base: a ready base instance (e.g. :func:`shared_base` of the train env) instead of building the
        configured spec again.
    """
    venv: VecEnv = make_vec_env(
        env_factory(cfg.env_id),
        n_envs=n_envs,
        seed=seed,
        env_kwargs=cfg.env_kwargs,
        vec_env_cls=_vec_cls(choose_vec_env(vec_env, n_envs)),
        monitor_dir=monitor_dir,
        wrapper_class=_per_env_wrapper(cfg.other_wrappers),
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


def _callbacks(cfg: ResolvedConfig) -> list[BaseCallback]:
    return [import_object(name)(**kwargs) for name, kwargs in cfg.callbacks]


def _run_dir(log_folder: str, algo: str, env_id: str) -> Path:
    safe = env_id.replace("/", "-").replace(":", "-")
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


def resolve_from_args(args: argparse.Namespace) -> ResolvedConfig:
    conf = args.conf_file
    if conf is None:
        candidate = default_conf_dir() / f"{args.algo}.yml"
        conf = candidate if candidate.is_file() else None
    hyperparams, source = load_hyperparams(conf, args.env, required=args.conf_file is not None)
    overrides = parse_key_values(args.hyperparams)
    cfg = resolve(args.algo, args.env, hyperparams, overrides, base=args.base, n_timesteps=args.n_timesteps)
    if args.env_kwargs:
        cfg.env_kwargs.update(parse_key_values(args.env_kwargs))
        cfg.saved["env_kwargs"] = dict(cfg.env_kwargs)
    if args.verbose:
        print(f"Hyperparameters from {source or 'SB3 defaults (no YAML entry)'}")
    return cfg


class _StopOnSignal:
    """Turn SIGINT/SIGTERM into a checkpoint and a clean stop."""

    def __init__(self, ckpt: CheckpointCallback) -> None:
        self.ckpt = ckpt
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.ckpt.stop_requested is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.ckpt.stop_requested = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(args: argparse.Namespace) -> Path:
    """Run one training; return the run folder."""
    resume_dir = Path(args.resume) if args.resume else None
    if resume_dir is not None:
        args = resume_args(args, resume_dir, build_parser().parse_args([]))
    if not args.env:
        raise ValueError("--env is required (e.g. --env GarmentFold-v0)")
    args.env = resolve_env_alias(args.env)
    check_env_id(args.env)
    check_device(args.device)
    cfg = (
        resolve_from_args(args)
        if resume_dir is None
        else frozen_config(args, resume_dir, resolve_from_args, _yaml_safe)
    )
    check_env_kwargs(cfg.env_id, cfg.env_kwargs)
    warn_no_updates(algorithms()[cfg.algo], cfg.model_kwargs, cfg.n_timesteps)
    configure_threads(getattr(args, "num_threads", -1), args.device)
    set_random_seed(args.seed)
    run_dir = resume_dir or _run_dir(args.log_folder, args.algo, args.env)
    params_dir = run_dir / args.env.replace("/", "-").replace(":", "-")
    params_dir.mkdir(parents=True, exist_ok=True)
    if resume_dir is None:
        (params_dir / "config.yml").write_text(yaml.safe_dump(_yaml_safe(cfg.saved), sort_keys=True))
        (params_dir / "args.yml").write_text(yaml.safe_dump(_yaml_safe(vars(args)), sort_keys=True))
        (params_dir / "command.txt").write_text(" ".join([sys.executable, "-m", "sb3_vla.train", *sys.argv[1:]]))

    vec_env = choose_vec_env(args.vec_env, cfg.n_envs)
    if args.verbose and args.vec_env == "auto":
        print(f"Envs: {cfg.n_envs} x {vec_env} ({free_cores()} free cores; --vec-env dummy|subproc to choose)")
    monitor_kwargs = {"override_existing": False} if resume_dir is not None else None  # resume appends
    env = build_vec_env(
        cfg, cfg.n_envs, args.seed, vec_env, args.device, str(run_dir / "monitor"), monitor_kwargs=monitor_kwargs
    )
    check_action_space(cfg.algo, env.action_space, cfg.env_id)
    model = build_model(cfg, env, args.seed, args.device, str(run_dir / "tb"))
    ckpt = CheckpointCallback(
        run_dir / "checkpoints", args.save_freq, config=_yaml_safe(cfg.saved), verbose=args.verbose
    )
    remaining = cfg.n_timesteps
    if resume_dir is not None:
        last, meta = load_latest_checkpoint(model, run_dir / "checkpoints")
        remaining = cfg.n_timesteps - int(meta["num_timesteps"])
        print(f"Resuming from {last} at step {meta['num_timesteps']} ({max(remaining, 0)} steps to go)")

    configured = _callbacks(cfg)
    stats = [] if any(isinstance(c, VLAStatsCallback) for c in configured) else [VLAStatsCallback()]
    callbacks: list[BaseCallback] = [ckpt, *stats, *configured]
    eval_env = None
    eval_cb: FixedSeedEvalCallback | None = None
    if args.eval_freq > 0:
        eval_seed = args.seed + 10_000 if getattr(args, "eval_seed", None) is None else args.eval_seed
        eval_env = build_vec_env(
            cfg, args.n_eval_envs, eval_seed, "dummy", args.device, training=False, base=shared_base(env)
        )
        eval_cb = FixedSeedEvalCallback(
            eval_env,
            eval_seed=eval_seed,
            n_eval_episodes=args.eval_episodes,
            eval_freq=max(args.eval_freq // cfg.n_envs, 1),
            log_path=str(run_dir),
            best_model_save_path=str(run_dir),
            deterministic=True,
            verbose=args.verbose,
        )
        callbacks.append(eval_cb)
    cost_cb = BaseCostCallback(eval_env)
    callbacks.append(cost_cb)
    t0 = time.time()
    interrupted = False
    try:
        with _StopOnSignal(ckpt):
            if remaining > 0:
                model.learn(
                    remaining,
                    callback=CallbackList(callbacks),
                    progress_bar=args.progress,
                    reset_num_timesteps=resume_dir is None,
                    tb_log_name="run",
                )
            interrupted = ckpt.stop_requested is not None
            if eval_cb is not None and model.num_timesteps > 0 and not interrupted:
                eval_cb.evaluate_now()  # the curve and the summary end at the final policy
    except BaseModelError as e:
        path = save_checkpoint(model, run_dir / "checkpoints", _yaml_safe(cfg.saved))
        hint = str(e).replace("nonfinite='zero'", "-params nonfinite:zero")  # the CLI spelling of the option
        raise BaseModelError(
            f"{hint}\nTraining stopped at step {model.num_timesteps}; checkpoint saved to {path}. "
            f"Resume with: python -m sb3_vla.train --resume {run_dir}"
        ) from e
    finally:
        env.close()
        if eval_env is not None:
            eval_env.close()
    if interrupted:
        print(f"Stopped by signal at step {model.num_timesteps}; resume with --resume {run_dir}")
        sys.exit(128 + int(ckpt.stop_requested or 0))
    save_model_files(model, run_dir, params_dir, args.verbose)
    save_checkpoint(model, run_dir / "checkpoints", _yaml_safe(cfg.saved))
    if args.verbose:
        print(f"Trained {model.num_timesteps} steps in {time.time() - t0:.0f} s; saved to {run_dir}")
        print(run_summary(eval_cb, cost_cb))
    return run_dir


def _yaml_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _yaml_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_yaml_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.optimize:
        from sb3_vla.tune import tune_from_train_args

        tune_from_train_args(args)
        return
    try:
        train(args)
    except (ValueError, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
