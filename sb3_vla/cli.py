"""The command-line flags of ``python -m sb3_vla.train`` and ``python -m sb3_vla.tune``, in argument groups the two
commands share: the experiment (algorithm, env, YAML, overrides, devices), evaluation, the run (checkpoints,
resume), the study and the tuner.

>>> args = train_parser().parse_args(["--env", "Pendulum-v1", "-params", "gamma:0.9"])
>>> args.algo, args.hyperparams, args.optimize
('sac', ['gamma:0.9'], False)
>>> tune_parser().parse_args(["--env", "Pendulum-v1"]).eval_episodes  # a shorter evaluation per trial
5
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from sb3_vla.core.algos import algorithms

TRAIN_DESCRIPTION = "Train a residual policy on a frozen base with a stock SB3 algorithm."
TUNE_DESCRIPTION = "Optuna hyperparameter tuning with a residual-aware search space."


def add_experiment_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """What to run: algorithm, env, budget, YAML and overrides, base, seed, devices, env runners."""
    g = p.add_argument_group("experiment")
    g.add_argument("--algo", required=False, default="sac", choices=sorted(algorithms()), help="RL algorithm")
    g.add_argument("--env", required=False, help="gymnasium env id (e.g. GarmentFold-v0, Pendulum-v1)")
    g.add_argument("-n", "--n-timesteps", type=int, default=None, help="total env steps (overrides the YAML; > 0)")
    g.add_argument(
        "--conf-file", default=None, help="rl-zoo-format YAML keyed by env id (default zoo_configs/<algo>.yml)"
    )
    g.add_argument(
        "--base", default=None, help="frozen base spec: zero, scripted, hf:..., clip:..., module:..., sb3:..."
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (policy and base)")
    g.add_argument("-f", "--log-folder", default="logs")
    g.add_argument("-params", "--hyperparams", nargs="+", default=None, metavar="KEY:VALUE", help="overrides")
    g.add_argument("--env-kwargs", nargs="+", default=None, metavar="KEY:VALUE", help="env constructor kwargs")
    g.add_argument(
        "--vec-env",
        choices=["auto", "dummy", "subproc", "ray"],
        default="auto",
        help="how the training envs run: auto (default) = subproc when n_envs > 1 and more than one core is free, "
        "else dummy (in this process); ray = one Ray actor per env (pip install -e '.[ray]')",
    )
    return p


def add_eval_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """How and how often the policy is evaluated (the same seeded episodes every time)."""
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-freq", type=int, default=10_000, help="evaluate every N env steps (<= 0: never)")
    g.add_argument(
        "--eval-episodes",
        type=int,
        default=20,
        help="episodes per evaluation, the same seeded ones every time (20: 5 points of success each)",
    )
    g.add_argument("--eval-seed", type=int, default=None, help="reset seed of the first eval episode (seed + 10000)")
    g.add_argument("--n-eval-envs", type=int, default=1)
    return p


def add_run_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Checkpoints, resume and the display of a run."""
    g = p.add_argument_group("run")
    g.add_argument("--save-freq", type=int, default=10_000, help="checkpoint every N env steps (<= 0: never)")
    g.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    g.add_argument(
        "--allow-config-change",
        action="store_true",
        help="on --resume: take the YAML / -params as they are now even where they differ from the run's config",
    )
    g.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="on --resume: allow a run folder whose saved config loads files with trust_remote_code",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    g.add_argument(
        "--num-threads",
        type=int,
        default=-1,
        help="torch CPU threads (default: 1 on CPU, where small RL nets gain nothing from more)",
    )
    g.add_argument("--verbose", type=int, default=1)
    return p


def add_study_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The study flags ``python -m sb3_vla.train --optimize`` has too."""
    g = p.add_argument_group("study")
    g.add_argument(
        "--optimize",
        "--optimize-hyperparameters",
        dest="optimize",
        action="store_true",
        help="tune hyperparameters with Optuna (see python -m sb3_vla.tune)",
    )
    g.add_argument("--n-trials", type=int, default=10)
    g.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite file in the log folder)")
    g.add_argument("--study-name", default=None)
    return p


def add_tune_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The tuning flags: sampler, pruner, evaluations per trial, the best-trial YAML, heartbeats, search space."""
    g = p.add_argument_group("tuning")
    g.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    g.add_argument("--pruner", choices=["median", "halving", "none"], default="median")
    g.add_argument("--n-startup-trials", type=int, default=5, help="random trials before TPE / pruning start")
    g.add_argument("--n-evaluations", type=int, default=4, help="evaluations per trial (pruning points)")
    g.add_argument("--max-total-trials", type=int, default=None, help="stop when the study has this many trials")
    g.add_argument("--best-yaml", default=None, help="write the best trial here (default <log>/<algo>/<env>_best.yml)")
    g.add_argument(
        "--final-timesteps",
        type=int,
        default=None,
        help="n_timesteps written into the best-trial YAML (default: the YAML entry's; -n is each trial's budget)",
    )
    g.add_argument("--heartbeat-interval", type=int, default=60, help="seconds; 0: no heartbeat (RDB storages)")
    g.add_argument("--heartbeat-grace", type=int, default=180, help="seconds before a silent RUNNING trial is FAIL")
    g.add_argument("--query-intervals", type=int, nargs="+", default=None, help="query_interval choices (1 2 4)")
    return p


def train_parser(
    prog: str = "python -m sb3_vla.train", description: str = TRAIN_DESCRIPTION
) -> argparse.ArgumentParser:
    """The parser of ``python -m sb3_vla.train`` (with the study and tuning flags, for ``--optimize``)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    for add in (add_experiment_arguments, add_eval_arguments, add_run_arguments, add_study_arguments):
        add(p)
    return add_tune_arguments(p)


def tune_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m sb3_vla.tune``: the train flags with 5 episodes per evaluation and 10 trials."""
    p = train_parser("python -m sb3_vla.tune", TUNE_DESCRIPTION)
    p.set_defaults(eval_episodes=5, n_trials=10)
    return p


def tune_defaults() -> dict[str, Any]:
    """The tuning flags' defaults, for a namespace that lacks them."""
    return vars(add_tune_arguments(argparse.ArgumentParser()).parse_args([]))


def show_deprecations() -> None:
    """Show sb3-vla's ``DeprecationWarning`` s (an older YAML form, a moved name) on the command line: Python hides
    those raised outside ``__main__`` by default."""
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"sb3_vla(\.|$)")
