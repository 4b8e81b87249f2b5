"""What a run folder holds, and how a run resumes from it with its own frozen config.

``sb3_vla.train`` writes plain files beside the model so it can be replayed without unpickling:
``<run>/<env>/policy.json`` (the policy's class, kwargs and spaces) and ``<run>/<env>/vecnormalize.npz``
(VecNormalize statistics as arrays). ``vecnormalize.pkl`` is still written for rl-zoo / SB3 tools; sb3-vla reads
it only with ``trust_remote_code``.

On ``--resume`` the run uses its saved resolved config (``<run>/<env>/config.yml``). The YAML and ``-params`` are
resolved again only to compare: a difference is refused, listing it, unless ``--allow-config-change``.

Example:

>>> config_diff({"gamma": 0.99, "batch_size": 256}, {"gamma": 0.9, "batch_size": 256})
['gamma: 0.99 (saved) -> 0.9 (now)']
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_vla.bases.backends.sb3_files import POLICY_SPEC, VEC_NORMALIZE_NPZ, save_vec_normalize, write_policy_spec
from sb3_vla.bases.backends.sb3_run import asks_for_trust_remote_code
from sb3_vla.checkpoint import guard_write
from sb3_vla.config import ResolvedConfig, canonical_entry, resolve

CONFIG_FLAGS = ("conf_file", "hyperparams", "base", "env_kwargs")
_IGNORED = ("n_timesteps",)  # extending the budget on resume is not a config change


def env_folder_name(env_id: str) -> str:
    """The env id as a folder name (``/`` and ``:`` replaced)."""
    return env_id.replace("/", "-").replace(":", "-")


def save_model_files(model: BaseAlgorithm, run_dir: Path, params_dir: Path, verbose: int = 1) -> Path:
    """Save the final model (``<run>/<env>.zip``) and its plain files under ``params_dir`` (``<run>/<env>/``); a
    full disk raises :class:`~sb3_vla.checkpoint.DiskFullError` naming the folder."""
    params_dir.mkdir(parents=True, exist_ok=True)
    with guard_write(run_dir, "the final model"):
        model.save(run_dir / params_dir.name)
        try:
            write_policy_spec(model.policy, params_dir / POLICY_SPEC)
        except TypeError as e:
            (params_dir / POLICY_SPEC).unlink(missing_ok=True)
            if verbose:
                print(f"note: no {POLICY_SPEC} ({e}); sb3: bases read the zip's data with the safe reader instead")
        venv = model.get_vec_normalize_env()
        if venv is not None:
            save_vec_normalize(venv, params_dir / VEC_NORMALIZE_NPZ)
            venv.save(str(params_dir / "vecnormalize.pkl"))  # for rl-zoo / SB3 tools; sb3-vla reads the npz
    return run_dir / f"{params_dir.name}.zip"


def _read_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"--resume: cannot read the run's {what} {str(path)!r} ({e})") from e


def resume_args(args: argparse.Namespace, run_dir: Path, defaults: argparse.Namespace) -> argparse.Namespace:
    """The run's saved arguments (``<env>/args.yml``, read as plain YAML), with what the command line gives now:
    ``-n``, the display flags, the opt-in flags and any config flag (compared with the saved config later)."""
    found = sorted(run_dir.glob("*/args.yml"))
    if not found:
        raise ValueError(f"--resume {str(run_dir)!r}: not a run folder (no <env>/args.yml inside)")
    saved = _read_yaml(found[0], "arguments")
    if not isinstance(saved, dict):
        raise ValueError(f"--resume: {str(found[0])!r} is not a mapping of arguments")
    merged = argparse.Namespace(**{**vars(defaults), **saved})
    merged.resume = str(run_dir)
    saved_n = saved.get("n_timesteps")
    merged.n_timesteps = args.n_timesteps if args.n_timesteps is not None else (saved_n if (saved_n or 0) > 0 else None)
    for name in ("progress", "allow_config_change", "trust_remote_code", "verbose"):
        if hasattr(args, name):
            setattr(merged, name, getattr(args, name))
    merged.config_flags_given = [f for f in CONFIG_FLAGS if getattr(args, f, None) is not None]
    for name in merged.config_flags_given:  # -params / --env-kwargs given now are layered over the saved ones
        now = getattr(args, name)
        setattr(merged, name, [*(saved.get(name) or []), *now] if name in ("hyperparams", "env_kwargs") else now)
    config_path = found[0].parent / "config.yml"
    saved_config = _read_yaml(config_path, "config") if config_path.is_file() else None
    if asks_for_trust_remote_code([saved, saved_config]) and not getattr(args, "trust_remote_code", False):
        raise ValueError(
            f"--resume {str(run_dir)!r}: the run folder's saved config loads files with trust_remote_code (code "
            "from those files would run); add --trust-remote-code to this command if you trust the run folder"
        )
    return merged


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def config_diff(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: old (saved) -> new (now)`` for every differing entry (nested mappings by dotted key)."""
    old = {k: v for k, v in _flatten(saved).items() if k not in _IGNORED}
    new = {k: v for k, v in _flatten(now).items() if k not in _IGNORED}
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if a != b:
            lines.append(f"{key}: {a} (saved) -> {b} (now)")
    return lines


def frozen_config(
    args: argparse.Namespace,
    run_dir: Path,
    resolve_now: Callable[[argparse.Namespace], ResolvedConfig],
    yaml_safe: Callable[[Any], Any],
) -> ResolvedConfig:
    """The config a resumed run uses: its saved ``config.yml``; or, with ``--allow-config-change``, the YAML and
    ``-params`` as they are now (the old config is kept as ``config.<k>.yml``)."""
    config_path = run_dir / env_folder_name(args.env) / "config.yml"
    saved = _read_yaml(config_path, "config")
    if not isinstance(saved, dict):
        raise ValueError(f"--resume: {str(config_path)!r} is not a mapping of hyperparameters")
    saved = canonical_entry(saved, args.env)  # a run saved with our wrappers under env_wrapper compares equal
    frozen = resolve(args.algo, args.env, saved, {}, n_timesteps=args.n_timesteps)
    try:
        now = resolve_now(args)
    except ValueError as e:
        if getattr(args, "config_flags_given", None):
            raise
        print(f"note: the run's YAML cannot be read again ({e}); resuming with the saved config {config_path}")
        return frozen
    diffs = config_diff(saved, yaml_safe(now.saved))
    if not diffs:
        return frozen
    listing = "\n  ".join(diffs)
    if not getattr(args, "allow_config_change", False):
        raise ValueError(
            f"--resume {str(run_dir)!r}: the YAML / -params now differ from the run's saved config "
            f"({config_path}):\n  {listing}\nPass --allow-config-change to resume with the new values, or undo the "
            "change to resume with the saved ones"
        )
    k = 1 + len(list(config_path.parent.glob("config.*.yml")))
    config_path.rename(config_path.with_name(f"config.{k}.yml"))
    config_path.write_text(yaml.safe_dump(yaml_safe(now.saved), sort_keys=True))
    print(f"Resuming with a changed config (old one kept as config.{k}.yml):\n  {listing}")
    return now
