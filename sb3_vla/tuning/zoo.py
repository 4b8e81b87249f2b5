"""rl-zoo with the residual search space, through rl-zoo's own class: :class:`ResidualExperimentManager` is an
``rl_zoo3.exp_manager.ExperimentManager`` whose ``objective`` samples the residual knobs too
(:mod:`sb3_vla.tuning.space`) and trains each trial through :mod:`sb3_vla.experiment`, the stack ``sb3_vla.train``
builds from the same YAML.
Nothing of rl-zoo is patched: its sampler tables stay as they are, and ``python -m rl_zoo3.train --optimize`` keeps
using rl-zoo's own samplers.

``python -m sb3_vla.tuning.zoo`` is rl-zoo's train command (the same flags, except Weights & Biases tracking) run
with this manager::

    python -m sb3_vla.tuning.zoo --algo sac --env Pendulum-v1 --conf-file zoo_configs/sac.yml \\
        --optimize --n-trials 20 -n 5000 --storage sqlite:///logs/zoo.db --study-name residual-sac

The manager also reads what plain rl-zoo cannot: ``-params`` residual knobs (``residual_scale:0.5``,
``query_interval:2`` ...) go into our wrappers' kwargs, and our wrappers listed under ``env_wrapper`` (the older
YAML form) are read as their batched versions under ``vec_env_wrapper`` (with a ``DeprecationWarning``).
``--trial-id`` loads a trial of a residual study with its knobs.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import uuid
from collections import OrderedDict
from typing import Any

import numpy as np
import optuna
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER
from rl_zoo3.utils import ALGOS
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_vla import experiment
from sb3_vla.cli import show_deprecations
from sb3_vla.config import load_hyperparams, resolve, wrapper_stack
from sb3_vla.core.options import parse_key_values
from sb3_vla.literal import parse_config_string
from sb3_vla.tuning.space import TUNABLE, convert_residual_params, sample_residual_params
from sb3_vla.tuning.trial import TuneSetup, run_trial, setup_from_config

__all__ = ["ResidualExperimentManager", "main", "zoo_entry", "zoo_parser"]


def zoo_entry(hyperparams: dict[str, Any], env_id: str) -> dict[str, Any]:
    """A zoo entry as rl-zoo should build it: our wrappers under ``vec_env_wrapper`` (translated from
    ``env_wrapper``, with a ``DeprecationWarning``) and the residual knobs given at the top level (``-params``, a
    loaded trial) moved into their kwargs.

    >>> zoo_entry({"vec_env_wrapper": [{"sb3_vla.wrappers.VecVLAObservationWrapper": {"base": "zero"}}],
    ...            "residual_scale": 0.5, "gamma": 0.9}, "Pendulum-v1")["vec_env_wrapper"][1]
    {'sb3_vla.wrappers.VecResidualActionWrapper': {'residual_scale': 0.5}}
    """
    entry = dict(hyperparams)
    stack = wrapper_stack(env_id, entry.pop("env_wrapper", None), entry.pop("vec_env_wrapper", None))
    stack.route(entry)
    entry.update(stack.entry())
    return entry


def _is_residual(entry: dict[str, Any], env_id: str) -> bool:
    return wrapper_stack(env_id, None, entry.get("vec_env_wrapper")).obs is not None


class ResidualExperimentManager(ExperimentManager):
    """rl-zoo's experiment manager with the residual-aware search space for envs with our wrappers (others are
    tuned by rl-zoo's own sampler).

    Each trial samples :func:`~sb3_vla.tuning.space.sample_residual_params` and trains with
    :func:`~sb3_vla.tuning.trial.run_trial` on the manager's YAML entry, budget (``-n``), evaluation
    (``--eval-episodes``, ``--n-evaluations``, ``--n-eval-envs``), seed and device; rl-zoo's
    ``hyperparameters_optimization`` runs the study (storage, sampler, pruner, ``--n-jobs``, its report).

    :param query_intervals: choices for the base's ``query_interval``; the other arguments are rl-zoo's.

    Example::

        manager = ResidualExperimentManager(args, "sac", "Pendulum-v1", "logs", n_timesteps=5000,
                                            optimize_hyperparameters=True, n_trials=20, config="zoo_configs/sac.yml")
        manager.setup_experiment()
        manager.hyperparameters_optimization()
    """

    def __init__(self, *args: Any, query_intervals: tuple[int, ...] = (1, 2, 4), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.query_intervals = tuple(query_intervals)
        self.entry: dict[str, Any] = {}  # the YAML entry with its overrides, our wrappers under vec_env_wrapper
        self._tune_setup: TuneSetup | None = None

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        hyperparams, _ = super().read_hyperparameters()
        entry = zoo_entry(hyperparams, self.env_name.gym_id)
        self.entry = copy.deepcopy(entry)  # rl-zoo consumes the returned dict in place
        return entry, OrderedDict((key, entry[key]) for key in sorted(entry))

    def load_trial(
        self, storage: str, study_name: str, trial_id: int | None = None, convert: bool = True
    ) -> dict[str, Any]:
        params = super().load_trial(storage, study_name, trial_id, convert=False)
        if not convert:
            return params
        if "residual_scale_factor" not in params and "vector_mlp" not in params:  # a study of rl-zoo's sampler
            return HYPERPARAMS_CONVERTER[self.algo](params)
        env_id = self.env_name.gym_id
        entry, _ = load_hyperparams(self.config, env_id)
        entry = zoo_entry({**entry, **(self.custom_hyperparams or {})}, env_id)
        residual = wrapper_stack(env_id, None, entry.get("vec_env_wrapper")).residual or {}
        policy_kwargs = parse_config_string(entry.get("policy_kwargs"), "policy_kwargs")
        return convert_residual_params(
            params,
            self.algo,
            policy_kwargs if isinstance(policy_kwargs, dict) else None,
            residual.get("residual_scale"),
            int(entry.get("n_envs", 1)),
        )  # the knobs (residual_scale ...) at the top level: read_hyperparameters moves them into the wrappers

    def tune_setup(self) -> TuneSetup:
        """The fixed part of every trial, built once (one env is probed for its observation keys)."""
        if self._tune_setup is None:
            env_id = self.env_name.gym_id
            cfg = resolve(self.algo, env_id, self.entry, {}, n_timesteps=self.n_timesteps)
            cfg.env_kwargs.update(self.env_kwargs)
            self._tune_setup = setup_from_config(
                cfg,
                self.entry,
                {},
                seed=self.seed,
                device=str(self.device),
                vec_env="subproc" if self.vec_env_class is SubprocVecEnv else "dummy",
                n_eval_envs=self.n_eval_envs,
                eval_episodes=self.n_eval_episodes,
                n_evaluations=self.n_evaluations or 1,
                query_intervals=self.query_intervals,
                env_kwargs=self.env_kwargs,
            )
        return self._tune_setup

    def objective(self, trial: optuna.Trial) -> float:
        if self.algo not in TUNABLE or not _is_residual(self.entry, self.env_name.gym_id):
            return super().objective(trial)
        setup = self.tune_setup()
        return run_trial(setup, sample_residual_params(trial, setup.space), trial)


def zoo_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m rl_zoo3.train`` (rl_zoo3 2.9) but Weights & Biases tracking, plus
    ``--query-intervals``; ``-params`` / ``--env-kwargs`` values are read with sb3-vla's option grammar."""
    p = argparse.ArgumentParser(prog="python -m sb3_vla.tuning.zoo", description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", default="ppo", choices=list(ALGOS), help="RL algorithm")
    p.add_argument("--env", default="CartPole-v1", help="environment ID")
    p.add_argument("-tb", "--tensorboard-log", default="", help="Tensorboard log dir")
    p.add_argument("-i", "--trained-agent", default="", help="Path to a pretrained agent to continue training")
    p.add_argument("--truncate-last-trajectory", default=True, type=bool)
    p.add_argument("-n", "--n-timesteps", default=-1, type=int, help="Overwrite the number of timesteps")
    p.add_argument("--num-threads", default=-1, type=int, help="torch threads (default: 1 on CPU)")
    p.add_argument("--log-interval", default=-1, type=int)
    p.add_argument("--eval-freq", default=25000, type=int, help="evaluate every n steps (negative: never)")
    p.add_argument("--optimization-log-path", type=str)
    p.add_argument("--eval-episodes", default=5, type=int)
    p.add_argument("--n-eval-envs", default=1, type=int)
    p.add_argument("--save-freq", default=-1, type=int)
    p.add_argument("--save-replay-buffer", action="store_true")
    p.add_argument("-f", "--log-folder", default="logs")
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--vec-env", default="dummy", choices=["dummy", "subproc"])
    p.add_argument("--device", default="auto")
    p.add_argument("--n-trials", type=int, default=500)
    p.add_argument("--max-total-trials", type=int, default=None)
    p.add_argument("-optimize", "--optimize-hyperparameters", action="store_true", help="hyperparameter search")
    p.add_argument("--no-optim-plots", action="store_true")
    p.add_argument("--n-jobs", type=int, default=1)
    p.add_argument("--sampler", default="tpe", choices=["random", "tpe", "auto"])
    p.add_argument("--pruner", default="median", choices=["halving", "median", "none"])
    p.add_argument("--n-startup-trials", type=int, default=10)
    p.add_argument("--n-evaluations", type=int, default=None, help="evaluations per trial (pruning points)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (or a journal file *.log)")
    p.add_argument("--study-name", default=None)
    p.add_argument("--trial-id", type=int, help="load this trial of --storage / --study-name")
    p.add_argument("--verbose", default=1, type=int)
    p.add_argument("--gym-packages", nargs="+", default=[], help="modules to import (they register env ids)")
    p.add_argument("--env-kwargs", nargs="+", metavar="KEY:VALUE", help="env constructor kwargs")
    p.add_argument("--eval-env-kwargs", nargs="+", metavar="KEY:VALUE", help="eval env constructor kwargs")
    p.add_argument("-params", "--hyperparams", nargs="+", metavar="KEY:VALUE", help="overrides")
    p.add_argument("-conf", "--conf-file", default=None, help="zoo YAML keyed by env id")
    p.add_argument("-uuid", "--uuid", action="store_true")
    p.add_argument("-P", "--progress", action="store_true")
    p.add_argument("--query-intervals", type=int, nargs="+", default=[1, 2, 4], help="query_interval choices")
    return p


def _dict_or_none(items: list[str] | None) -> dict[str, Any] | None:
    return parse_key_values(items) if items else None


def main(argv: list[str] | None = None) -> None:
    """``python -m rl_zoo3.train``'s steps with :class:`ResidualExperimentManager`."""
    show_deprecations()
    args = zoo_parser().parse_args(argv)
    for module in args.gym_packages:
        importlib.import_module(module)
    experiment.check_env_id(args.env)
    if args.seed < 0:
        args.seed = np.random.randint(2**32 - 1, dtype="int64").item()
    set_random_seed(args.seed)
    experiment.configure_threads(args.num_threads, args.device)
    manager = ResidualExperimentManager(
        args,
        args.algo,
        args.env,
        args.log_folder,
        tensorboard_log=args.tensorboard_log,
        n_timesteps=args.n_timesteps,
        eval_freq=args.eval_freq,
        n_eval_episodes=args.eval_episodes,
        save_freq=args.save_freq,
        hyperparams=_dict_or_none(args.hyperparams),
        env_kwargs=_dict_or_none(args.env_kwargs),
        eval_env_kwargs=_dict_or_none(args.eval_env_kwargs),
        trained_agent=args.trained_agent,
        optimize_hyperparameters=args.optimize_hyperparameters,
        storage=args.storage,
        study_name=args.study_name,
        n_trials=args.n_trials,
        max_total_trials=args.max_total_trials,
        n_jobs=args.n_jobs,
        sampler=args.sampler,
        pruner=args.pruner,
        optimization_log_path=args.optimization_log_path,
        n_startup_trials=args.n_startup_trials,
        n_evaluations=args.n_evaluations,
        truncate_last_trajectory=args.truncate_last_trajectory,
        uuid_str=f"_{uuid.uuid4()}" if args.uuid else "",
        seed=args.seed,
        log_interval=args.log_interval,
        save_replay_buffer=args.save_replay_buffer,
        verbose=args.verbose,
        vec_env_type=args.vec_env,
        n_eval_envs=args.n_eval_envs,
        no_optim_plots=args.no_optim_plots,
        device=args.device,
        config=args.conf_file,
        show_progress=args.progress,
        trial_id=args.trial_id,
        query_intervals=tuple(args.query_intervals),
    )
    results = manager.setup_experiment()
    if results is None:
        manager.hyperparameters_optimization()
        return
    model, _ = results
    manager.learn(model)
    manager.save_trained_model(model)


if __name__ == "__main__":
    main()
