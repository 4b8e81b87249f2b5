"""One declaration of the residual stack's settings: :class:`ResidualConfig`.

Every keyword argument of :class:`~sb3_vla.wrappers.VLAObservationWrapper` /
:class:`~sb3_vla.wrappers.VecVLAObservationWrapper` (the base side) and
:class:`~sb3_vla.wrappers.ResidualActionWrapper` / :class:`~sb3_vla.wrappers.VecResidualActionWrapper` (the
residual side) is one field here, with its default. The wrappers keep their SB3-style keyword arguments (a test
checks that they are exactly these fields, with the same defaults), and whatever routes settings
(:func:`~sb3_vla.make_residual_vec_env`, the YAML and ``-params`` config, tuning, ``sb3:`` replay of a saved run)
takes the key lists from here: adding a wrapper argument is one field plus its use in the wrapper.

>>> cfg = ResidualConfig(base="zero", residual_scale=0.5, query_interval=2)
>>> cfg.to_dict()
{'base': 'zero', 'query_interval': 2, 'residual_scale': 0.5}
>>> ResidualConfig.from_dict(cfg.to_dict()) == cfg
True
>>> "decision_interval" in RESIDUAL_KEYS, "query_interval" in OBS_WRAPPER_KEYS
(True, True)
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from sb3_vla.bases.backends.sb3_run import saved_residual_settings
from sb3_vla.bases.base import BaseModel
from sb3_vla.core.adapters import ActionAdapterLike
from sb3_vla.core.keys import ACTION_KEY
from sb3_vla.core.residual_map import ResidualMapLike
from sb3_vla.core.schedule import ResidualScaleSchedule
from sb3_vla.wrappers.observation import VecVLAObservationWrapper, VLAObservationWrapper
from sb3_vla.wrappers.residual import (
    ResidualActionWrapper,
    ResidualScale,
    VecResidualActionWrapper,
)

__all__ = ["OBS_WRAPPER_KEYS", "RESIDUAL_KEYS", "ResidualConfig", "UnknownSettingError"]

_OBSERVATION = "observation"  # a VLAObservationWrapper / VecVLAObservationWrapper argument
_RESIDUAL = "residual"  # a ResidualActionWrapper / VecResidualActionWrapper argument


def _obs(default: Any) -> Any:
    return field(default=default, metadata={"wrapper": _OBSERVATION})


def _res(default: Any) -> Any:
    return field(default=default, metadata={"wrapper": _RESIDUAL})


class UnknownSettingError(TypeError, ValueError):
    """A setting that is no :class:`ResidualConfig` field (a ``TypeError`` for keyword arguments, a ``ValueError``
    for YAML and dicts); the message lists the valid names and the closest match."""


@dataclass(frozen=True, kw_only=True)
class ResidualConfig:
    """The settings of the residual stack: the frozen base's observation wrapper and the residual action wrapper.

    Base side (:class:`~sb3_vla.wrappers.VLAObservationWrapper`):

    :param base: a :class:`~sb3_vla.bases.BaseModel` or a spec string (``zero``, ``scripted``, ``hf:...``).
    :param query_interval: query the base every this many env steps, or sooner when its action chunk runs out.
    :param action_adapter: maps base actions into the env's action space when their shapes differ (an adapter, a
        callable or ``"package.module:Name"``).
    :param drop_keys: raw observation keys hidden from the agent (the base still sees them).
    :param add_action: put ``vla_action`` in the observation (the residual wrapper needs it).
    :param nonfinite: ``"raise"`` or ``"zero"`` when the base returns NaN/inf.
    :param instruction: a fixed language instruction for envs that give none in ``info["instruction"]``.
    :param base_kwargs: keyword arguments for building ``base`` from a spec string.

    Residual side (:class:`~sb3_vla.wrappers.ResidualActionWrapper`):

    :param residual_scale: the largest correction in env action units: a float, one float per action dim, a
        callable ``step -> scale`` or a schedule ``{start, end, steps}``.
    :param absolute_dims: action dims the policy sets alone (its ``[-1, 1]`` mapped onto the env's bounds).
    :param base_key: observation key of the base action.
    :param keep_base_in_obs: whether the agent sees ``vla_action``.
    :param override_dims: residual dims with full authority (scale = action range), starting from the base.
    :param residual_map: compose the residual in another space (a
        :class:`~sb3_vla.core.residual_map.ResidualMap` or ``"package.module:Name"``).
    :param decision_interval: env steps per agent decision; the residual is held over them and their rewards summed.
    :param residual_penalty: reward cost per env step of a full-scale residual (times its mean square).

    Example:

    >>> from stable_baselines3.common.env_util import make_vec_env
    >>> cfg = ResidualConfig(base="zero", residual_scale=0.5)
    >>> venv = cfg.wrap(make_vec_env("Pendulum-v1", n_envs=2))
    >>> sorted(venv.observation_space.spaces), venv.action_space
    (['obs', 'vla_action'], Box(-1.0, 1.0, (1,), float32))
    >>> cfg.replace(residual_scale=0.2).residual_kwargs()["residual_scale"]
    0.2
    """

    # base side: VLAObservationWrapper / VecVLAObservationWrapper, in their signature's order
    base: BaseModel | str = field(metadata={"wrapper": _OBSERVATION})
    query_interval: int = _obs(1)
    action_adapter: ActionAdapterLike | str | None = _obs(None)
    drop_keys: Sequence[str] = _obs(())
    add_action: bool = _obs(True)
    nonfinite: str = _obs("raise")
    instruction: str | None = _obs(None)
    base_kwargs: dict[str, Any] | None = _obs(None)
    # residual side: ResidualActionWrapper / VecResidualActionWrapper, in their signature's order
    residual_scale: ResidualScale = _res(0.1)
    absolute_dims: Sequence[int] = _res(())
    base_key: str = _res(ACTION_KEY)
    keep_base_in_obs: bool = _res(True)
    override_dims: Sequence[int] = _res(())
    residual_map: ResidualMapLike | None = _res(None)
    decision_interval: int = _res(1)
    residual_penalty: float = _res(0.0)

    def __post_init__(self) -> None:
        if self.base is None:
            raise ValueError("ResidualConfig needs a base: a BaseModel or a spec string such as 'zero' or 'scripted'")
        for name in ("drop_keys", "absolute_dims", "override_dims"):  # YAML lists and tuples compare equal
            value = getattr(self, name)
            if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str):
                object.__setattr__(self, name, tuple(v.item() if isinstance(v, np.generic) else v for v in value))
        scale = self.residual_scale
        if isinstance(scale, np.ndarray | list | tuple | np.generic):
            arr = np.asarray(scale, dtype=np.float64)
            object.__setattr__(self, "residual_scale", float(arr) if arr.ndim == 0 else tuple(arr.tolist()))

    # ------------------------------------------------------------------------------------------------ key lists
    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every setting's name, base side first."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def obs_wrapper_keys(cls) -> tuple[str, ...]:
        """The observation wrappers' settings (``base`` ... ``base_kwargs``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["wrapper"] == _OBSERVATION)

    @classmethod
    def residual_keys(cls) -> tuple[str, ...]:
        """The residual wrappers' settings (``residual_scale`` ... ``residual_penalty``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["wrapper"] == _RESIDUAL)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default of every setting that has one (all but ``base``)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    @classmethod
    def check_keys(cls, keys: Any, what: str = "residual setting") -> None:
        """Raise :class:`UnknownSettingError` naming the keys that are no setting, the closest match and the valid
        ones."""
        valid = cls.keys()
        unknown = [str(k) for k in keys if k not in valid]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, valid, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise UnknownSettingError(f"unknown {what}(s) {', '.join(hints)}; valid settings: {list(valid)}")

    # ------------------------------------------------------------------------------------------------ building
    def obs_wrapper_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~sb3_vla.wrappers.VecVLAObservationWrapper` (and the single-env one)."""
        return {k: getattr(self, k) for k in self.obs_wrapper_keys()}

    def residual_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~sb3_vla.wrappers.VecResidualActionWrapper` (and the single-env one)."""
        return {k: getattr(self, k) for k in self.residual_keys()}

    def wrap(self, venv: VecEnv) -> VecResidualActionWrapper:
        """``venv`` -> :class:`~sb3_vla.wrappers.VecVLAObservationWrapper` (one batched base forward pass for all
        envs) -> :class:`~sb3_vla.wrappers.VecResidualActionWrapper`."""
        return VecResidualActionWrapper(
            VecVLAObservationWrapper(venv, **self.obs_wrapper_kwargs()), **self.residual_kwargs()
        )

    def wrap_env(self, env: gym.Env) -> ResidualActionWrapper:
        """``env`` -> :class:`~sb3_vla.wrappers.VLAObservationWrapper` ->
        :class:`~sb3_vla.wrappers.ResidualActionWrapper` (the per-env stack: the spaces of one env of :meth:`wrap`)."""
        return ResidualActionWrapper(VLAObservationWrapper(env, **self.obs_wrapper_kwargs()), **self.residual_kwargs())

    def replace(self, **changes: Any) -> ResidualConfig:
        """A copy with ``changes`` applied (unknown names raise :class:`UnknownSettingError`)."""
        self.check_keys(changes)
        return dataclasses.replace(self, **changes)

    def scale_residual(self, factor: float) -> ResidualConfig:
        """A copy whose ``residual_scale`` is multiplied by ``factor`` (a float, per-dim values or a schedule's
        ``start`` and ``end``), as tuning's ``residual_scale_factor`` does.

        >>> ResidualConfig(base="zero", residual_scale=[0.1, 0.2]).scale_residual(2.0).residual_scale
        (0.2, 0.4)
        """
        factor = float(factor)
        if not np.isfinite(factor) or factor <= 0:
            raise ValueError(f"the residual scale factor must be > 0 and finite, got {factor}")
        scale: Any = self.residual_scale
        if isinstance(scale, ResidualScaleSchedule):
            scale = {"start": scale.start, "end": scale.end, "steps": scale.steps}
        if isinstance(scale, Mapping):
            start, end = (np.asarray(scale[k], dtype=np.float64) * factor for k in ("start", "end"))
            new: Any = {**scale, "start": _plain_number(start), "end": _plain_number(end)}
        elif callable(scale):
            raise TypeError("a callable residual_scale cannot be rescaled; use a {start, end, steps} schedule")
        else:
            new = _plain_number(np.asarray(scale, dtype=np.float64) * factor)
        return dataclasses.replace(self, residual_scale=new)

    # ------------------------------------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (YAML / JSON): ``base`` and every setting that differs from its default.

        Objects that are no plain data (a base instance, an adapter or map object, a callable scale) raise a
        ``TypeError`` naming the setting: give them as spec / ``"package.module:Name"`` strings to save them.
        """
        defaults = self.defaults()
        out: dict[str, Any] = {}
        for name in self.keys():
            value = getattr(self, name)
            if name != "base" and _same(value, defaults[name]):
                continue
            if name == "residual_scale" and isinstance(value, ResidualScaleSchedule):
                value = {"start": _plain_number(value.start), "end": _plain_number(value.end), "steps": value.steps}
            out[name] = _plain(value, name)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResidualConfig:
        """Build from plain data (a YAML mapping, :meth:`to_dict`'s output); unknown keys raise
        :class:`UnknownSettingError` listing the valid ones and the closest match.

        >>> ResidualConfig.from_dict({"base": "zero", "residual_scal": 0.2})  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
            ...
        sb3_vla.wrappers.config.UnknownSettingError: unknown residual setting(s) 'residual_scal'
            (did you mean 'residual_scale'?); valid settings: ['base', 'query_interval', ...]
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"residual settings must be a mapping of setting names to values, got {data!r}")
        cls.check_keys(data)
        if data.get("base") is None:
            raise ValueError(
                f"residual settings need a base (a spec such as 'zero', 'scripted', 'hf:...'); got {dict(data)}"
            )
        return cls(**dict(data))

    @classmethod
    def from_zoo(cls, entry: Mapping[str, Any]) -> ResidualConfig | None:
        """The settings of a zoo-format hyperparameter entry (a YAML entry or a run's saved ``config.yml``): the
        kwargs of its VLA observation and residual wrappers in ``env_wrapper`` or ``vec_env_wrapper``, merged;
        ``None`` when it has no VLA observation wrapper (plain RL).

        >>> entry = {"env_wrapper": [{"sb3_vla.wrappers.VLAObservationWrapper": {"base": "zero"}},
        ...                          {"sb3_vla.wrappers.ResidualActionWrapper": {"residual_scale": 0.3}}]}
        >>> ResidualConfig.from_zoo(entry).to_dict()
        {'base': 'zero', 'residual_scale': 0.3}
        """
        settings = saved_residual_settings(entry)
        return None if settings is None else cls.from_dict(settings)

    def to_zoo(self) -> list[dict[str, dict[str, Any]]]:
        """The settings as rl-zoo ``vec_env_wrapper`` entries (the inverse of :meth:`from_zoo`): the batched
        observation wrapper with the base side of :meth:`to_dict`, then the residual wrapper with the residual side.

        >>> ResidualConfig(base="zero", residual_scale=0.3).to_zoo()  # doctest: +NORMALIZE_WHITESPACE
        [{'sb3_vla.wrappers.VecVLAObservationWrapper': {'base': 'zero'}},
         {'sb3_vla.wrappers.VecResidualActionWrapper': {'residual_scale': 0.3}}]
        """
        data = self.to_dict()
        return [
            {f"sb3_vla.wrappers.{cls.__name__}": {k: data[k] for k in keys if k in data}}
            for cls, keys in ((VecVLAObservationWrapper, OBS_WRAPPER_KEYS), (VecResidualActionWrapper, RESIDUAL_KEYS))
        ]

    @classmethod
    def from_arguments(
        cls, base: BaseModel | str | None = None, config: ResidualConfig | None = None, **settings: Any
    ) -> ResidualConfig:
        """The config of a call such as ``make_residual_vec_env(env_id, base, config=..., **settings)``: ``config``
        (if given) with ``base`` and ``settings`` applied over it; unknown settings raise
        :class:`UnknownSettingError`."""
        cls.check_keys(settings, "keyword argument")
        if base is not None:
            settings["base"] = base
        if config is None:
            if settings.get("base") is None:
                raise TypeError("a base is needed: pass base=<BaseModel or spec string> or config=ResidualConfig(...)")
            return cls(**settings)
        if not isinstance(config, ResidualConfig):
            raise TypeError(f"config must be a ResidualConfig, got {type(config).__name__}")
        return dataclasses.replace(config, **settings)


#: the observation wrappers' settings, in their signature's order
OBS_WRAPPER_KEYS = ResidualConfig.obs_wrapper_keys()
#: the residual wrappers' settings, in their signature's order
RESIDUAL_KEYS = ResidualConfig.residual_keys()


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(type(value) is type(default) and value == default)
    except (ValueError, TypeError):  # arrays and objects that do not compare to a bool
        return False


def _plain_number(arr: np.ndarray) -> float | list[float]:
    arr = np.asarray(arr, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else [float(v) for v in arr.ravel()]


def _plain(value: Any, key: str) -> Any:
    """``value`` as YAML / JSON data (tuples become lists, numpy scalars and arrays numbers and lists)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic | np.ndarray):
        return np.asarray(value).tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, key) for v in value]
    raise TypeError(
        f"residual setting {key!r} is a {type(value).__name__}, which is no plain data (YAML / JSON); give it as a "
        "spec string (base) or a 'package.module:Name' string (action_adapter, residual_map) to save it"
    )
