"""Optuna hyperparameter tuning with a residual-aware search space.

Usage::

    python -m sb3_vla.tune --algo sac --env Pendulum-v1 -n 20000 --n-trials 50 [--storage URL] [--study-name NAME]
        [--sampler tpe|random] [--pruner median|halving|none] [--n-evaluations 4] [--best-yaml PATH]
        [all the flags of python -m sb3_vla.train: --conf-file, --base, -params, --seed, --device ...]
    python -m sb3_vla.train --algo sac --env GarmentFold-v0 --optimize --n-trials 50 --storage URL   # same thing

The search space is the algorithm's own hyperparameters (rl-zoo's ranges) plus the residual knobs: the residual
scale (a factor on the configured ``residual_scale``), the base's ``query_interval``, whether the policy sees the
base action (``keep_base_in_obs``) and the base's embedding (``exclude_keys``), and the extractor sizes
(:mod:`sb3_vla.tuning.space`).

Storage: a SQLite file ``<log-folder>/<algo>/<env>_optuna.db`` by default; a PostgreSQL (or MySQL) URL lets several
processes or machines work on one study (start the same command on each; the study is created once and loaded
by the others). With an RDB storage each running trial sends a heartbeat; a worker that dies mid-trial leaves its
trial RUNNING until another worker starts a trial after ``--heartbeat-grace`` seconds, which marks it FAIL. Trials
whose training raises ``AssertionError`` / ``ValueError`` (NaN parameters, NaN actions) or whose evaluation return
is not finite are recorded as PRUNED, like rl-zoo does.

The best trial is written as a ready zoo YAML entry (``--best-yaml``, default
``<log-folder>/<algo>/<env>_best.yml``) that both ``python -m sb3_vla.train --conf-file`` and
``python -m rl_zoo3.train --conf-file`` read.

rl-zoo: ``python -m sb3_vla.tuning.zoo`` is rl-zoo's train command with
:class:`~sb3_vla.tuning.zoo.ResidualExperimentManager`, which tunes the residual knobs too::

    python -m sb3_vla.tuning.zoo --algo sac --env Pendulum-v1 --conf-file zoo_configs/sac.yml \\
        --optimize --n-trials 20 -n 5000

The code lives in :mod:`sb3_vla.tuning`; the names this module had are importable from here for one release, with
a ``DeprecationWarning``.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from sb3_vla.cli import show_deprecations, tune_parser
from sb3_vla.deprecation import moved_attribute

# name here -> its new home
_MOVED = {
    **{
        name: f"sb3_vla.tuning.space.{name}"
        for name in (
            "ACTIVATIONS",
            "ENV_KNOBS",
            "OFF_POLICY",
            "OFF_POLICY_NET_ARCH",
            "ON_POLICY",
            "ON_POLICY_NET_ARCH",
            "TUNABLE",
            "VECTOR_MLP",
            "SearchSpace",
            "convert_residual_params",
            "sample_residual_params",
        )
    },
    **{
        name: f"sb3_vla.tuning.study.{name}"
        for name in ("TrialEvalCallback", "default_storage", "make_pruner", "make_sampler", "make_storage")
    },
    "_safe_url": "sb3_vla.tuning.study.safe_url",
    **{name: f"sb3_vla.tuning.trial.{name}" for name in ("TuneSetup", "make_setup", "run_trial")},
    **{name: f"sb3_vla.tuning.export.{name}" for name in ("best_trial_entry", "write_best_yaml")},
    "_py_expr": "sb3_vla.tuning.export.py_expr",
    **{name: f"sb3_vla.tuning.tuner.{name}" for name in ("tune", "tune_from_train_args")},
}


def register_zoo_samplers() -> None:
    """Deprecated: rl-zoo's sampler tables are no longer patched; :class:`sb3_vla.tuning.zoo.ResidualExperimentManager`
    (``python -m sb3_vla.tuning.zoo``) tunes the residual knobs through rl-zoo's own class. Does nothing."""
    warnings.warn(
        "sb3_vla.tune.register_zoo_samplers does nothing now: rl-zoo's sampler tables are left as they are. Tune "
        "the residual knobs inside rl-zoo with python -m sb3_vla.tuning.zoo (rl-zoo's train flags) or "
        "sb3_vla.tuning.zoo.ResidualExperimentManager",
        DeprecationWarning,
        stacklevel=2,
    )


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, _MOVED, name)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m sb3_vla.tune`` (:func:`sb3_vla.cli.tune_parser`)."""
    return tune_parser()


def main(argv: list[str] | None = None) -> None:
    from sb3_vla.tuning import tune_from_train_args

    show_deprecations()
    tune_from_train_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        main()
