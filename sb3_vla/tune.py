"""Optuna hyperparameter tuning with a residual-aware search space.

Usage::

    python -m sb3_vla.tune --algo sac --env Pendulum-v1 -n 20000 --n-trials 50 [--storage URL] [--study-name NAME]
        [--sampler tpe|random] [--pruner median|halving|none] [--n-evaluations 4] [--best-yaml PATH]
        [all the flags of python -m sb3_vla.train: --conf-file, --base, -params, --seed, --device ...]
    python -m sb3_vla.train --algo sac --env GarmentFold-v0 --optimize --n-trials 50 --storage URL   # same thing

The search space is the algorithm's own hyperparameters (rl-zoo's ranges) plus the residual knobs: the residual
scale (a factor on the configured ``residual_scale``), the base's ``query_interval``, whether the policy sees the
base action (``keep_base_in_obs``) and the base's embedding (``exclude_keys``), and the extractor sizes. As in rl-zoo,
samplers suggest primitives only (what Optuna stores) and a converter builds the objects; the converter starts from
the YAML entry's ``policy_kwargs`` and always keeps ``features_extractor_class``.

Storage: a SQLite file ``<log-folder>/<algo>/<env>_optuna.db`` by default; a PostgreSQL (or MySQL) URL lets several
processes or machines work on one study (start the same command on each; the study is created once and loaded
by the others). With an RDB storage each running trial sends a heartbeat; a worker that dies mid-trial leaves its
trial RUNNING until another worker starts a trial after ``--heartbeat-grace`` seconds, which marks it FAIL. Trials
whose training raises ``AssertionError`` / ``ValueError`` (NaN parameters, NaN actions) or whose evaluation return
is not finite are recorded as PRUNED, like rl-zoo does.

The best trial is written as a ready zoo YAML entry (``--best-yaml``, default
``<log-folder>/<algo>/<env>_best.yml``) that both ``python -m sb3_vla.train --conf-file`` and
``python -m rl_zoo3.train --conf-file`` read.

rl-zoo: importing this module registers the residual samplers in ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` /
``HYPERPARAMS_CONVERTER`` (keys ``sac``, ``tqc``, ``td3``, ``ddpg``, ``ppo``, ``a2c``), so::

    python -m rl_zoo3.train --algo sac --env Pendulum-v1 --gym-packages sb3_vla sb3_vla.tune \\
        --conf-file zoo_configs/sac.yml --optimize --n-trials 20 -n 5000

tunes the residual knobs too. For an env without our VLA wrappers rl-zoo's own sampler is used.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import socket
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from gymnasium import spaces
from optuna.pruners import BasePruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.trial import TrialState
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_vla.config import (
    OBS_WRAPPER_NAMES,
    RESIDUAL_WRAPPER_NAMES,
    ResolvedConfig,
    load_hyperparams,
    parse_config_string,
    resolve,
)
from sb3_vla.core.algos import residual_policies
from sb3_vla.core.imports import import_object
from sb3_vla.core.keys import ACTION_KEY, EMBEDDING_KEY
from sb3_vla.core.options import parse_key_values
from sb3_vla.evaluation import FixedSeedEvalCallback
from sb3_vla.extractor import VLAFeaturesExtractor, classify_key

OFF_POLICY = ("sac", "tqc", "td3", "ddpg")
ON_POLICY = ("ppo", "a2c")
TUNABLE = OFF_POLICY + ON_POLICY

OFF_POLICY_NET_ARCH = {"small": [64, 64], "medium": [256, 256], "big": [400, 300]}
ON_POLICY_NET_ARCH = {
    "tiny": {"pi": [64], "vf": [64]},
    "small": {"pi": [64, 64], "vf": [64, 64]},
    "medium": {"pi": [256, 256], "vf": [256, 256]},
}
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
VECTOR_MLP = {"none": [], "small": [64], "medium": [128, 128]}
# Residual knobs live in the env wrappers' kwargs; sb3_vla.config.resolve routes these override keys there.
ENV_KNOBS = ("residual_scale", "query_interval", "keep_base_in_obs")


# ----------------------------------------------------------------------------------------------------------------
# Search space: samplers suggest primitives, the converter builds objects
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SearchSpace:
    """What to sample for one algorithm and env.

    :param algo: algorithm name (``sac``, ``tqc``, ``td3``, ``ddpg``, ``ppo``, ``a2c``).
    :param residual: the env has the VLA wrappers (sample the residual knobs).
    :param has_embedding: the observation has ``vla_embedding`` (sample whether the policy sees it).
    :param has_images: image keys present (sample the CNN output size).
    :param has_pointclouds: point-cloud keys present (sample the PointNet output size).
    :param query_intervals: choices for the base's ``query_interval`` (empty: not tuned).
    :param residual_scale_factor: log-uniform range of the factor applied to the configured ``residual_scale``.
    :param n_envs: number of training envs (PPO's batch size is kept <= ``n_steps * n_envs``).
    """

    algo: str
    residual: bool = True
    has_embedding: bool = False
    has_images: bool = False
    has_pointclouds: bool = False
    query_intervals: tuple[int, ...] = (1, 2, 4)
    residual_scale_factor: tuple[float, float] = (0.25, 4.0)
    n_envs: int = 1

    def __post_init__(self) -> None:
        if self.algo not in TUNABLE:
            raise ValueError(f"no search space for algorithm {self.algo!r}; tunable: {list(TUNABLE)}")

    @classmethod
    def from_observation_space(
        cls, algo: str, observation_space: spaces.Space, residual: bool, **kwargs: Any
    ) -> SearchSpace:
        """Detect the embedding / image / point-cloud keys of a (wrapped) env's observation space."""
        kinds: set[str] = set()
        if isinstance(observation_space, spaces.Dict):
            kinds = {classify_key(k, s) for k, s in observation_space.spaces.items()}
            has_embedding = EMBEDDING_KEY in observation_space.spaces
        else:
            has_embedding = False
        return cls(
            algo,
            residual=residual,
            has_embedding=has_embedding,
            has_images="image" in kinds,
            has_pointclouds="pointcloud" in kinds,
            **kwargs,
        )


def sample_residual_params(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Suggest one configuration (primitives only: floats, ints, strings, bools).

    :param trial: the Optuna trial.
    :param space: what to sample.
    :return: the sampled primitives, keyed as Optuna stores them (``trial.params``).
    """
    p: dict[str, Any] = {}
    p["one_minus_gamma"] = trial.suggest_float("one_minus_gamma", 0.0001, 0.05, log=True)
    p["learning_rate"] = trial.suggest_float("learning_rate", 1e-5, 0.002, log=True)
    if space.algo in OFF_POLICY:
        p["batch_size_pow"] = trial.suggest_int("batch_size_pow", 5, 9)
        p["train_freq"] = trial.suggest_int("train_freq", 1, 8)
        p["tau"] = trial.suggest_float("tau", 0.001, 0.08, log=True)
        p["net_arch"] = trial.suggest_categorical("net_arch", list(OFF_POLICY_NET_ARCH))
        if space.algo in ("td3", "ddpg"):
            p["noise_std"] = trial.suggest_float("noise_std", 0.0, 0.5)
        if space.algo == "tqc":
            p["n_quantiles"] = trial.suggest_int("n_quantiles", 5, 50)
            p["top_quantiles_to_drop_per_net"] = trial.suggest_int(
                "top_quantiles_to_drop_per_net", 0, min(p["n_quantiles"] - 1, 5)
            )
    else:
        p["n_steps_pow"] = trial.suggest_int("n_steps_pow", 5, 11)
        p["batch_size_pow"] = trial.suggest_int("batch_size_pow", 5, 9)
        p["one_minus_gae_lambda"] = trial.suggest_float("one_minus_gae_lambda", 0.0001, 0.1, log=True)
        p["ent_coef"] = trial.suggest_float("ent_coef", 1e-8, 0.1, log=True)
        p["clip_range"] = trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4])
        p["n_epochs"] = trial.suggest_categorical("n_epochs", [1, 5, 10, 20])
        p["max_grad_norm"] = trial.suggest_float("max_grad_norm", 0.3, 2.0)
        p["net_arch"] = trial.suggest_categorical("net_arch", list(ON_POLICY_NET_ARCH))
        p["activation_fn"] = trial.suggest_categorical("activation_fn", ["tanh", "relu"])
    # extractor sizes
    p["vector_mlp"] = trial.suggest_categorical("vector_mlp", list(VECTOR_MLP))
    if space.has_images:
        p["cnn_output_dim"] = trial.suggest_categorical("cnn_output_dim", [64, 128, 256])
    if space.has_pointclouds:
        p["pointnet_output_dim"] = trial.suggest_categorical("pointnet_output_dim", [64, 128, 256])
    if space.residual:
        lo, hi = space.residual_scale_factor
        p["residual_scale_factor"] = trial.suggest_float("residual_scale_factor", lo, hi, log=True)
        if space.query_intervals:
            p["query_interval"] = trial.suggest_categorical("query_interval", list(space.query_intervals))
        p["policy_sees_base_action"] = trial.suggest_categorical("policy_sees_base_action", [True, False])
    if space.has_embedding:
        p["policy_sees_embedding"] = trial.suggest_categorical("policy_sees_embedding", [True, False])
        if p["policy_sees_embedding"]:
            p["embedding_output_dim"] = trial.suggest_categorical("embedding_output_dim", [32, 64, 128])
    # human-readable values next to the primitives
    trial.set_user_attr("gamma", 1 - p["one_minus_gamma"])
    trial.set_user_attr("batch_size", 2 ** p["batch_size_pow"])
    return p


def convert_residual_params(
    params: dict[str, Any],
    algo: str,
    policy_kwargs: dict[str, Any] | None = None,
    residual_scale: float | list[float] | None = None,
    n_envs: int = 1,
) -> dict[str, Any]:
    """Turn sampled primitives into hyperparameters (``sb3_vla.config.resolve`` overrides).

    :param params: the primitives (``trial.params`` or :func:`sample_residual_params`'s result).
    :param algo: algorithm name.
    :param policy_kwargs: the YAML entry's ``policy_kwargs`` (evaluated); the result starts from a copy of it, so
        nothing configured there (``features_extractor_class``, other extractor kwargs) is dropped.
    :param residual_scale: the configured ``residual_scale`` that ``residual_scale_factor`` multiplies
        (default 0.1, the wrapper's default).
    :param n_envs: number of training envs (PPO: ``batch_size <= n_steps * n_envs``).
    :return: algorithm kwargs, ``policy_kwargs`` (with ``features_extractor_class``) and the residual knobs
        ``residual_scale`` / ``query_interval`` / ``keep_base_in_obs`` (wrapper kwargs).
    """
    out: dict[str, Any] = {}
    pk = copy.deepcopy(dict(policy_kwargs or {}))
    pk.setdefault("features_extractor_class", VLAFeaturesExtractor)
    fe = dict(pk.get("features_extractor_kwargs") or {})
    if "one_minus_gamma" in params:
        out["gamma"] = 1 - params["one_minus_gamma"]
    if "learning_rate" in params:
        out["learning_rate"] = params["learning_rate"]
    if algo in OFF_POLICY:
        if "batch_size_pow" in params:
            out["batch_size"] = 2 ** params["batch_size_pow"]
        if "train_freq" in params:
            out["train_freq"] = params["train_freq"]
            out["gradient_steps"] = params["train_freq"]  # one update per collected transition, as in rl-zoo
        if "tau" in params:
            out["tau"] = params["tau"]
        if "net_arch" in params:
            pk["net_arch"] = list(OFF_POLICY_NET_ARCH[params["net_arch"]])
        if "noise_std" in params:
            out["noise_type"] = "normal"
            out["noise_std"] = params["noise_std"]
        if "n_quantiles" in params:
            pk["n_quantiles"] = params["n_quantiles"]
        if "top_quantiles_to_drop_per_net" in params:
            out["top_quantiles_to_drop_per_net"] = params["top_quantiles_to_drop_per_net"]
    else:
        n_steps = 2 ** params["n_steps_pow"] if "n_steps_pow" in params else None
        if n_steps is not None:
            out["n_steps"] = n_steps
        if "batch_size_pow" in params:
            batch = 2 ** params["batch_size_pow"]
            out["batch_size"] = min(batch, n_steps * max(n_envs, 1)) if n_steps else batch
        if "one_minus_gae_lambda" in params:
            out["gae_lambda"] = 1 - params["one_minus_gae_lambda"]
        for key in ("ent_coef", "clip_range", "n_epochs", "max_grad_norm"):
            if key in params:
                out[key] = params[key]
        if "net_arch" in params:
            pk["net_arch"] = copy.deepcopy(ON_POLICY_NET_ARCH[params["net_arch"]])
        if "activation_fn" in params:
            pk["activation_fn"] = ACTIVATIONS[params["activation_fn"]]
    if "vector_mlp" in params:
        fe["mlp_net_arch"] = list(VECTOR_MLP[params["vector_mlp"]])
    for key in ("cnn_output_dim", "pointnet_output_dim", "embedding_output_dim"):
        if key in params:
            fe[key] = params[key]
    exclude = [k for k in fe.get("exclude_keys", []) if k != EMBEDDING_KEY]
    if params.get("policy_sees_embedding") is False:
        exclude.append(EMBEDDING_KEY)
    if "policy_sees_base_action" in params:
        out["keep_base_in_obs"] = bool(params["policy_sees_base_action"])
        if not params["policy_sees_base_action"]:
            exclude = [k for k in exclude if k != ACTION_KEY]  # the key is gone from the observation
    if exclude or "exclude_keys" in fe:
        fe["exclude_keys"] = exclude
    if fe:
        pk["features_extractor_kwargs"] = fe
    out["policy_kwargs"] = pk
    if "residual_scale_factor" in params:
        base_scale = 0.1 if residual_scale is None else residual_scale
        factor = float(params["residual_scale_factor"])
        if isinstance(base_scale, list | tuple):
            out["residual_scale"] = [float(s) * factor for s in base_scale]
        else:
            out["residual_scale"] = float(base_scale) * factor
    if "query_interval" in params:
        out["query_interval"] = int(params["query_interval"])
    return out


# ----------------------------------------------------------------------------------------------------------------
# rl-zoo registration
# ----------------------------------------------------------------------------------------------------------------

_ZOO_ORIGINALS: dict[str, tuple[Any, Any]] = {}
_ZOO_SPACES: dict[int, tuple[SearchSpace, dict[str, Any]]] = {}


def _find_zoo_manager() -> Any:
    """The rl-zoo ``ExperimentManager`` whose method called us (its ``objective`` / ``load_trial``), or None.

    rl-zoo's sampler signature carries no env information and its env wrappers are built once per run, so the
    residual knobs (env-wrapper kwargs) can only be applied through the manager that is tuning.
    """
    try:
        from rl_zoo3.exp_manager import ExperimentManager
    except ImportError:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ExperimentManager):
            return candidate
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _zoo_entry(manager: Any) -> dict[str, Any]:
    """The manager's YAML entry with its -params overrides (unprocessed: wrapper lists, strings)."""
    hyperparams, _ = load_hyperparams(manager.config, manager.env_name.gym_id)
    hyperparams.update(manager.custom_hyperparams or {})
    return hyperparams


def _wrappers_with_knobs(env_wrapper: Any, knobs: dict[str, Any]) -> list[Any]:
    """The YAML ``env_wrapper`` list with the residual knobs set in our two wrappers' kwargs."""
    items = env_wrapper if isinstance(env_wrapper, list) else [env_wrapper]
    out: list[Any] = []
    for item in items:
        name, kwargs = next(iter(item.items())) if isinstance(item, dict) else (item, {})
        kwargs = dict(kwargs or {})
        if name in OBS_WRAPPER_NAMES and "query_interval" in knobs:
            kwargs["query_interval"] = knobs["query_interval"]
        if name in RESIDUAL_WRAPPER_NAMES:
            kwargs.update({k: knobs[k] for k in ("residual_scale", "keep_base_in_obs") if k in knobs})
        out.append({name: kwargs} if kwargs else name)
    return out


def _has_vla_wrappers(entry: dict[str, Any]) -> bool:
    wrappers = entry.get("env_wrapper") or []
    names = [
        next(iter(w)) if isinstance(w, dict) else w for w in (wrappers if isinstance(wrappers, list) else [wrappers])
    ]
    return any(n in OBS_WRAPPER_NAMES for n in names)


def _residual_scale_of(env_wrapper: Any) -> Any:
    for item in env_wrapper if isinstance(env_wrapper, list) else [env_wrapper]:
        if isinstance(item, dict):
            name, kwargs = next(iter(item.items()))
            if name in RESIDUAL_WRAPPER_NAMES:
                return (kwargs or {}).get("residual_scale")
    return None


def _zoo_sampler(algo: str) -> Any:
    def sample(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
        manager = _find_zoo_manager()
        entry = _zoo_entry(manager) if manager is not None else {}
        if manager is None or not _has_vla_wrappers(entry):
            return _ZOO_ORIGINALS[algo][0](trial, n_actions, n_envs, additional_args)
        from rl_zoo3.utils import get_wrapper_class

        key = id(manager)
        if key not in _ZOO_SPACES:  # build one env once to see which keys the policy gets
            probe = manager.create_envs(1, no_log=True)
            space = SearchSpace.from_observation_space(algo, probe.observation_space, residual=True, n_envs=n_envs)
            probe.close()
            _ZOO_SPACES[key] = (space, entry)
        space, entry = _ZOO_SPACES[key]
        params = sample_residual_params(trial, space)
        policy_kwargs = manager._hyperparams.get("policy_kwargs")
        hp = convert_residual_params(params, algo, policy_kwargs, _residual_scale_of(entry["env_wrapper"]), n_envs)
        knobs = {k: hp.pop(k) for k in ENV_KNOBS if k in hp}
        # rl-zoo builds the train and eval envs of this trial right after sampling, with manager.env_wrapper
        manager.env_wrapper = get_wrapper_class({"env_wrapper": _wrappers_with_knobs(entry["env_wrapper"], knobs)})
        if "noise_std" in hp:  # rl-zoo builds noise objects before tuning; build ours here
            from stable_baselines3.common.noise import NormalActionNoise

            std = hp.pop("noise_std")
            hp.pop("noise_type")
            hp["action_noise"] = NormalActionNoise(np.zeros(n_actions), std * np.ones(n_actions))
        return hp

    return sample


def _zoo_converter(algo: str) -> Any:
    def convert(params: dict[str, Any]) -> dict[str, Any]:
        if "residual_scale_factor" not in params and "vector_mlp" not in params:
            return _ZOO_ORIGINALS[algo][1](params)
        manager = _find_zoo_manager()
        entry = _zoo_entry(manager) if manager is not None else {}
        policy_kwargs = entry.get("policy_kwargs")
        policy_kwargs = parse_config_string(policy_kwargs, "policy_kwargs")  # data, not eval (rl-zoo evals it)
        wrappers = entry.get("env_wrapper")
        hp = convert_residual_params(params, algo, policy_kwargs, _residual_scale_of(wrappers) if wrappers else None)
        knobs = {k: hp.pop(k) for k in ENV_KNOBS if k in hp}
        if wrappers:  # rl-zoo merges this into the YAML entry before building the env wrappers
            hp["env_wrapper"] = _wrappers_with_knobs(wrappers, knobs)
        return hp

    return convert


def register_zoo_samplers() -> None:
    """Put the residual samplers/converters into rl-zoo's tables (idempotent; no-op without rl_zoo3).

    rl-zoo 2.9 keys ``HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER`` by algorithm name and calls
    ``sampler(trial, n_actions, n_envs, additional_args)`` / ``converter(params)``. Ours fall back to rl-zoo's
    originals for envs without the VLA wrappers.
    """
    try:
        from rl_zoo3 import hyperparams_opt
    except ImportError:
        return
    for algo in TUNABLE:
        if algo in _ZOO_ORIGINALS or algo not in hyperparams_opt.HYPERPARAMS_SAMPLER:
            continue
        _ZOO_ORIGINALS[algo] = (hyperparams_opt.HYPERPARAMS_SAMPLER[algo], hyperparams_opt.HYPERPARAMS_CONVERTER[algo])
        hyperparams_opt.HYPERPARAMS_SAMPLER[algo] = _zoo_sampler(algo)
        hyperparams_opt.HYPERPARAMS_CONVERTER[algo] = _zoo_converter(algo)


# ----------------------------------------------------------------------------------------------------------------
# Storage, study, objective
# ----------------------------------------------------------------------------------------------------------------


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg (v3) in SQLAlchemy >= 2.1; use psycopg2 when only that one is installed."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "postgresql":
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return f"postgresql+psycopg2://{rest}"
    return url


def make_storage(
    url: str, heartbeat_interval: int | None = 60, grace_period: int | None = 180
) -> optuna.storages.BaseStorage:
    """Open an Optuna storage: an RDB URL (``sqlite:///f.db``, ``postgresql://...``) or a journal file (``*.log``).

    :param url: the storage URL or journal path.
    :param heartbeat_interval: seconds between a running trial's heartbeats (RDB only; None: off).
    :param grace_period: seconds without a heartbeat after which another worker marks a RUNNING trial FAIL.
    :raises ValueError: the database is unreachable or its driver is missing (the message names the URL and fix).
    """
    if url.endswith(".log") and "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    url = _with_driver(url)
    try:
        with (
            warnings.catch_warnings()
        ):  # heartbeats are "experimental" in Optuna, and the way to recover from dead workers
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period if heartbeat_interval else None,
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
    except (ModuleNotFoundError, ImportError) as e:
        raise ValueError(
            f"cannot open the Optuna storage {_safe_url(url)!r}: its database driver is missing ({e}). "
            "For PostgreSQL: pip install psycopg2-binary (or psycopg) and use postgresql+psycopg2://user:pw@host/db"
        ) from e
    except Exception as e:  # sqlalchemy OperationalError / ArgumentError and friends
        raise ValueError(
            f"cannot reach the Optuna storage {_safe_url(url)!r}: {type(e).__name__}: {str(e).splitlines()[0]}. "
            "Check that the database server runs and accepts this host, port, user, password and database "
            "(for the tests: .ci/postgres.sh), or omit --storage to use a local SQLite file"
        ) from e


def make_sampler(name: str, seed: int | None, n_startup_trials: int) -> BaseSampler:
    """``tpe`` (multivariate TPE, rl-zoo's default) or ``random``."""
    if name == "tpe":
        return TPESampler(n_startup_trials=n_startup_trials, seed=seed, multivariate=True)
    if name == "random":
        return RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; choose tpe or random")


def make_pruner(name: str, n_startup_trials: int, n_evaluations: int) -> BasePruner:
    """``median`` (MedianPruner), ``halving`` (successive halving) or ``none``."""
    if name == "median":
        return MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_evaluations // 3)
    if name == "halving":
        return SuccessiveHalvingPruner(min_resource=1, reduction_factor=4, min_early_stopping_rate=0)
    if name == "none":
        return NopPruner()
    raise ValueError(f"unknown pruner {name!r}; choose median, halving or none")


class TrialEvalCallback(FixedSeedEvalCallback):
    """Evaluate every ``eval_freq`` calls on the same seeded episodes (so every trial of a study, and every
    evaluation of a trial, is judged on the same episodes), report the mean return to the trial and stop when it
    should be pruned.

    A non-finite mean return (a diverged policy or env) stops training and marks the trial for pruning.
    """

    def __init__(
        self, eval_env: VecEnv, trial: optuna.Trial, n_eval_episodes: int, eval_freq: int, eval_seed: int = 0
    ) -> None:
        super().__init__(
            eval_env,
            eval_seed=eval_seed,
            base_reference=False,
            n_eval_episodes=n_eval_episodes,
            eval_freq=eval_freq,
            deterministic=True,
            verbose=0,
        )
        self.trial = trial
        self.eval_idx = 0
        self.is_pruned = False
        self.prune_reason = ""

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            return self._evaluate() and self.report()
        return True

    def report(self) -> bool:
        """Report the last evaluation; False when the trial must stop."""
        self.eval_idx += 1
        if not math.isfinite(self.last_mean_reward):
            self.is_pruned, self.prune_reason = True, f"non-finite mean return {self.last_mean_reward}"
            return False
        self.trial.report(self.last_mean_reward, self.eval_idx)
        if self.trial.should_prune():
            self.is_pruned, self.prune_reason = True, f"pruned at evaluation {self.eval_idx}"
            return False
        return True


@dataclass
class TuneSetup:
    """Everything a trial needs besides its sampled parameters."""

    algo: str
    env_id: str
    hyperparams: dict[str, Any]
    overrides: dict[str, Any]
    base: str | None
    n_timesteps: int
    seed: int
    device: str
    vec_env: str
    n_eval_envs: int
    eval_episodes: int
    n_evaluations: int
    space: SearchSpace
    policy_kwargs: dict[str, Any] | None
    residual_scale: Any
    n_envs: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    final_timesteps: int | None = None  # the budget the best configuration is meant to train with

    def config(self, params: dict[str, Any]) -> ResolvedConfig:
        """The resolved config of a trial's parameters."""
        overrides = dict(self.overrides)
        overrides.update(
            convert_residual_params(params, self.algo, self.policy_kwargs, self.residual_scale, self.n_envs)
        )
        cfg = resolve(self.algo, self.env_id, self.hyperparams, overrides, base=self.base, n_timesteps=self.n_timesteps)
        cfg.env_kwargs.update(self.env_kwargs)
        return cfg


def _final_timesteps(args: argparse.Namespace, hyperparams: dict[str, Any]) -> int | None:
    """The training budget the best-trial YAML carries: ``--final-timesteps``, else the YAML entry's
    ``n_timesteps``, else ``None`` (the trial budget stays)."""
    final = getattr(args, "final_timesteps", None)
    if final is not None and int(final) > 0:
        return int(final)
    value = hyperparams.get("n_timesteps")
    return int(float(value)) if value is not None else None


def _eval_policy_kwargs(value: Any) -> dict[str, Any] | None:
    value = parse_config_string(value, "policy_kwargs")
    return copy.deepcopy(value) if isinstance(value, dict) else None


def make_setup(args: argparse.Namespace) -> TuneSetup:
    """Read the YAML entry and overrides as ``sb3_vla.train`` does and probe the env's observation keys once."""
    from sb3_vla.train import build_vec_env, check_env_id, resolve_from_args

    if not args.env:
        raise ValueError("--env is required (e.g. --env Pendulum-v1)")
    check_env_id(args.env)
    cfg = resolve_from_args(args)  # validates the YAML + overrides before any trial runs
    conf = args.conf_file
    if conf is None:
        from sb3_vla.config import default_conf_dir

        candidate = default_conf_dir() / f"{args.algo}.yml"
        conf = candidate if candidate.is_file() else None
    hyperparams, _ = load_hyperparams(conf, args.env)
    overrides = parse_key_values(args.hyperparams)
    if args.algo not in TUNABLE:
        raise ValueError(f"no search space for algorithm {args.algo!r}; tunable: {list(TUNABLE)}")
    residual = cfg.obs_wrapper_kwargs is not None
    probe = build_vec_env(cfg, 1, args.seed, "dummy", args.device, training=False)
    try:
        obs_space = probe.observation_space
    finally:
        probe.close()
    query_intervals = tuple(getattr(args, "query_intervals", None) or (1, 2, 4))
    space = SearchSpace.from_observation_space(
        args.algo, obs_space, residual=residual, query_intervals=query_intervals, n_envs=cfg.n_envs
    )
    return TuneSetup(
        algo=args.algo,
        env_id=args.env,
        hyperparams=hyperparams,
        overrides=overrides,
        base=args.base,
        n_timesteps=cfg.n_timesteps,
        seed=args.seed,
        device=args.device,
        vec_env=args.vec_env,
        n_eval_envs=args.n_eval_envs,
        eval_episodes=args.eval_episodes,
        n_evaluations=max(1, int(getattr(args, "n_evaluations", 4))),
        space=space,
        policy_kwargs=_eval_policy_kwargs(cfg.model_kwargs.get("policy_kwargs")),
        residual_scale=(cfg.residual_kwargs or {}).get("residual_scale"),
        n_envs=cfg.n_envs,
        env_kwargs=parse_key_values(args.env_kwargs) if args.env_kwargs else {},
        final_timesteps=_final_timesteps(args, hyperparams),
    )


def run_trial(
    setup: TuneSetup, params: dict[str, Any], trial: optuna.Trial, callbacks: list[BaseCallback] | None = None
) -> float:
    """Train one configuration and return its final mean evaluation return.

    :raises optuna.TrialPruned: pruned by the pruner, NaN/assertion errors in training, or a non-finite return.
    """
    from sb3_vla.train import _callbacks, build_model, build_vec_env, shared_base

    cfg = setup.config(params)
    env = build_vec_env(cfg, cfg.n_envs, setup.seed, setup.vec_env, setup.device)
    eval_env = build_vec_env(
        cfg, setup.n_eval_envs, setup.seed + 10_000, "dummy", setup.device, training=False, base=shared_base(env)
    )
    try:
        model = build_model(cfg, env, setup.seed, setup.device, tensorboard_log=None)
        eval_freq = max(cfg.n_timesteps // (setup.n_evaluations * cfg.n_envs), 1)
        eval_cb = TrialEvalCallback(eval_env, trial, setup.eval_episodes, eval_freq, eval_seed=setup.seed + 10_000)
        try:
            model.learn(cfg.n_timesteps, callback=CallbackList([*_callbacks(cfg), *(callbacks or []), eval_cb]))
            if not eval_cb.is_pruned and eval_cb.eval_idx < setup.n_evaluations:
                # the last evaluation point fell past the end: evaluate the final policy
                eval_cb.evaluate_now()
                eval_cb.report()
        except (AssertionError, ValueError) as e:
            # random hyperparameters can make NaN weights/actions: a pruned trial, not a failed study
            trial.set_user_attr("pruned_reason", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            raise optuna.TrialPruned(f"{type(e).__name__}: {e}") from e
    finally:
        env.close()
        eval_env.close()
    if eval_cb.is_pruned:
        trial.set_user_attr("pruned_reason", eval_cb.prune_reason)
        raise optuna.TrialPruned(eval_cb.prune_reason)
    return float(eval_cb.last_mean_reward)


def default_storage(log_folder: str, algo: str, env_id: str) -> str:
    """``sqlite:///<log_folder>/<algo>/<env>_optuna.db`` (absolute)."""
    safe = env_id.replace("/", "-").replace(":", "-")
    return f"sqlite:///{(Path(log_folder) / algo / f'{safe}_optuna.db').resolve()}"


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
    from sb3_vla.train import configure_threads

    configure_threads(getattr(args, "num_threads", -1), getattr(args, "device", "auto"))
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
        print(f"Study {study_name!r} in {_safe_url(storage_url)} ({len(study.trials)} trials so far); worker {worker}")

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
        Path(args.log_folder) / args.algo / f"{args.env.replace('/', '-').replace(':', '-')}_best.yml"
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


# ----------------------------------------------------------------------------------------------------------------
# Best trial -> zoo YAML
# ----------------------------------------------------------------------------------------------------------------


def _py_expr(value: Any) -> str:
    """A Python expression for a policy_kwargs value that rl-zoo can ``eval`` with only th/nn/np in scope."""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_py_expr(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list | tuple):
        inner = ", ".join(_py_expr(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, type):
        name = value.__name__
        if issubclass(value, nn.Module) and getattr(nn, name, None) is value:
            return f"nn.{name}"
        import torch as th

        if getattr(th.optim, name, None) is value:
            return f"th.optim.{name}"
        raise ValueError(
            f"policy_kwargs value {value.__module__}.{value.__qualname__} cannot be written in a zoo YAML "
            "(rl-zoo evaluates policy_kwargs with only th, nn, np in scope); use a dotted policy class that sets it"
        )
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    raise ValueError(f"policy_kwargs value {value!r} cannot be written in a zoo YAML")


def best_trial_entry(
    study: optuna.Study, setup: TuneSetup, trial: optuna.trial.FrozenTrial | None = None
) -> dict[str, Any]:
    """The zoo YAML entry (keyed fields as in ``zoo_configs/<algo>.yml``) of the best (or the given) trial."""
    trial = trial or study.best_trial
    cfg = setup.config(trial.params)
    entry = copy.deepcopy(cfg.saved)
    policy = entry.get("policy")
    if policy is None or (isinstance(policy, str) and "." not in policy and cfg.obs_wrapper_kwargs is not None):
        policy = residual_policies().get(setup.algo, "MultiInputPolicy")
    if isinstance(policy, type):
        policy = f"{policy.__module__}.{policy.__qualname__}"
    entry["policy"] = policy
    pk = entry.get("policy_kwargs")
    if isinstance(pk, dict):
        pk = dict(pk)
        fe_cls = pk.get("features_extractor_class")
        if fe_cls is not None:
            policy_cls = import_object(policy) if "." in str(policy) else None
            default_fe = _default_extractor(policy_cls)
            if fe_cls is not default_fe:
                raise ValueError(
                    f"the best trial's features_extractor_class {fe_cls} is not the default of policy {policy!r}; "
                    "a zoo YAML cannot name it (rl-zoo evaluates policy_kwargs with only th/nn/np): use a dotted "
                    "policy class that defaults to it"
                )
            pk.pop("features_extractor_class")
        entry["policy_kwargs"] = _py_expr(pk)
    for key in ("learning_rate", "gamma", "tau", "gae_lambda", "ent_coef", "max_grad_norm", "noise_std"):
        if isinstance(entry.get(key), float):
            entry[key] = float(f"{entry[key]:.6g}")
    for item in entry.get("env_wrapper", []):
        if isinstance(item, dict):
            for kwargs in item.values():
                if isinstance(kwargs, dict) and isinstance(kwargs.get("residual_scale"), float):
                    kwargs["residual_scale"] = float(f"{kwargs['residual_scale']:.6g}")
                elif isinstance(kwargs, dict) and isinstance(kwargs.get("residual_scale"), list):
                    kwargs["residual_scale"] = [float(f"{s:.6g}") for s in kwargs["residual_scale"]]
    if setup.env_kwargs:
        entry["env_kwargs"] = dict(setup.env_kwargs)
    if setup.final_timesteps:  # trials run a short -n; the YAML is for the full training
        entry["n_timesteps"] = int(setup.final_timesteps)
    from sb3_vla.train import _yaml_safe

    safe: dict[str, Any] = _yaml_safe(entry)
    return safe


def _default_extractor(policy_cls: Any) -> Any:
    if policy_cls is None:
        return None
    try:
        from sb3_vla import policies

        if isinstance(policy_cls, type) and issubclass(
            policy_cls,
            (
                policies.ResidualSACPolicy,
                policies.ResidualTQCPolicy,
                policies.ResidualTD3Policy,
                policies.ResidualActorCriticPolicy,
            ),
        ):
            return VLAFeaturesExtractor
    except ImportError:  # pragma: no cover
        return None
    return None


def write_best_yaml(study: optuna.Study, setup: TuneSetup, path: str | Path, storage_url: str | None = None) -> Path:
    """Write the best trial as ``{env_id: entry}`` to ``path`` (other env ids already in the file are kept)."""
    path = Path(path)
    entry = best_trial_entry(study, setup)
    data: dict[str, Any] = {}
    if path.is_file():
        loaded = yaml.safe_load(path.read_text())
        if isinstance(loaded, dict):
            data = loaded
    data[setup.env_id] = entry
    best = study.best_trial
    header = (
        f"# Best trial #{best.number} of Optuna study {study.study_name!r}"
        + (f" ({_safe_url(storage_url)})" if storage_url else "")
        + f": mean eval return {best.value:.3f} over {setup.eval_episodes} episodes.\n"
        f"# Study command: {study.user_attrs.get('command', '?')}\n"
        f"# n_timesteps {entry['n_timesteps']} is the intended training budget "
        f"(--final-timesteps, else the YAML entry's); each trial trained {setup.n_timesteps} steps.\n"
        f"# Use: python -m sb3_vla.train --algo {setup.algo} --env {setup.env_id} --conf-file {path}\n"
        f"#  or: python -m rl_zoo3.train --algo {setup.algo} --env {setup.env_id} --gym-packages sb3_vla "
        f"--conf-file {path}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(data, sort_keys=True, default_flow_style=None, width=120))
    return path


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from sb3_vla.train import build_parser as train_parser

    p = train_parser()  # it has the tuning flags too (add_tune_arguments)
    p.prog = "python -m sb3_vla.tune"
    p.description = __doc__.split("\n\n")[0] if __doc__ else None
    p.set_defaults(eval_episodes=5, n_trials=10)
    return p


def tune_from_train_args(args: argparse.Namespace) -> optuna.Study | None:
    """Entry point of ``python -m sb3_vla.train --optimize``: tune with the train flags (tuning-only flags take
    their defaults; ``python -m sb3_vla.tune`` has them all)."""
    from sb3_vla.train import add_tune_arguments

    defaults = vars(add_tune_arguments(argparse.ArgumentParser()).parse_args([]))
    for key, value in defaults.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    try:
        return tune(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    tune_from_train_args(args)


register_zoo_samplers()

if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        main()
