"""One trial of a study: the fixed part of every trial (:class:`TuneSetup`: the YAML entry, its overrides, the
budget, the evaluation and the search space of the env's observation keys) and :func:`run_trial`, which trains one
sampled configuration through :mod:`sb3_vla.experiment` (the same env stack and model as ``sb3_vla.train``) and
returns its final mean evaluation return.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, field
from typing import Any

import optuna
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from sb3_vla import experiment
from sb3_vla.config import ResolvedConfig, load_hyperparams, resolve
from sb3_vla.core.options import parse_key_values
from sb3_vla.literal import parse_config_string
from sb3_vla.tuning.space import TUNABLE, SearchSpace, convert_residual_params
from sb3_vla.tuning.study import TrialEvalCallback


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


def final_timesteps(args: argparse.Namespace, hyperparams: dict[str, Any]) -> int | None:
    """The training budget the best-trial YAML carries: ``--final-timesteps``, else the YAML entry's
    ``n_timesteps``, else ``None`` (the trial budget stays)."""
    final = getattr(args, "final_timesteps", None)
    if final is not None and int(final) > 0:
        return int(final)
    value = hyperparams.get("n_timesteps")
    return int(float(value)) if value is not None else None


def eval_policy_kwargs(value: Any) -> dict[str, Any] | None:
    """A YAML ``policy_kwargs`` value as data (a copy; ``None`` unless a mapping)."""
    value = parse_config_string(value, "policy_kwargs")
    return copy.deepcopy(value) if isinstance(value, dict) else None


def setup_from_config(
    cfg: ResolvedConfig,
    hyperparams: dict[str, Any],
    overrides: dict[str, Any],
    base: str | None = None,
    *,
    seed: int = 0,
    device: str = "auto",
    vec_env: str = "dummy",
    n_eval_envs: int = 1,
    eval_episodes: int = 5,
    n_evaluations: int = 4,
    query_intervals: tuple[int, ...] = (1, 2, 4),
    env_kwargs: dict[str, Any] | None = None,
    final_timesteps: int | None = None,
) -> TuneSetup:
    """The setup of a study on ``cfg`` (the resolved YAML entry ``hyperparams`` with ``overrides`` and ``base``):
    one env is built once to see which observation keys the policy gets."""
    if cfg.algo not in TUNABLE:
        raise ValueError(f"no search space for algorithm {cfg.algo!r}; tunable: {list(TUNABLE)}")
    probe = experiment.build_vec_env(cfg, 1, seed, "dummy", device, training=False)
    try:
        obs_space = probe.observation_space
    finally:
        probe.close()
    space = SearchSpace.from_observation_space(
        cfg.algo,
        obs_space,
        residual=cfg.obs_wrapper_kwargs is not None,
        query_intervals=tuple(query_intervals),
        n_envs=cfg.n_envs,
    )
    return TuneSetup(
        algo=cfg.algo,
        env_id=cfg.env_id,
        hyperparams=hyperparams,
        overrides=overrides,
        base=base,
        n_timesteps=cfg.n_timesteps,
        seed=seed,
        device=device,
        vec_env=vec_env,
        n_eval_envs=n_eval_envs,
        eval_episodes=eval_episodes,
        n_evaluations=max(1, int(n_evaluations)),
        space=space,
        policy_kwargs=eval_policy_kwargs(cfg.model_kwargs.get("policy_kwargs")),
        residual_scale=(cfg.residual_kwargs or {}).get("residual_scale"),
        n_envs=cfg.n_envs,
        env_kwargs=dict(env_kwargs or {}),
        final_timesteps=final_timesteps,
    )


def make_setup(args: argparse.Namespace) -> TuneSetup:
    """Read the YAML entry and overrides as ``sb3_vla.train`` does and probe the env's observation keys once."""
    if not args.env:
        raise ValueError("--env is required (e.g. --env Pendulum-v1)")
    experiment.check_env_id(args.env)
    cfg = experiment.resolve_from_args(args)  # validates the YAML + overrides before any trial runs
    hyperparams, _ = load_hyperparams(experiment.conf_file_of(args), args.env)
    return setup_from_config(
        cfg,
        hyperparams,
        parse_key_values(args.hyperparams),
        args.base,
        seed=args.seed,
        device=args.device,
        vec_env=args.vec_env,
        n_eval_envs=args.n_eval_envs,
        eval_episodes=args.eval_episodes,
        n_evaluations=int(getattr(args, "n_evaluations", 4)),
        query_intervals=tuple(getattr(args, "query_intervals", None) or (1, 2, 4)),
        env_kwargs=parse_key_values(args.env_kwargs) if args.env_kwargs else {},
        final_timesteps=final_timesteps(args, hyperparams),
    )


def run_trial(
    setup: TuneSetup, params: dict[str, Any], trial: optuna.Trial, callbacks: list[BaseCallback] | None = None
) -> float:
    """Train one configuration and return its final mean evaluation return.

    :raises optuna.TrialPruned: pruned by the pruner, NaN/assertion errors in training, or a non-finite return.
    """
    cfg = setup.config(params)
    env = experiment.build_vec_env(cfg, cfg.n_envs, setup.seed, setup.vec_env, setup.device)
    eval_env = experiment.build_eval_env(cfg, env, setup.n_eval_envs, setup.seed + 10_000, setup.device)
    try:
        model = experiment.build_model(cfg, env, setup.seed, setup.device, tensorboard_log=None)
        eval_freq = max(cfg.n_timesteps // (setup.n_evaluations * cfg.n_envs), 1)
        eval_cb = TrialEvalCallback(eval_env, trial, setup.eval_episodes, eval_freq, eval_seed=setup.seed + 10_000)
        try:
            configured = experiment.build_callbacks(cfg)
            model.learn(cfg.n_timesteps, callback=CallbackList([*configured, *(callbacks or []), eval_cb]))
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
