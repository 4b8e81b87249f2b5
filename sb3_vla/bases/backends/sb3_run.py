"""A model's run folder: the residual settings a residual policy was trained with, read back for ``sb3:`` replay.

``sb3_vla.train`` saves the resolved, zoo-format config beside the model: ``<run>/<env>.zip`` and
``<run>/<env>/config.yml``, whose VLA observation and residual wrapper entries hold the base spec and the residual
settings (the fields of :class:`sb3_vla.wrappers.ResidualConfig`). The ``sb3:`` base reads them with
``yaml.safe_load`` (no code runs), so a residual policy replays on its own base without the user typing them again.

>>> entry = {"env_wrapper": [{"sb3_vla.wrappers.VLAObservationWrapper": {"base": "scripted"}},
...                          {"sb3_vla.wrappers.ResidualActionWrapper": {"residual_scale": 0.2}}]}
>>> replay_options(saved_residual_settings(entry))
{'inner_base': 'scripted', 'residual_scale': 0.2}
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sb3_vla.bases.backends.sb3_files import UntrustedFileError

__all__ = [
    "REPLAY_IGNORED",
    "REPLAY_OPTIONS",
    "REPLAY_PARTIAL",
    "REPLAY_UNSUPPORTED",
    "RUN_CONFIG",
    "asks_for_trust_remote_code",
    "find_run_config",
    "read_run_config",
    "replay_options",
    "saved_replay_options",
    "saved_residual_settings",
]

RUN_CONFIG = "config.yml"

#: a run's saved residual settings (:class:`sb3_vla.wrappers.ResidualConfig` fields) -> ``SB3PolicyBase``
#: arguments: what replay needs to compose the action as the training wrappers did
REPLAY_OPTIONS = {
    "base": "inner_base",
    "base_kwargs": "inner_base_kwargs",
    "action_adapter": "action_adapter",
    "instruction": "instruction",
    "residual_scale": "residual_scale",
    "absolute_dims": "absolute_dims",
    "override_dims": "override_dims",
    "residual_map": "residual_map",
    "decision_interval": "decision_interval",
}
#: settings that change what the agent saw or was rewarded, not the action a policy computes from what it sees
REPLAY_IGNORED = ("drop_keys", "add_action", "nonfinite", "base_key", "keep_base_in_obs", "residual_penalty")
#: settings replay cannot reproduce (it queries the inner base and the policy at every step): a warning when not 1
REPLAY_UNSUPPORTED = ("query_interval",)
#: replay options it reproduces only in part, with the same warning: ``decision_interval`` converts the zip's
#: decision count into the env steps a scale schedule counted, but replay still decides at every step
REPLAY_PARTIAL = ("decision_interval",)

#: class names of the wrappers whose kwargs are the residual settings, in ``env_wrapper`` or ``vec_env_wrapper``
OBS_WRAPPER_CLASSES = ("VLAObservationWrapper", "VecVLAObservationWrapper")
RESIDUAL_WRAPPER_CLASSES = ("ResidualActionWrapper", "VecResidualActionWrapper")


def _wrapper_role(name: str) -> str | None:
    """``"observation"`` / ``"residual"`` for a dotted name of one of our VLA wrappers (``sb3_vla.wrappers.X`` or
    its module path), else ``None``; by name only, so nothing is imported."""
    module, _, cls = name.rpartition(".")
    if module != "sb3_vla.wrappers" and not module.startswith("sb3_vla.wrappers."):
        return None
    return "observation" if cls in OBS_WRAPPER_CLASSES else "residual" if cls in RESIDUAL_WRAPPER_CLASSES else None


def saved_residual_settings(entry: Any) -> dict[str, Any] | None:
    """The residual settings of a zoo-format entry: the kwargs of its VLA observation and residual wrappers (in
    ``env_wrapper`` or ``vec_env_wrapper``) merged into one mapping, the form of
    :meth:`sb3_vla.wrappers.ResidualConfig.to_dict`; ``None`` when it has no VLA observation wrapper.

    >>> saved_residual_settings({"env_wrapper": [{"sb3_vla.wrappers.VLAObservationWrapper": {"base": "zero"}},
    ...                                          {"sb3_vla.wrappers.ResidualActionWrapper": {"residual_scale": 0.2}}]})
    {'base': 'zero', 'residual_scale': 0.2}
    """
    if not isinstance(entry, dict):
        return None
    found: dict[str, dict[str, Any]] = {}
    for key in ("env_wrapper", "vec_env_wrapper"):
        items = entry.get(key) or []
        for item in items if isinstance(items, list) else [items]:
            name, kwargs = next(iter(item.items())) if isinstance(item, dict) and len(item) == 1 else (item, None)
            role = _wrapper_role(name) if isinstance(name, str) else None
            if role is not None:
                if kwargs is not None and not isinstance(kwargs, dict):
                    raise ValueError(f"the kwargs of {name} must be a mapping, got {kwargs!r}")
                found[role] = dict(kwargs or {})
    if "observation" not in found:
        return None
    return {**found["observation"], **found.get("residual", {})}


def find_run_config(model_path: str | Path) -> Path | None:
    """The resolved config saved with a model by ``sb3_vla.train``: ``<zip dir>/<zip stem>/config.yml`` (the final
    ``<run>/<env>.zip``), else ``<zip dir>/config.yml``, else the one ``<run>/<env>/config.yml`` of the run folder
    the zip lies in (``<run>/best_model.zip``); ``None`` when there is none."""
    path = Path(model_path)
    for cand in (path.parent / path.stem / RUN_CONFIG, path.parent / RUN_CONFIG):
        if cand.is_file():
            return cand
    found = [p for p in path.parent.glob(f"*/{RUN_CONFIG}") if (p.parent / "args.yml").is_file()]
    return found[0] if len(found) == 1 else None


def read_run_config(path: str | Path) -> dict[str, Any]:
    """A run's ``config.yml`` as plain data (``yaml.safe_load``: no code runs); a broken file raises ``ValueError``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read the run's saved config {str(path)!r} ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"the run's saved config {str(path)!r} is not a mapping of hyperparameters")
    return data


def asks_for_trust_remote_code(value: Any) -> bool:
    """Whether saved data opts in to ``trust_remote_code`` anywhere: a true ``trust_remote_code`` key, or
    ``trust_remote_code=...`` (not ``False`` / ``0`` / ``None``) in a base spec string.

    >>> asks_for_trust_remote_code({"base": "hf:/m?trust_remote_code=True"}), asks_for_trust_remote_code("zero")
    (True, False)
    """
    if isinstance(value, dict):
        return any((k == "trust_remote_code" and bool(v)) or asks_for_trust_remote_code(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(asks_for_trust_remote_code(v) for v in value)
    if isinstance(value, str):
        return re.search(r"trust_remote_code\s*=\s*(?!False\b|0\b|None\b)", value) is not None
    return False


def replay_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Residual settings (:class:`~sb3_vla.wrappers.ResidualConfig` fields) as ``SB3PolicyBase`` arguments: the
    :data:`REPLAY_OPTIONS` among them, renamed."""
    return {opt: settings[key] for key, opt in REPLAY_OPTIONS.items() if key in settings}


def saved_replay_options(path: str | Path, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``SB3PolicyBase`` arguments a run folder saved for the model at ``path`` (the :data:`REPLAY_OPTIONS` of
    its ``<env>/config.yml``, read with ``yaml.safe_load``), leaving out those in ``given``; ``{}`` when the zip lies
    in no run folder, the run had no base, or ``given`` sets ``inner_base=None`` (replay as a plain policy)."""
    given = dict(given or {})
    config_path = find_run_config(path)
    if config_path is None or ("inner_base" in given and given["inner_base"] is None):
        return {}
    settings = saved_residual_settings(read_run_config(config_path))
    if settings is None:
        return {}
    out = {opt: value for opt, value in replay_options(settings).items() if opt not in given}
    if "inner_base" in given:
        out.pop("inner_base_kwargs", None)  # the saved kwargs are those of the saved base
    if asks_for_trust_remote_code([out.get("inner_base"), out.get("inner_base_kwargs")]):
        raise UntrustedFileError(
            f"sb3:{path}: the run's saved config {str(config_path)!r} builds its base with trust_remote_code (code "
            "from the model's files would run); pass inner_base (and inner_base_kwargs) yourself to opt in"
        )
    for key in REPLAY_UNSUPPORTED + REPLAY_PARTIAL:
        if settings.get(key, 1) != 1:
            warnings.warn(
                f"sb3:{path}: the policy was trained with {key}={settings[key]}, but replay queries its inner base "
                "and the policy at every step it is queried, so its actions can differ from the training run's",
                UserWarning,
                stacklevel=3,
            )
    return out
