"""Evaluate a base alone, or a trained run, on fixed seeded episodes, with confidence intervals.

Usage::

    python -m sb3_vla.evaluate --env GarmentFold-v0 --base scripted --episodes 20
    python -m sb3_vla.evaluate logs/sac/GarmentFold-v0_1 --episodes 50 [--model best|final] [--no-base]

Episode ``j`` starts from ``reset(seed=SEED + j)`` (:func:`sb3_vla.evaluation.evaluate_episodes`), the episodes
``sb3_vla.train``'s evaluations use: ``SEED`` defaults to 10000 with ``--base`` (``sb3_vla.train --seed 0``) and to the
run's eval seed with ``RUN_DIR``. ``--base`` builds the env stack of the YAML entry (``--conf-file``, default
``zoo_configs/<algo>.yml``) with that base and a zero residual, i.e. the base exactly as residual RL starts from it.
``RUN_DIR`` rebuilds the run's stack from its saved ``config.yml`` and ``vecnormalize.npz`` and evaluates its policy
(and, unless ``--no-base``, its base on the same episodes). Success rates get a Wilson interval, returns a
bootstrap interval.

A run folder runs no code from its files (a downloaded one included): the policy is rebuilt from plain data
(:func:`sb3_vla.bases.backends.sb3_policy.load_sb3_policy`), the VecNormalize statistics are read from
``vecnormalize.npz`` (``np.load(allow_pickle=False)``), never from ``vecnormalize.pkl``. ``--trust-remote-code``
(``trust_remote_code=True``) opts in to unpickling, for run folders you trust: a run with only a
``vecnormalize.pkl``, a model zip that needs SB3's own loader, or a saved config whose base loads files with
``trust_remote_code``.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_vla.bases.backends.sb3_files import VEC_NORMALIZE_NPZ, UntrustedFileError, read_zip_num_timesteps
from sb3_vla.bases.backends.sb3_policy import load_sb3_policy
from sb3_vla.bases.backends.sb3_run import asks_for_trust_remote_code
from sb3_vla.config import ResolvedConfig, default_conf_dir, load_hyperparams, resolve
from sb3_vla.core.algos import algorithms
from sb3_vla.core.options import parse_key_values
from sb3_vla.evaluation import EpisodeResults, ZeroResidualPolicy, evaluate_episodes, has_residual_wrapper
from sb3_vla.experiment import build_vec_env, check_env_id, configure_threads, resolve_env_alias, set_schedule_step

DEFAULT_EVAL_SEED = 10_000  # sb3_vla.train: --seed 0 + 10000
#: how a user of ``python -m sb3_vla.evaluate`` / ``sb3_vla.record`` (or of :func:`load_run`) opts in to unpickling
CLI_OPT_IN = "--trust-remote-code (trust_remote_code=True in Python)"


@dataclass
class LoadedRun:
    """A trained run rebuilt for evaluation or recording."""

    run_dir: Path
    algo: str
    env_id: str
    cfg: ResolvedConfig
    model: BasePolicy  # the trained policy (SB3's ``predict``), rebuilt without unpickling
    venv: VecEnv
    eval_seed: int


def _safe(env_id: str) -> str:
    return env_id.replace("/", "-").replace(":", "-")


def run_files(run_dir: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """``(params_dir, args, config)`` of an ``sb3_vla.train`` run folder; ``ValueError`` naming what is missing."""
    run = Path(run_dir)
    found = sorted(run.glob("*/args.yml"))
    if not run.is_dir() or not found:
        raise ValueError(
            f"{str(run)!r} is not an sb3_vla.train run folder (no <env>/args.yml inside); pass a folder like "
            "logs/sac/GarmentFold-v0_1"
        )
    params_dir = found[0].parent
    args = yaml.safe_load(found[0].read_text()) or {}
    cfg_path = params_dir / "config.yml"
    if not cfg_path.is_file():
        raise ValueError(f"run folder {str(run)!r} has no {cfg_path.relative_to(run)} (the resolved config)")
    return params_dir, args, yaml.safe_load(cfg_path.read_text()) or {}


def vec_normalize_from_npz(path: str | Path, venv: VecEnv) -> VecNormalize:
    """Wrap ``venv`` in an eval-mode ``VecNormalize`` (no reward normalisation) with the statistics and settings
    of a ``vecnormalize.npz`` written by ``sb3_vla.train`` (``np.load(allow_pickle=False)``: no code runs)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: np.asarray(f[k]) for k in f.files}
        keys = [k[len("obs_mean.") :] for k in data if k.startswith("obs_mean.")]
        norm_obs = bool(data["norm_obs"])
        dict_obs = bool(data["dict_obs"])
        settings = {k: float(data[k]) for k in ("clip_obs", "clip_reward", "gamma", "epsilon")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"VecNormalize statistics {str(path)!r} cannot be read ({type(e).__name__}: {e})") from e
    if dict_obs != isinstance(venv.observation_space, spaces.Dict):
        raise ValueError(
            f"VecNormalize statistics {str(path)!r} are for {'Dict' if dict_obs else 'array'} observations, the env "
            f"gives {venv.observation_space}"
        )
    try:
        out = VecNormalize(
            venv,
            training=False,
            norm_obs=norm_obs,
            norm_reward=False,
            norm_obs_keys=keys if dict_obs and norm_obs else None,
            **settings,
        )
    except (AssertionError, KeyError, ValueError) as e:
        raise ValueError(f"VecNormalize statistics {str(path)!r} do not fit the env ({type(e).__name__}: {e})") from e
    if norm_obs:
        rms = out.obs_rms if isinstance(out.obs_rms, dict) else {"": out.obs_rms}
        for key, r in rms.items():
            mean, var = data[f"obs_mean.{key}"], data[f"obs_var.{key}"]
            if mean.shape != r.mean.shape or var.shape != r.var.shape:
                raise ValueError(
                    f"VecNormalize statistics {str(path)!r}: observation {key or 'obs'!r} has shape {mean.shape}, "
                    f"the env gives {r.mean.shape}"
                )
            r.mean, r.var, r.count = mean, var, float(data[f"obs_count.{key}"])
    out.ret_rms.mean, out.ret_rms.var = data["ret_mean"], data["ret_var"]
    out.ret_rms.count = float(data["ret_count"])
    return out


def load_run(
    run_dir: str | Path,
    which: str = "final",
    n_envs: int = 1,
    device: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    extra_wrappers: list[tuple[str, dict[str, Any]]] | None = None,
    trust_remote_code: bool = False,
) -> LoadedRun:
    """Rebuild a run's eval env stack and load its policy, running no code from the run folder's files.

    The VecNormalize statistics come from ``<env>/vecnormalize.npz`` and the policy from ``<env>/policy.json`` (or
    the zip's data read by the safe reader) and the zip's plain weights; see
    :func:`~sb3_vla.bases.backends.sb3_policy.load_sb3_policy`.

    :param which: ``"final"`` (``<env>.zip``) or ``"best"`` (``best_model.zip``).
    :param env_kwargs: extra env constructor kwargs (e.g. ``render_mode="rgb_array"``).
    :param extra_wrappers: ``(dotted class, kwargs)`` gym wrappers applied per env after the run's own ones.
    :param trust_remote_code: allow unpickling (runs code from the files; only for run folders you trust): a
        ``vecnormalize.pkl`` when there is no ``vecnormalize.npz``, the whole model zip, and a saved config whose
        base loads its own files with ``trust_remote_code``. Otherwise those raise
        :class:`~sb3_vla.bases.backends.sb3_files.UntrustedFileError` saying how to opt in.

    Example::

        run = load_run("logs/sac/Pendulum-v1_1", which="best")
        results = evaluate_episodes(run.model, run.venv, 20, run.eval_seed)
    """
    run = Path(run_dir)
    params_dir, args, config = run_files(run)
    algo, env_id = str(args.get("algo", "")), str(args.get("env", ""))
    if algo not in algorithms() or not env_id:
        raise ValueError(f"{str(params_dir / 'args.yml')!r} names no known algo / env (algo={algo!r}, env={env_id!r})")
    if not trust_remote_code and asks_for_trust_remote_code([args, config]):
        raise UntrustedFileError(
            f"run {str(run)!r}: its saved config loads files with trust_remote_code (code from those files would "
            f"run when the env stack is rebuilt); pass {CLI_OPT_IN} if you trust the run folder"
        )
    names = {"final": run / f"{params_dir.name}.zip", "best": run / "best_model.zip"}
    if which not in names:
        raise ValueError(f"which must be 'final' or 'best', got {which!r}")
    path = names[which]
    if not path.is_file():
        raise ValueError(f"run {str(run)!r} has no {path.name} (training not finished, or no evaluation ran)")
    cfg = resolve(algo, env_id, config, {}, n_timesteps=int(config.get("n_timesteps", 1) or 1))
    cfg.env_kwargs.update(env_kwargs or {})
    cfg.other_wrappers = [*cfg.other_wrappers, *(extra_wrappers or [])]
    normalize, cfg.normalize = cfg.normalize, None
    venv = build_vec_env(cfg, n_envs, 0, "dummy", device, training=False)
    try:
        if normalize is not None:
            venv = _load_normalization(run, params_dir, venv, trust_remote_code)
        try:
            policy = load_sb3_policy(path, get_device(device), trust_remote_code=trust_remote_code)
        except UntrustedFileError as e:
            raise UntrustedFileError(
                f"run {str(run)!r}: {e}. With python -m sb3_vla.evaluate / sb3_vla.record that is {CLI_OPT_IN}"
            ) from e
    except BaseException:
        venv.close()
        raise
    trained = read_zip_num_timesteps(path)
    if trained is not None:
        set_schedule_step(venv, trained)  # a residual-scale schedule at the value the policy was trained at
    seed = args.get("eval_seed")
    eval_seed = int(seed) if seed is not None else int(args.get("seed", 0)) + DEFAULT_EVAL_SEED
    return LoadedRun(run, algo, env_id, cfg, policy, venv, eval_seed)


def _load_normalization(run: Path, params_dir: Path, venv: VecEnv, trust_remote_code: bool) -> VecNormalize:
    """The run's VecNormalize in eval mode: from ``vecnormalize.npz``; from ``vecnormalize.pkl`` only with
    ``trust_remote_code``."""
    npz, pkl = params_dir / VEC_NORMALIZE_NPZ, params_dir / "vecnormalize.pkl"
    if npz.is_file():
        return vec_normalize_from_npz(npz, venv)
    if not pkl.is_file():
        raise ValueError(f"run {str(run)!r} normalises observations but has no {npz.relative_to(run)}")
    if not trust_remote_code:
        raise UntrustedFileError(
            f"run {str(run)!r} normalises observations but has only {pkl.relative_to(run)}, a pickle, and "
            f"unpickling can run code from the file (sb3_vla.train writes {VEC_NORMALIZE_NPZ} beside it); pass "
            f"{CLI_OPT_IN} if you trust the run folder"
        )
    out = VecNormalize.load(str(pkl), venv)
    out.training, out.norm_reward = False, False
    return out


def base_env(
    env_id: str,
    base: str,
    algo: str = "sac",
    conf_file: str | None = None,
    hyperparams: list[str] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    n_envs: int = 1,
    device: str = "auto",
) -> VecEnv:
    """The residual env stack of ``env_id``'s YAML entry with ``base`` (as ``sb3_vla.train --base`` builds it),
    for judging the base with :class:`~sb3_vla.evaluation.ZeroResidualPolicy`."""
    env_id = resolve_env_alias(env_id)
    check_env_id(env_id)
    conf: Path | str | None = conf_file
    if conf is None:
        candidate = default_conf_dir() / f"{algo}.yml"
        conf = candidate if candidate.is_file() else None
    hp, _ = load_hyperparams(conf, env_id)
    cfg = resolve(algo, env_id, hp, parse_key_values(hyperparams), base=base, n_timesteps=1)
    cfg.env_kwargs.update(env_kwargs or {})
    return build_vec_env(cfg, n_envs, 0, "dummy", device, training=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sb3_vla.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", nargs="?", default=None, metavar="RUN_DIR", help="an sb3_vla.train run folder")
    p.add_argument("--env", default=None, help="env id (required with --base)")
    p.add_argument("--base", default=None, help="evaluate this base spec alone (zero residual)")
    p.add_argument("--episodes", "-n", type=int, default=20)
    p.add_argument("--seed", type=int, default=None, help="reset seed of episode 0 (default: 10000 / the run's)")
    p.add_argument("--n-envs", type=int, default=1, help="parallel eval envs (results do not depend on it)")
    p.add_argument("--model", choices=["final", "best"], default="final", help="RUN_DIR: which model zip")
    p.add_argument("--no-base", action="store_true", help="RUN_DIR: skip evaluating the run's base")
    p.add_argument("--algo", default="sac", help="--base: the YAML file zoo_configs/<algo>.yml to read")
    p.add_argument("--conf-file", default=None, help="--base: rl-zoo-format YAML keyed by env id")
    p.add_argument("-params", "--hyperparams", nargs="+", default=None, metavar="KEY:VALUE")
    p.add_argument("--env-kwargs", nargs="+", default=None, metavar="KEY:VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="RUN_DIR: allow unpickling the run's files (vecnormalize.pkl, the zip), which runs code from them",
    )
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    return p


def _report(name: str, results: EpisodeResults, confidence: float) -> dict[str, Any]:
    print(f"{name}: {results.describe(confidence)}")
    out = results.summary(confidence)
    out["returns"] = results.returns.tolist()
    if results.successes is not None:
        out["successes"] = results.successes.astype(int).tolist()
    return out


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the CLI's evaluation; return ``{"seeds": [first, last], "<name>": summary, ...}``."""
    if (args.run_dir is None) == (args.base is None):
        raise ValueError("give exactly one of RUN_DIR (a trained run) or --base SPEC (a base alone)")
    env_kwargs = parse_key_values(args.env_kwargs)
    out: dict[str, Any] = {}
    if args.base is not None:
        if not args.env:
            raise ValueError("--base needs --env ENV (e.g. --env GarmentFold-v0)")
        venv = base_env(args.env, args.base, args.algo, args.conf_file, args.hyperparams, env_kwargs, args.n_envs)
        seed = DEFAULT_EVAL_SEED if args.seed is None else args.seed
        try:
            res = evaluate_episodes(ZeroResidualPolicy(venv.action_space), venv, args.episodes, seed)
        finally:
            venv.close()
        print(f"{args.env}, {args.episodes} episodes, seeds {seed}-{seed + args.episodes - 1}")
        out["base"] = _report(f"base {args.base}", res, args.confidence)
    else:
        trust = bool(getattr(args, "trust_remote_code", False))
        run = load_run(args.run_dir, args.model, args.n_envs, args.device, env_kwargs, trust_remote_code=trust)
        if args.env and args.env != run.env_id:
            run.venv.close()
            raise ValueError(f"--env {args.env} but the run {str(run.run_dir)!r} trained on {run.env_id}")
        seed = run.eval_seed if args.seed is None else args.seed
        print(f"{run.env_id}, {args.episodes} episodes, seeds {seed}-{seed + args.episodes - 1}")
        try:
            res = evaluate_episodes(run.model, run.venv, args.episodes, seed)
            out["policy"] = _report(f"{args.model} policy", res, args.confidence)
            if not args.no_base and has_residual_wrapper(run.venv):
                res = evaluate_episodes(ZeroResidualPolicy(run.venv.action_space), run.venv, args.episodes, seed)
                out["base"] = _report("base alone", res, args.confidence)
        finally:
            run.venv.close()
    out["seeds"] = [seed, seed + args.episodes - 1]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_threads(-1, args.device)  # one torch thread on CPU, as sb3_vla.train
    try:
        evaluate(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
