"""The best trial of a study as a ready zoo YAML entry, which both ``python -m sb3_vla.train --conf-file`` and
``python -m rl_zoo3.train --conf-file`` read: a dotted residual ``policy`` (its default extractor is ours, which
rl-zoo's ``policy_kwargs`` strings cannot name), ``policy_kwargs`` as a string rl-zoo can evaluate with only
``th`` / ``nn`` / ``np`` in scope, our wrappers with the trial's knobs under ``vec_env_wrapper``, and the intended
training budget as ``n_timesteps``.

>>> from torch import nn
>>> py_expr({"net_arch": [64, 64], "activation_fn": nn.ReLU})
'dict(net_arch=[64, 64], activation_fn=nn.ReLU)'
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch as th
import yaml
from torch import nn

from sb3_vla.core.algos import residual_policies
from sb3_vla.core.imports import import_object
from sb3_vla.experiment import yaml_safe
from sb3_vla.extractor import VLAFeaturesExtractor
from sb3_vla.tuning.study import safe_url
from sb3_vla.tuning.trial import TuneSetup


def py_expr(value: Any) -> str:
    """A Python expression for a policy_kwargs value that rl-zoo can ``eval`` with only th/nn/np in scope."""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={py_expr(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list | tuple):
        inner = ", ".join(py_expr(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, type):
        name = value.__name__
        if issubclass(value, nn.Module) and getattr(nn, name, None) is value:
            return f"nn.{name}"
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
        entry["policy_kwargs"] = py_expr(pk)
    for key in ("learning_rate", "gamma", "tau", "gae_lambda", "ent_coef", "max_grad_norm", "noise_std"):
        if isinstance(entry.get(key), float):
            entry[key] = float(f"{entry[key]:.6g}")
    for item in entry.get("vec_env_wrapper", []):
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
    safe: dict[str, Any] = yaml_safe(entry)
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
        + (f" ({safe_url(storage_url)})" if storage_url else "")
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
