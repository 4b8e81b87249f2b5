"""Train a residual policy on a frozen base with a stock SB3 algorithm.

Usage::

    python -m sb3_vla.train --algo sac --env GarmentFold-v0 [-n STEPS] [--conf-file zoo_configs/sac.yml]
        [--base SPEC] [--seed S] [--device auto|cpu|cuda] [--log-folder DIR] [-params key:value ...]
        [--resume RUN_DIR]

Hyperparameters come from an rl-zoo-format YAML keyed by env id (default ``zoo_configs/<algo>.yml``); ``-params``
and the flags override it. The run folder ``<log-folder>/<algo>/<env>_<N>/`` receives the model
(``<env>.zip``), ``<env>/vecnormalize.pkl``, ``<env>/config.yml`` (the resolved config), ``<env>/args.yml``,
TensorBoard logs under ``tb/``, evaluations (``evaluations.npz``, ``best_model.zip``) and ``checkpoints/``.
``--optimize`` tunes instead (:mod:`sb3_vla.tuning`, as ``python -m sb3_vla.tune``).

The pieces (env stack, model, callbacks, run folder) are in :mod:`sb3_vla.experiment`, the flags in
:mod:`sb3_vla.cli`; this module runs them in order.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import set_random_seed

from sb3_vla import experiment
from sb3_vla.base_cost import BaseCostCallback
from sb3_vla.checkpoint import DiskFullError, ResumableCheckpointCallback, load_latest_checkpoint, save_checkpoint
from sb3_vla.cli import show_deprecations, train_parser
from sb3_vla.core.algos import algorithms
from sb3_vla.deprecation import moved_attribute
from sb3_vla.evaluation import FixedSeedEvalCallback, run_summary
from sb3_vla.run_checks import check_action_space, check_device, check_env_kwargs, warn_no_updates
from sb3_vla.run_folder import env_folder_name, frozen_config, resume_args, save_model_files
from sb3_vla.wrappers import BaseModelError

if TYPE_CHECKING:  # the moved names, for type checkers; at run time __getattr__ serves them with a warning
    from sb3_vla.cli import add_tune_arguments  # noqa: F401
    from sb3_vla.experiment import (  # noqa: F401
        available_memory,
        build_model,
        build_vec_env,
        check_env_id,
        check_replay_memory,
        choose_vec_env,
        configure_threads,
        free_cores,
        replay_buffer_bytes,
        resolve_env_alias,
        resolve_from_args,
        shared_base,
    )

# names that moved to sb3_vla.experiment / sb3_vla.cli; importable from here for one release, with a warning
_MOVED = {
    **{
        name: f"sb3_vla.experiment.{name}"
        for name in (
            "available_memory",
            "build_model",
            "build_vec_env",
            "check_env_id",
            "check_replay_memory",
            "choose_vec_env",
            "configure_threads",
            "free_cores",
            "replay_buffer_bytes",
            "resolve_env_alias",
            "resolve_from_args",
            "shared_base",
        )
    },
    "add_tune_arguments": "sb3_vla.cli.add_tune_arguments",
}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, _MOVED, name)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m sb3_vla.train`` (:func:`sb3_vla.cli.train_parser`)."""
    return train_parser()


class _StopOnSignal:
    """Turn SIGINT/SIGTERM into a checkpoint and a clean stop."""

    def __init__(self, ckpt: ResumableCheckpointCallback) -> None:
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
    args.env = experiment.resolve_env_alias(args.env)
    experiment.check_env_id(args.env)
    check_device(args.device)
    cfg = (
        experiment.resolve_from_args(args)
        if resume_dir is None
        else frozen_config(args, resume_dir, experiment.resolve_from_args, experiment.yaml_safe)
    )
    check_env_kwargs(cfg.env_id, cfg.env_kwargs)
    warn_no_updates(algorithms()[cfg.algo], cfg.model_kwargs, cfg.n_timesteps)
    experiment.configure_threads(getattr(args, "num_threads", -1), args.device)
    set_random_seed(args.seed)
    run_dir = resume_dir or experiment.make_run_dir(args.log_folder, args.algo, args.env)
    params_dir = run_dir / env_folder_name(args.env)
    params_dir.mkdir(parents=True, exist_ok=True)
    if resume_dir is None:
        experiment.write_run_files(params_dir, cfg, args, "sb3_vla.train")

    vec_env = experiment.choose_vec_env(args.vec_env, cfg.n_envs)
    if args.verbose and args.vec_env == "auto":
        print(
            f"Envs: {cfg.n_envs} x {vec_env} ({experiment.free_cores()} free cores; --vec-env dummy|subproc to choose)"
        )
    monitor_kwargs = {"override_existing": False} if resume_dir is not None else None  # resume appends
    env = experiment.build_vec_env(
        cfg, cfg.n_envs, args.seed, vec_env, args.device, str(run_dir / "monitor"), monitor_kwargs=monitor_kwargs
    )
    check_action_space(cfg.algo, env.action_space, cfg.env_id)
    model = experiment.build_model(cfg, env, args.seed, args.device, str(run_dir / "tb"))
    saved = experiment.yaml_safe(cfg.saved)
    ckpt = ResumableCheckpointCallback(run_dir / "checkpoints", args.save_freq, config=saved, verbose=args.verbose)
    remaining = cfg.n_timesteps
    if resume_dir is not None:
        last, meta = load_latest_checkpoint(model, run_dir / "checkpoints")
        remaining = cfg.n_timesteps - int(meta["num_timesteps"])
        experiment.set_schedule_step(env, int(meta["num_timesteps"]))  # a residual-scale schedule goes on from there
        print(f"Resuming from {last} at step {meta['num_timesteps']} ({max(remaining, 0)} steps to go)")

    callbacks: list[BaseCallback] = [ckpt, *experiment.build_callbacks(cfg, stats=True)]
    eval_env = None
    eval_cb: FixedSeedEvalCallback | None = None
    if args.eval_freq > 0:
        eval_seed = args.seed + 10_000 if getattr(args, "eval_seed", None) is None else args.eval_seed
        eval_env = experiment.build_eval_env(cfg, env, args.n_eval_envs, eval_seed, args.device)
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
        path = save_checkpoint(model, run_dir / "checkpoints", saved)
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
    save_checkpoint(model, run_dir / "checkpoints", saved)
    if args.verbose:
        print(f"Trained {model.num_timesteps} steps in {time.time() - t0:.0f} s; saved to {run_dir}")
        print(run_summary(eval_cb, cost_cb))
    return run_dir


def main(argv: list[str] | None = None) -> None:
    show_deprecations()
    args = build_parser().parse_args(argv)
    if args.optimize:
        from sb3_vla.tuning import tune_from_train_args

        tune_from_train_args(args)
        return
    try:
        train(args)
    except (ValueError, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
