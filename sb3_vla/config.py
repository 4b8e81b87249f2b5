"""rl-zoo-format hyperparameters: load a YAML keyed by env id, apply overrides, validate, and split them into the
parts that build the env stack, the model and the callbacks.

The same YAML works unchanged with ``python -m rl_zoo3.train`` (which applies the listed ``env_wrapper`` classes
per env) and with ``python -m sb3_vla.train`` (which turns :class:`~sb3_vla.wrappers.VLAObservationWrapper` /
:class:`~sb3_vla.wrappers.ResidualActionWrapper` entries into their batched VecEnv versions with one shared base).
"""

from __future__ import annotations

import copy
import difflib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sb3_vla.core.algos import algorithms, residual_policies
from sb3_vla.core.imports import import_object
from sb3_vla.literal import parse_config_string

OBS_WRAPPER_NAMES = ("sb3_vla.wrappers.VLAObservationWrapper", "sb3_vla.wrappers.observation.VLAObservationWrapper")
RESIDUAL_WRAPPER_NAMES = ("sb3_vla.wrappers.ResidualActionWrapper", "sb3_vla.wrappers.residual.ResidualActionWrapper")
OBS_WRAPPER = OBS_WRAPPER_NAMES[0]
RESIDUAL_WRAPPER = RESIDUAL_WRAPPER_NAMES[0]

# Keys rl-zoo consumes itself (not passed to the algorithm constructor).
ZOO_KEYS = {
    "n_timesteps",
    "n_envs",
    "policy",
    "policy_kwargs",
    "normalize",
    "normalize_kwargs",
    "env_wrapper",
    "vec_env_wrapper",
    "callback",
    "frame_stack",
    "env_kwargs",
    "monitor_kwargs",
    "noise_type",
    "noise_std",
    "replay_buffer_class",
    "replay_buffer_kwargs",
}
# Residual knobs accepted from the CLI (-params) and routed into the wrappers' kwargs.
OBS_WRAPPER_KEYS = ("base", "query_interval", "action_adapter", "drop_keys", "add_action", "nonfinite", "instruction")
RESIDUAL_KEYS = (
    "residual_scale",
    "absolute_dims",
    "override_dims",
    "keep_base_in_obs",
    "residual_map",
    "decision_interval",
    "residual_penalty",
)
OBS_EXTRA_KEYS = ("base_kwargs",)


def default_conf_dir() -> Path:
    """The repo's ``zoo_configs/`` folder (beside the package in a source checkout)."""
    return Path(__file__).resolve().parent.parent / "zoo_configs"


def load_hyperparams(
    conf_file: str | Path | None, env_id: str, required: bool = False
) -> tuple[dict[str, Any], str | None]:
    """Read the entry for ``env_id`` from a zoo YAML; return ``(hyperparams, source)``.

    A missing entry gives ``{}`` (SB3 defaults) with ``source=None``, or with ``required`` (a ``--conf-file`` the
    user named) a ``ValueError`` listing the file's env ids; a broken file raises ``ValueError``.
    """
    if conf_file is None:
        return {}, None
    path = Path(conf_file)
    if not path.is_file():
        raise ValueError(f"conf file {str(path)!r} does not exist; pass --conf-file zoo_configs/<algo>.yml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"conf file {str(path)!r} is not valid YAML: {e}") from e
    if data is None and not required:
        return {}, None
    if not isinstance(data, dict):
        raise ValueError(f"conf file {str(path)!r} must map env ids to hyperparameters, got {type(data).__name__}")
    if env_id not in data:
        if required:
            close = difflib.get_close_matches(env_id, [str(k) for k in data], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"conf file {str(path)!r} has no entry for {env_id!r}{hint}; it has {sorted(map(str, data))}. Add an "
                f"entry '{env_id}:' or drop --conf-file to train with SB3 defaults"
            )
        return {}, None
    entry = data[env_id] or {}
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: the entry for {env_id!r} must be a mapping, got {type(entry).__name__}")
    return copy.deepcopy(entry), f"{path}:{env_id}"


def _wrapper_list(value: Any) -> list[tuple[str, dict[str, Any]]]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, dict) and len(item) == 1:
            name, kwargs = next(iter(item.items()))
            if kwargs is not None and not isinstance(kwargs, dict):
                raise ValueError(f"env_wrapper {name!r}: kwargs must be a mapping, got {kwargs!r}")
            out.append((str(name), dict(kwargs or {})))
        else:
            raise ValueError(f"env_wrapper entries must be 'dotted.Name' or {{dotted.Name: {{kwargs}}}}, got {item!r}")
    return out


def _schedule(value: Any, key: str) -> Any:
    """rl-zoo schedule strings: ``lin_0.001`` -> linear decay from 0.001 to 0."""
    if isinstance(value, str):
        if value.startswith("lin_"):
            try:
                initial = float(value[4:])
            except ValueError as e:
                raise ValueError(f"{key}: cannot read the linear schedule {value!r} (e.g. lin_3e-4)") from e

            def linear(progress_remaining: float) -> float:
                return progress_remaining * initial

            return linear
        try:
            return float(value)
        except ValueError as e:
            raise ValueError(f"{key} must be a number or 'lin_<number>', got {value!r}") from e
    return value


@dataclass
class ResolvedConfig:
    """Hyperparameters split by destination."""

    env_id: str
    algo: str
    n_timesteps: int
    n_envs: int
    policy: Any
    model_kwargs: dict[str, Any]
    env_kwargs: dict[str, Any]
    obs_wrapper_kwargs: dict[str, Any] | None  # None: plain RL, no base
    residual_kwargs: dict[str, Any] | None
    other_wrappers: list[tuple[str, dict[str, Any]]]
    vec_env_wrappers: list[tuple[str, dict[str, Any]]]
    normalize: dict[str, Any] | None
    callbacks: list[tuple[str, dict[str, Any]]]
    saved: dict[str, Any] = field(default_factory=dict)  # zoo-format entry after overrides, YAML-safe


def resolve(
    algo: str,
    env_id: str,
    hyperparams: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    base: str | None = None,
    n_timesteps: int | None = None,
) -> ResolvedConfig:
    """Merge YAML hyperparameters with CLI overrides and check them against the algorithm's signature.

    :param algo: algorithm name (``sac``, ``ppo`` ...).
    :param env_id: the env id.
    :param hyperparams: the YAML entry for the env.
    :param overrides: ``-params`` overrides; residual knobs (``residual_scale``, ``query_interval`` ...) are routed
        into the wrappers' kwargs.
    :param base: ``--base`` spec; adds the VLA wrappers if the YAML has none.
    :param n_timesteps: ``-n``; overrides ``n_timesteps``.
    """
    algos = algorithms()
    if algo not in algos:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of {sorted(algos)}")
    hp = copy.deepcopy(hyperparams)
    overrides = dict(overrides or {})
    wrappers = _wrapper_list(hp.pop("env_wrapper", None))
    obs_kwargs: dict[str, Any] | None = None
    res_kwargs: dict[str, Any] | None = None
    others: list[tuple[str, dict[str, Any]]] = []
    for name, kwargs in wrappers:
        if name in OBS_WRAPPER_NAMES:
            obs_kwargs = kwargs
        elif name in RESIDUAL_WRAPPER_NAMES:
            res_kwargs = kwargs
        else:
            if obs_kwargs is not None:
                raise ValueError(
                    f"env_wrapper {name!r} comes after VLAObservationWrapper; per-env wrappers must come before the "
                    "VLA wrappers (sb3_vla.train batches those over all envs)"
                )
            others.append((name, kwargs))
    for key in list(overrides):
        if key in OBS_WRAPPER_KEYS or key in OBS_EXTRA_KEYS:
            obs_kwargs = {} if obs_kwargs is None else obs_kwargs
            obs_kwargs[key] = overrides.pop(key)
        elif key in RESIDUAL_KEYS:
            res_kwargs = {} if res_kwargs is None else res_kwargs
            res_kwargs[key] = overrides.pop(key)
    if base is not None:
        obs_kwargs = {} if obs_kwargs is None else obs_kwargs
        obs_kwargs["base"] = base
    _check_wrappers(env_id, others, obs_kwargs, res_kwargs)
    if obs_kwargs is not None and "base" not in obs_kwargs:
        raise ValueError(f"{env_id}: VLAObservationWrapper needs a base (give --base SPEC or base: in the YAML)")
    if res_kwargs is not None and obs_kwargs is None:
        raise ValueError(f"{env_id}: ResidualActionWrapper needs a base (give --base SPEC or a VLAObservationWrapper)")
    if obs_kwargs is not None and res_kwargs is None:
        res_kwargs = {}
    hp.update(overrides)

    algo_cls = algos[algo]
    valid = set(inspect.signature(algo_cls).parameters) - {"self", "env", "policy"}
    unknown = [k for k in hp if k not in valid and k not in ZOO_KEYS]
    if unknown:
        hints = {k: difflib.get_close_matches(k, sorted(valid | ZOO_KEYS), n=1) for k in unknown}
        hint = "; ".join(f"{k!r}" + (f" (did you mean {v[0]!r}?)" if v else "") for k, v in hints.items())
        raise ValueError(
            f"unknown hyperparameter(s) for {algo_cls.__name__} on {env_id}: {hint}. Valid keys are the "
            f"{algo_cls.__name__} constructor arguments and the zoo keys {sorted(ZOO_KEYS)}"
        )
    _check_types(hp, algo_cls, env_id)

    saved = copy.deepcopy(hp)
    saved_wrappers: list[Any] = [{n: k} if k else n for n, k in others]
    if obs_kwargs is not None:
        saved_wrappers.append({OBS_WRAPPER: dict(obs_kwargs)})
        saved_wrappers.append({RESIDUAL_WRAPPER: dict(res_kwargs or {})})
    if saved_wrappers:
        saved["env_wrapper"] = saved_wrappers

    if n_timesteps is not None and n_timesteps <= 0:
        raise ValueError(f"-n {n_timesteps}: the training budget must be a positive number of env steps (-n 10000)")
    steps = n_timesteps if n_timesteps is not None else hp.pop("n_timesteps", None)
    hp.pop("n_timesteps", None)
    if steps is None:
        raise ValueError(f"no n_timesteps for {env_id}: pass -n STEPS or set n_timesteps in the YAML")
    if float(steps) <= 0:
        raise ValueError(f"{env_id}: n_timesteps must be > 0, got {steps!r}")
    saved["n_timesteps"] = int(float(steps))
    n_envs = int(hp.pop("n_envs", 1))
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")

    policy = hp.pop("policy", None)
    if policy is None:
        policy = residual_policies().get(algo, "MultiInputPolicy") if obs_kwargs is not None else None
    if isinstance(policy, str) and "." in policy:
        policy = import_object(policy)

    normalize = _normalize(hp.pop("normalize", False), hp.pop("normalize_kwargs", None), hp.get("gamma"))
    callbacks = _wrapper_list(hp.pop("callback", None))
    vec_wrappers = _wrapper_list(hp.pop("vec_env_wrapper", None))
    env_kwargs = hp.pop("env_kwargs", None) or {}
    env_kwargs = parse_config_string(env_kwargs, "env_kwargs")
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"{env_id}: env_kwargs must be a mapping, got {env_kwargs!r}")
    if hp.pop("frame_stack", None):
        raise ValueError("frame_stack is not supported by sb3_vla.train; stack frames in an env_wrapper instead")
    hp.pop("monitor_kwargs", None)
    for key in ("policy_kwargs", "replay_buffer_kwargs"):
        if key in hp:
            hp[key] = parse_config_string(hp[key], key)
            if hp[key] is not None and not isinstance(hp[key], dict):
                raise ValueError(f"{env_id}: {key} must be a mapping such as dict(net_arch=[64, 64]), got {hp[key]!r}")
    if isinstance(hp.get("replay_buffer_class"), str):
        hp["replay_buffer_class"] = import_object(hp["replay_buffer_class"])
    noise_type = hp.pop("noise_type", None)
    noise_std = hp.pop("noise_std", None)
    if noise_type is not None:
        hp["action_noise_spec"] = (noise_type, float(noise_std or 0.1))
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        if key in hp:
            hp[key] = _schedule(hp[key], key)
    if isinstance(hp.get("train_freq"), list):
        hp["train_freq"] = tuple(hp["train_freq"])
    return ResolvedConfig(
        env_id=env_id,
        algo=algo,
        n_timesteps=int(float(steps)),
        n_envs=n_envs,
        policy=policy,
        model_kwargs=hp,
        env_kwargs=dict(env_kwargs),
        obs_wrapper_kwargs=obs_kwargs,
        residual_kwargs=res_kwargs,
        other_wrappers=others,
        vec_env_wrappers=vec_wrappers,
        normalize=normalize,
        callbacks=callbacks,
        saved=saved,
    )


def _check_kwargs(env_id: str, name: str, cls: Any, kwargs: dict[str, Any], skip: tuple[str, ...]) -> None:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(n for n, p in params.items() if n not in skip and p.kind is not inspect.Parameter.VAR_POSITIONAL)
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        hints = {k: difflib.get_close_matches(k, valid, n=1) for k in unknown}
        hint = ", ".join(f"{k!r}" + (f" (did you mean {v[0]!r}?)" if v else "") for k, v in hints.items())
        raise ValueError(f"{env_id}: env_wrapper {name}: unknown kwarg(s) {hint}; it takes {valid}")


def _check_wrappers(
    env_id: str,
    others: list[tuple[str, dict[str, Any]]],
    obs_kwargs: dict[str, Any] | None,
    res_kwargs: dict[str, Any] | None,
) -> None:
    """Name a misspelt wrapper class (did you mean one of ours?) and misspelt wrapper kwargs, before any env."""
    from sb3_vla.wrappers import VecResidualActionWrapper, VecVLAObservationWrapper

    ours = [*OBS_WRAPPER_NAMES, *RESIDUAL_WRAPPER_NAMES]
    for name, kwargs in others:
        try:
            cls = import_object(name)
        except ValueError as e:
            close = difflib.get_close_matches(name, ours, n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{env_id}: env_wrapper {name!r} cannot be imported ({e}){hint}") from e
        _check_kwargs(env_id, name, cls, kwargs, ("self", "env"))
    if obs_kwargs is not None:
        _check_kwargs(env_id, OBS_WRAPPER, VecVLAObservationWrapper, obs_kwargs, ("self", "venv"))
    if res_kwargs is not None:
        _check_kwargs(env_id, RESIDUAL_WRAPPER, VecResidualActionWrapper, res_kwargs, ("self", "venv"))


def _check_types(hp: dict[str, Any], algo_cls: type, env_id: str) -> None:
    """Check each value against the type of the constructor default, naming the key; numeric strings such as
    ``"1e6"`` (YAML 1.1 reads them as strings) become numbers, integral ones for integer arguments."""
    params = inspect.signature(algo_cls).parameters
    for key, value in list(hp.items()):
        if key in ("n_timesteps", "n_envs"):
            ok = isinstance(value, int | float) or (isinstance(value, str) and _is_number(value))
            if not ok or isinstance(value, bool):
                raise ValueError(f"{env_id}: {key} must be a number, got {value!r}")
            continue
        p = params.get(key)
        if p is None or p.default is inspect.Parameter.empty or p.default is None:
            continue
        default = p.default
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        numeric_str = isinstance(value, str) and _is_number(value)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{env_id}: {key} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if key == "train_freq" and isinstance(value, list | tuple):
                continue  # [1, "episode"]
            if not (numeric or numeric_str):
                raise ValueError(f"{env_id}: {key} must be an integer, got {value!r} ({type(value).__name__})")
            number = float(value)
            if number != int(number):
                raise ValueError(f"{env_id}: {key} must be an integer, got {value!r}")
            hp[key] = int(number)
        elif isinstance(default, float):
            lin = isinstance(value, str) and value.startswith("lin_")
            if not (numeric or numeric_str or lin or callable(value)):
                raise ValueError(f"{env_id}: {key} must be a number, got {value!r} ({type(value).__name__})")
            if numeric_str:
                hp[key] = float(value)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _normalize(value: Any, kwargs: Any, gamma: Any) -> dict[str, Any] | None:
    value = parse_config_string(value, "normalize")  # rl-zoo: "dict(norm_obs=True, norm_reward=False)"
    if isinstance(value, dict):
        out = dict(value)
    elif value:
        out = {}
    else:
        return None
    if isinstance(kwargs, dict):
        out.update(kwargs)
    if gamma is not None:
        out.setdefault("gamma", gamma)
    return out
