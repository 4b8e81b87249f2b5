"""A study from the command line (``python -m sb3_vla.tune``, ``python -m sb3_vla.train --optimize``): open the
storage, probe the env once, run ``--n-trials`` trials in this process, then write the best trial as a zoo YAML
entry and the trials as a CSV file.

Several processes or machines work on one study when they name the same RDB ``--storage`` and ``--study-name``
(the study is created once and loaded by the others); each samples with its own seed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sb3_vla import experiment
from sb3_vla.cli import tune_defaults
from sb3_vla.run_folder import env_folder_name
from sb3_vla.tuning.export import write_best_yaml
from sb3_vla.tuning.space import sample_residual_params
from sb3_vla.tuning.study import default_storage, make_pruner, make_sampler, make_storage, safe_url
from sb3_vla.tuning.trial import make_setup, run_trial


def tune(args: argparse.Namespace) -> optuna.Study:
    """Run ``args.n_trials`` trials (in this process) of the study named by ``args``; return the study."""
    if not args.env:
        raise ValueError("--env is required (e.g. --env Pendulum-v1)")
    storage_url = args.storage or default_storage(args.log_folder, args.algo, args.env)
    storage = make_storage(  # first: an unreachable database fails before any env is built
        storage_url,
        heartbeat_interval=getattr(args, "heartbeat_interval", 60) or None,
        grace_period=getattr(args, "heartbeat_grace", 180),
    )
    experiment.configure_threads(getattr(args, "num_threads", -1), getattr(args, "device", "auto"))
    setup = make_setup(args)
    study_name = args.study_name or f"{args.algo}-{args.env}"
    n_startup = int(getattr(args, "n_startup_trials", 5))
    # one shared study, several workers: a per-process sampler seed keeps them from proposing the same points
    sampler_seed = args.seed if args.storage is None else args.seed + os.getpid()
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=make_sampler(getattr(args, "sampler", "tpe"), sampler_seed, n_startup),
        pruner=make_pruner(getattr(args, "pruner", "median"), n_startup, setup.n_evaluations),
        direction="maximize",
        load_if_exists=True,
    )
    if "command" not in study.user_attrs:
        study.set_user_attr("command", " ".join(getattr(sys, "orig_argv", sys.argv)))
    worker = f"{socket.gethostname()}:{os.getpid()}"
    if args.verbose:
        print(f"Study {study_name!r} in {safe_url(storage_url)} ({len(study.trials)} trials so far); worker {worker}")

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)
        params = sample_residual_params(trial, setup.space)
        return run_trial(setup, params, trial)

    callbacks = []
    max_total = getattr(args, "max_total_trials", None)
    if max_total:
        callbacks.append(
            optuna.study.MaxTrialsCallback(
                max_total, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            )
        )
    if not args.verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study.optimize(objective, n_trials=args.n_trials, callbacks=callbacks, gc_after_trial=True)
    except KeyboardInterrupt:
        print("Interrupted; the finished trials are stored")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        print(f"No completed trial in study {study_name!r} yet ({len(study.trials)} trials: all pruned or failed)")
        return study
    best = study.best_trial
    best_yaml = getattr(args, "best_yaml", None) or str(
        Path(args.log_folder) / args.algo / f"{env_folder_name(args.env)}_best.yml"
    )
    path = write_best_yaml(study, setup, best_yaml, storage_url=storage_url)
    if args.verbose:
        print(f"Best trial #{best.number}: mean return {best.value:.2f}; params {best.params}")
        print(
            f"Wrote the best configuration to {path}; train it with:\n"
            f"  python -m sb3_vla.train --algo {args.algo} --env {args.env} --conf-file {path}"
        )
    try:
        report = Path(args.log_folder) / args.algo / f"{study_name}_trials.csv"
        study.trials_dataframe().to_csv(report)
    except ImportError:  # pandas missing: the study itself is stored anyway
        pass
    return study


def tune_from_train_args(args: argparse.Namespace) -> optuna.Study | None:
    """Entry point of ``python -m sb3_vla.train --optimize`` and ``python -m sb3_vla.tune``: tune with the train
    flags (tuning flags the namespace lacks take their defaults); a ``ValueError`` exits with status 2."""
    for key, value in tune_defaults().items():
        if not hasattr(args, key):
            setattr(args, key, value)
    try:
        return tune(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
