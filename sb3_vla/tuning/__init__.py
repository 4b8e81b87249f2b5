"""Optuna tuning with a residual-aware search space, in one module per concern:

- :mod:`sb3_vla.tuning.space`: what to sample (the algorithm's hyperparameters, the residual knobs, extractor sizes);
- :mod:`sb3_vla.tuning.study`: the Optuna storage, sampler, pruner and the trial's evaluation callback;
- :mod:`sb3_vla.tuning.trial`: one trial, trained through :mod:`sb3_vla.experiment`;
- :mod:`sb3_vla.tuning.export`: the best trial as a zoo YAML entry;
- :mod:`sb3_vla.tuning.tuner`: a study from the command line (``python -m sb3_vla.tune``);
- :mod:`sb3_vla.tuning.zoo`: rl-zoo's ``ExperimentManager`` with this search space (``python -m sb3_vla.tuning.zoo``,
  needs ``rl_zoo3``; not imported here).
"""

from sb3_vla.tuning.export import best_trial_entry, py_expr, write_best_yaml
from sb3_vla.tuning.space import (
    ACTIVATIONS,
    ENV_KNOBS,
    OFF_POLICY,
    OFF_POLICY_NET_ARCH,
    ON_POLICY,
    ON_POLICY_NET_ARCH,
    TUNABLE,
    VECTOR_MLP,
    SearchSpace,
    convert_residual_params,
    sample_residual_params,
)
from sb3_vla.tuning.study import TrialEvalCallback, default_storage, make_pruner, make_sampler, make_storage, safe_url
from sb3_vla.tuning.trial import TuneSetup, make_setup, run_trial, setup_from_config
from sb3_vla.tuning.tuner import tune, tune_from_train_args

__all__ = [
    "ACTIVATIONS",
    "ENV_KNOBS",
    "OFF_POLICY",
    "OFF_POLICY_NET_ARCH",
    "ON_POLICY",
    "ON_POLICY_NET_ARCH",
    "TUNABLE",
    "VECTOR_MLP",
    "SearchSpace",
    "TrialEvalCallback",
    "TuneSetup",
    "best_trial_entry",
    "convert_residual_params",
    "default_storage",
    "make_pruner",
    "make_sampler",
    "make_setup",
    "make_storage",
    "py_expr",
    "run_trial",
    "safe_url",
    "sample_residual_params",
    "setup_from_config",
    "tune",
    "tune_from_train_args",
    "write_best_yaml",
]
