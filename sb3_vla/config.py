"""rl-zoo-format hyperparameters: load a YAML keyed by env id, apply overrides, validate, and split them into the
parts that build the env stack, the model and the callbacks.

Our batched wrappers go under rl-zoo's own ``vec_env_wrapper`` key (:class:`~sb3_vla.wrappers.VecVLAObservationWrapper`
then :class:`~sb3_vla.wrappers.VecResidualActionWrapper`, one base forward pass for all envs), other per-env wrappers
under ``env_wrapper``; so ``python -m rl_zoo3.train`` and ``python -m sb3_vla.train`` build the same stack from the
same YAML. The per-env names of our wrappers under ``env_wrapper`` (the older form) are read as the batched ones,
with a ``DeprecationWarning``.

>>> stack = wrapper_stack("Pendulum-v1", None, [{VEC_OBS_WRAPPER: {"base": "zero"}}])
>>> stack.obs, stack.residual
({'base': 'zero'}, None)
>>> stack.route({"residual_scale": 0.5, "gamma": 0.9})
>>> stack.entry()["vec_env_wrapper"][1]
{'sb3_vla.wrappers.VecResidualActionWrapper': {'residual_scale': 0.5}}
"""

from __future__ import annotations

import copy
import difflib
import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sb3_vla.core.algos import algorithms, residual_policies
from sb3_vla.core.imports import import_object
from sb3_vla.literal import parse_config_string
from sb3_vla.wrappers.config import OBS_WRAPPER_KEYS, RESIDUAL_KEYS

# our batched wrappers, under rl-zoo's vec_env_wrapper key
VEC_OBS_WRAPPER_NAMES = (
    "sb3_vla.wrappers.VecVLAObservationWrapper",
    "sb3_vla.wrappers.observation.VecVLAObservationWrapper",
)
VEC_RESIDUAL_WRAPPER_NAMES = (
    "sb3_vla.wrappers.VecResidualActionWrapper",
    "sb3_vla.wrappers.residual.VecResidualActionWrapper",
)
VEC_OBS_WRAPPER = VEC_OBS_WRAPPER_NAMES[0]
VEC_RESIDUAL_WRAPPER = VEC_RESIDUAL_WRAPPER_NAMES[0]
# their per-env versions under env_wrapper: the older YAML form, read as the batched ones (DeprecationWarning)
OBS_WRAPPER_NAMES = ("sb3_vla.wrappers.VLAObservationWrapper", "sb3_vla.wrappers.observation.VLAObservationWrapper")
RESIDUAL_WRAPPER_NAMES = ("sb3_vla.wrappers.ResidualActionWrapper", "sb3_vla.wrappers.residual.ResidualActionWrapper")
OBS_WRAPPER = OBS_WRAPPER_NAMES[0]
RESIDUAL_WRAPPER = RESIDUAL_WRAPPER_NAMES[0]

# Keys rl-zoo consumes itself (not passed to the algorithm constructor).
ZOO_KEYS = {
    *("n_timesteps", "n_envs", "policy", "policy_kwargs", "normalize", "normalize_kwargs", "env_wrapper"),
    *("vec_env_wrapper", "callback", "frame_stack", "env_kwargs", "monitor_kwargs", "noise_type", "noise_std"),
    *("replay_buffer_class", "replay_buffer_kwargs"),
}
# Residual knobs accepted from the CLI (-params) and routed into the wrappers' kwargs: the fields of the one
# declaration of the wrappers' settings (sb3_vla.wrappers.ResidualConfig).
KNOB_KEYS = (*OBS_WRAPPER_KEYS, *RESIDUAL_KEYS)


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


def _wrapper_list(value: Any, key: str = "env_wrapper") -> list[tuple[str, dict[str, Any]]]:
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
                raise ValueError(f"{key} {name!r}: kwargs must be a mapping, got {kwargs!r}")
            out.append((str(name), dict(kwargs or {})))
        else:
            raise ValueError(f"{key} entries must be 'dotted.Name' or {{dotted.Name: {{kwargs}}}}, got {item!r}")
    return out


def _as_items(wrappers: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    return [{name: dict(kwargs)} if kwargs else name for name, kwargs in wrappers]


@dataclass
class WrapperStack:
    """The wrappers of a zoo entry: per-env ``env_wrapper`` classes (not ours), the kwargs of our two batched
    wrappers (``None``: not in the stack), then the other ``vec_env_wrapper`` classes."""

    per_env: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    obs: dict[str, Any] | None = None
    residual: dict[str, Any] | None = None
    vec: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def route(self, overrides: dict[str, Any], base: str | None = None) -> None:
        """Move the residual knobs of ``overrides`` (``-params``: ``residual_scale``, ``query_interval`` ...) into
        the wrappers' kwargs (they are popped from ``overrides``); ``base`` (``--base``) adds the wrappers."""
        for key in list(overrides):
            if key in OBS_WRAPPER_KEYS:
                self.obs = {**(self.obs or {}), key: overrides.pop(key)}
            elif key in RESIDUAL_KEYS:
                self.residual = {**(self.residual or {}), key: overrides.pop(key)}
        if base is not None:
            self.obs = {**(self.obs or {}), "base": base}

    def entry(self) -> dict[str, Any]:
        """The ``env_wrapper`` / ``vec_env_wrapper`` lists of the zoo entry (keys left out when empty)."""
        out: dict[str, Any] = {}
        if self.per_env:
            out["env_wrapper"] = _as_items(self.per_env)
        ours = [(VEC_OBS_WRAPPER, self.obs)] if self.obs is not None else []
        if self.residual is not None or self.obs is not None:
            ours.append((VEC_RESIDUAL_WRAPPER, self.residual or {}))
        vec = [{name: dict(kwargs or {})} for name, kwargs in ours] + _as_items(self.vec)
        if vec:
            out["vec_env_wrapper"] = vec
        return out


def _warn_legacy(env_id: str, name: str) -> None:
    new = VEC_OBS_WRAPPER if name in OBS_WRAPPER_NAMES else VEC_RESIDUAL_WRAPPER
    warnings.warn(
        f"{env_id}: env_wrapper {name} is read as vec_env_wrapper {new} (same kwargs: one batched base for all "
        "envs); list it under vec_env_wrapper, where rl-zoo applies it too. The env_wrapper form of our wrappers is "
        "removed in the next release",
        DeprecationWarning,
        stacklevel=4,
    )


def wrapper_stack(env_id: str, env_wrapper: Any, vec_env_wrapper: Any) -> WrapperStack:
    """Read a zoo entry's ``env_wrapper`` and ``vec_env_wrapper`` values into a :class:`WrapperStack`.

    :raises ValueError: for a malformed list, a wrapper given twice, or one of ours after other wrappers of its kind
        (per-env wrappers run below the batched ones, which come first among the VecEnv wrappers).
    """
    stack = WrapperStack()
    for name, kwargs in _wrapper_list(env_wrapper):
        if name in OBS_WRAPPER_NAMES or name in RESIDUAL_WRAPPER_NAMES:
            _warn_legacy(env_id, name)
            if name in OBS_WRAPPER_NAMES:
                stack.obs = kwargs
            else:
                stack.residual = kwargs
        elif stack.obs is not None:
            raise ValueError(
                f"env_wrapper {name!r} comes after VLAObservationWrapper; per-env wrappers must come before the "
                "VLA wrappers (sb3_vla.train batches those over all envs)"
            )
        else:
            stack.per_env.append((name, kwargs))
    for name, kwargs in _wrapper_list(vec_env_wrapper, "vec_env_wrapper"):
        ours = "obs" if name in VEC_OBS_WRAPPER_NAMES else "residual" if name in VEC_RESIDUAL_WRAPPER_NAMES else None
        if ours is None:
            stack.vec.append((name, kwargs))
            continue
        if getattr(stack, ours) is not None:
            raise ValueError(f"{env_id}: {name} is given twice (in env_wrapper and vec_env_wrapper); keep one")
        if stack.vec:
            raise ValueError(
                f"{env_id}: vec_env_wrapper {stack.vec[0][0]!r} comes before {name}; list our two wrappers first "
                "(VecVLAObservationWrapper, VecResidualActionWrapper), other VecEnv wrappers after them"
            )
        setattr(stack, ours, kwargs)
    return stack


def canonical_entry(entry: dict[str, Any], env_id: str) -> dict[str, Any]:
    """A copy of a zoo entry with our wrappers under ``vec_env_wrapper`` (the older ``env_wrapper`` form
    translated, with a ``DeprecationWarning``)."""
    out = copy.deepcopy(entry)
    stack = wrapper_stack(env_id, out.pop("env_wrapper", None), out.pop("vec_env_wrapper", None))
    out.update(stack.entry())
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
    for key in ("env_wrapper", "vec_env_wrapper"):  # -params may replace a wrapper list
        if key in overrides:
            hp[key] = overrides.pop(key)
    stack = wrapper_stack(env_id, hp.pop("env_wrapper", None), hp.pop("vec_env_wrapper", None))
    stack.route(overrides, base)
    _check_wrappers(env_id, stack)
    if stack.obs is not None and "base" not in stack.obs:
        raise ValueError(f"{env_id}: VLAObservationWrapper needs a base (give --base SPEC or base: in the YAML)")
    if stack.residual is not None and stack.obs is None:
        raise ValueError(f"{env_id}: ResidualActionWrapper needs a base (give --base SPEC or a VLAObservationWrapper)")
    if stack.obs is not None and stack.residual is None:
        stack.residual = {}
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
    saved.update(copy.deepcopy(stack.entry()))

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
        policy = residual_policies().get(algo, "MultiInputPolicy") if stack.obs is not None else None
    if isinstance(policy, str) and "." in policy:
        policy = import_object(policy)

    normalize = _normalize(hp.pop("normalize", False), hp.pop("normalize_kwargs", None), hp.get("gamma"))
    callbacks = _wrapper_list(hp.pop("callback", None))
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
        obs_wrapper_kwargs=stack.obs,
        residual_kwargs=stack.residual,
        other_wrappers=stack.per_env,
        vec_env_wrappers=stack.vec,
        normalize=normalize,
        callbacks=callbacks,
        saved=saved,
    )


def _check_kwargs(env_id: str, key: str, name: str, cls: Any, kwargs: dict[str, Any], skip: tuple[str, ...]) -> None:
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
        raise ValueError(f"{env_id}: {key} {name}: unknown kwarg(s) {hint}; it takes {valid}")


def _check_wrappers(env_id: str, stack: WrapperStack) -> None:
    """Name a misspelt wrapper class (did you mean one of ours?) and misspelt wrapper kwargs, before any env."""
    from sb3_vla.wrappers import VecResidualActionWrapper, VecVLAObservationWrapper

    lists = (
        ("env_wrapper", stack.per_env, [*OBS_WRAPPER_NAMES, *RESIDUAL_WRAPPER_NAMES], ("self", "env")),
        ("vec_env_wrapper", stack.vec, [*VEC_OBS_WRAPPER_NAMES, *VEC_RESIDUAL_WRAPPER_NAMES], ("self", "venv")),
    )
    for key, wrappers, ours, skip in lists:
        for name, kwargs in wrappers:
            try:
                cls = import_object(name)
            except ValueError as e:
                close = difflib.get_close_matches(name, ours, n=1, cutoff=0.8)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"{env_id}: {key} {name!r} cannot be imported ({e}){hint}") from e
            _check_kwargs(env_id, key, name, cls, kwargs, skip)
    ours_kwargs: tuple[tuple[str, type, dict[str, Any] | None], ...] = (
        (VEC_OBS_WRAPPER, VecVLAObservationWrapper, stack.obs),
        (VEC_RESIDUAL_WRAPPER, VecResidualActionWrapper, stack.residual),
    )
    for name, cls, our_kwargs in ours_kwargs:
        if our_kwargs is not None:
            _check_kwargs(env_id, "vec_env_wrapper", name, cls, our_kwargs, ("self", "venv"))


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
