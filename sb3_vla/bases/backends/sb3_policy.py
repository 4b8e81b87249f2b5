"""``sb3:`` bases: a trained Stable-Baselines3 policy (a model ``.zip``) as the frozen base.

A plain policy (trained on the env's own observations) gives its deterministic action. A *residual* policy
(trained by sb3-vla on observations carrying ``vla_action`` / ``vla_embedding``) needs the base it was trained on
and the residual settings of its training; this base then returns the composed action
``clip(inner + residual_scale * residual)``, so a new residual can be trained on top of it (residual on residual).
:class:`SB3PolicyBase` takes them as arguments (the inner base as an instance); the ``sb3:`` spec
(:func:`make_sb3_base`) reads them from the run folder ``sb3_vla.train`` saved the model in
(``<run>/<env>/config.yml``), so ``sb3:logs/sac/GarmentFold-v0_1/GarmentFold-v0.zip`` needs no options; options
given in the spec (``?inner_base=scripted&residual_scale=0.2``) win over the saved ones.

Loading runs no code from the files (see :mod:`sb3_vla.bases.backends.sb3_files`): the policy is rebuilt from plain
data and its weights loaded with ``torch.load(weights_only=True)``; ``?trust_remote_code=True`` opts in to SB3's own
unpickling loader, for files you trust.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_vla.bases.backends._common import batch_size, call_with_options, existing_path, resolve_device
from sb3_vla.bases.backends.sb3_files import (
    OPT_IN,
    POLICY_KEYS,
    POLICY_SPEC,
    VEC_NORMALIZE_NPZ,
    ObsNormalizer,
    UntrustedFileError,
    read_policy_spec,
    read_zip_num_timesteps,
    read_zip_policy_data,
    read_zip_policy_weights,
)
from sb3_vla.bases.backends.sb3_run import saved_replay_options
from sb3_vla.bases.base import BaseModel, VLABatch
from sb3_vla.bases.registry import make_base
from sb3_vla.core.adapters import resolve_adapter
from sb3_vla.core.algos import algorithm_class
from sb3_vla.core.keys import ACTION_KEY, EMBEDDING_KEY, MAPPED_ACTION_KEY
from sb3_vla.core.options import parse_query
from sb3_vla.core.residual_map import ResidualMap, compose_mapped, resolve_residual_map
from sb3_vla.core.residual_math import compose_action
from sb3_vla.core.schedule import ResidualScaleSchedule


def load_sb3_policy(
    path: str | Path,
    device: th.device,
    algo: str | type | None = None,
    custom_objects: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """Load the policy of an SB3 model zip in eval mode, running no code from the file.

    The policy is rebuilt from plain data: ``<zip dir>/<zip stem>/policy.json`` when ``sb3_vla.train`` wrote one,
    else the zip's ``policy_class`` / ``policy_kwargs`` / spaces read by
    :class:`~sb3_vla.bases.backends.sb3_files.SafeUnpickler` (spaces, arrays and SB3 / torch classes only). The
    weights are the plain state dict ``policy.pth`` (``torch.load(weights_only=True)``). ``custom_objects``
    replaces those entries. A file that needs more raises
    :class:`~sb3_vla.bases.backends.sb3_files.UntrustedFileError` naming what and how to opt in.

    With ``trust_remote_code=True`` (files you trust only), SB3's own loader unpickles the whole zip: through
    ``Algo.load`` when ``algo`` is given (``"sac"``, ``"ppo"``, a class ...), else ``load_from_zip_file``.
    """
    if algo is not None:
        algo_cls = algorithm_class(algo)
    if trust_remote_code:
        if algo is not None:
            policy = algo_cls.load(str(path), device=device, custom_objects=custom_objects).policy
        else:
            policy = _load_unpickled(Path(path), device, custom_objects)
    else:
        path = Path(path)
        spec_path = path.parent / path.stem / POLICY_SPEC
        data = read_policy_spec(spec_path) if spec_path.is_file() else read_zip_policy_data(path)
        data.update({k: v for k, v in (custom_objects or {}).items() if k in POLICY_KEYS})
        policy = _build_policy(path, data)
        _load_weights(policy, read_zip_policy_weights(path, device), path)
        policy.to(device)
    policy.set_training_mode(False)
    policy.requires_grad_(False)
    return policy


def _load_unpickled(path: Path, device: th.device, custom_objects: dict[str, Any] | None) -> Any:
    from stable_baselines3.common.save_util import load_from_zip_file

    data, params, _ = load_from_zip_file(str(path), device=device, custom_objects=custom_objects)
    if data is None or "policy_class" not in data or "policy" not in params:
        raise ValueError(f"{str(path)!r} is not a Stable-Baselines3 model zip (no policy_class / policy weights)")
    policy = _build_policy(path, data)
    _load_weights(policy, params["policy"], path)
    return policy.to(device)


def _build_policy(path: Path, data: dict[str, Any]) -> Any:
    policy_class = data["policy_class"]
    if isinstance(policy_class, dict) or not callable(policy_class):
        raise ValueError(
            f"{str(path)!r}: cannot rebuild the policy class (saved with other library versions?); "
            "pass algo='sac' (or the algorithm used) and trust_remote_code=True to load it through the algorithm"
        )
    for key in ("observation_space", "action_space"):
        if not isinstance(data[key], spaces.Space):
            raise ValueError(f"{str(path)!r}: the saved {key} cannot be rebuilt (got {type(data[key]).__name__})")
    kwargs = data.get("policy_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"{str(path)!r}: the saved policy_kwargs are not a mapping ({type(kwargs).__name__})")
    return policy_class(data["observation_space"], data["action_space"], lambda _: 0.0, **kwargs)


def _load_weights(policy: Any, state_dict: Any, path: Path) -> None:
    try:
        policy.load_state_dict(state_dict)
    except (RuntimeError, KeyError) as e:
        raise ValueError(f"{str(path)!r}: the policy weights do not match the saved policy class ({e})") from e


def _find_file(path: Path, name: str) -> Path | None:
    for cand in (path.parent / name, path.parent / path.stem / name):
        if cand.is_file():
            return cand
    return None


def load_vec_normalize(path: str | Path, trust_remote_code: bool = False) -> Any:
    """Observation statistics for replay: a ``vecnormalize.npz`` (plain arrays), or, with ``trust_remote_code``
    only, a pickled ``vecnormalize.pkl`` (unpickling runs code from the file)."""
    p = Path(path)
    if p.suffix == ".npz":
        return ObsNormalizer.load(p)
    if not trust_remote_code:
        raise UntrustedFileError(
            f"VecNormalize statistics {str(p)!r} are a pickle, and unpickling can run code from the file; use the "
            f"{VEC_NORMALIZE_NPZ} that sb3_vla.train writes beside it, pass vec_normalize=None to replay without "
            f"normalisation, or pass {OPT_IN} (sb3:...?{OPT_IN}) if you trust the file"
        )
    with open(p, "rb") as f:
        return pickle.load(f)


def _match_image_layout(arr: np.ndarray, space: spaces.Space) -> np.ndarray:
    """SB3 trains image policies on channel-first images (``VecTransposeImage``); transpose HWC batches to match."""
    shape = getattr(space, "shape", None)
    if (
        arr.ndim == 4
        and shape is not None
        and tuple(shape) == (arr.shape[3], arr.shape[1], arr.shape[2]) != arr.shape[1:]
    ):
        return np.ascontiguousarray(np.transpose(arr, (0, 3, 1, 2)))
    return arr


def _final_scale(
    scale: Any, action_space: spaces.Box, override_dims: Sequence[int], trained_steps: int | None = None
) -> np.ndarray:
    """The scale the residual was composed with at the end of training (a schedule's value at ``trained_steps`` env
    steps, its ``end`` where the zip does not say), per dim when some dims had full authority."""
    if isinstance(scale, Mapping):  # a {start, end, steps} schedule
        schedule = ResidualScaleSchedule.from_mapping(scale)
        scale = schedule.end if trained_steps is None else schedule(trained_steps)
    if callable(scale):
        raise TypeError("a callable residual_scale cannot be replayed; pass the value it reached in training")
    out = np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(out)) or np.any(out <= 0):
        raise ValueError(f"residual_scale must be > 0, got {scale}")
    dims = np.asarray(list(override_dims), dtype=np.int64)
    if dims.size:
        n = int(action_space.shape[0])
        if dims.min() < -n or dims.max() >= n:
            raise ValueError(f"override_dims {dims.tolist()} out of range for {n} action dims")
        out = np.broadcast_to(out, (n,)).copy()
        out[dims] = (action_space.high - action_space.low)[dims]  # as the residual wrapper: full authority
    return out


def _model_path(path: str | Path) -> Path:
    p = existing_path(path)
    if p is None and not str(path).endswith(".zip"):
        p = existing_path(f"{path}.zip")
    if p is None or not p.is_file():
        raise ValueError(f"sb3: model file {str(path)!r} does not exist")
    return p


class SB3PolicyBase(BaseModel):
    """A trained SB3 policy as a frozen base (deterministic actions by default).

    :param path: the model ``.zip``.
    :param inner_base: for a residual policy: the :class:`BaseModel` it was trained on (build one from a spec with
        :func:`~sb3_vla.bases.make_base`; a spec string here is deprecated). Its action feeds ``vla_action`` and its
        embedding ``vla_embedding``.
    :param residual_scale: the residual scale used in training (scalar or per dimension; of a schedule
        ``{start, end, steps}`` the value it reached when training stopped: at the zip's ``num_timesteps`` times
        ``decision_interval`` env steps, ``end`` where the zip has no count).
    :param absolute_dims: the dims the residual policy set directly in training.
    :param override_dims: the dims it had full authority over in training (scale = the action range there).
    :param action_space: the env's action space: the bounds of the composed action in residual mode (the ``sb3:``
        factory passes the env's). Without an inner base, the policy's own action space is used.
    :param action_adapter: maps the inner base's action into the env's action space, as in training.
    :param vec_normalize: path of the ``VecNormalize`` statistics used in training, ``"auto"`` (a
        ``vecnormalize.npz``, else ``vecnormalize.pkl``, next to the zip or in ``<zip dir>/<zip stem>/``), or
        ``None``. Only observation normalisation is applied. A ``.pkl`` is refused without ``trust_remote_code``.
    :param algo: with ``trust_remote_code``: load through ``Algo.load`` (``"sac"``, ``"ppo"``, ...) instead of
        rebuilding the policy.
    :param deterministic: deterministic actions (the mean / mode).
    :param embedding: ``"inner"`` (the inner base's embedding, default when there is one) or ``"none"``.
    :param observation_space: the env's observation space (checked against the policy's when given).
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
    :param inner_base_kwargs: keyword arguments for building ``inner_base`` from a spec string (deprecated).
    :param residual_map: the :class:`~sb3_vla.core.residual_map.ResidualMap` (or ``"package.module:Name"``) the
        residual policy was trained through, e.g. ``sb3_vla.envs.garment_fold:PinchResidualMap``.
    :param trust_remote_code: unpickle the zip's ``data`` and a ``vecnormalize.pkl`` as SB3 does, which runs code
        from the files: only for files you trust. By default nothing in the files is executed (see
        :func:`load_sb3_policy`).
    :param instruction: the instruction the inner base gets when the env gives none (the training wrapper's
        ``instruction``).
    :param decision_interval: env steps per agent decision in training (SB3 counted decisions; the scale
        schedule counted env steps). Replay itself still queries the policy at every step.

    Example::

        stage1 = SB3PolicyBase("logs/sac_stage1.zip", inner_base=EnvScriptedBase(env.action_space),
                               residual_scale=0.2, action_space=env.action_space)
        env = make_residual_vec_env("GarmentFold-v0", base=stage1, residual_scale=0.05)
    """

    def __init__(
        self,
        path: str | Path,
        inner_base: BaseModel | str | None = None,
        residual_scale: float | Sequence[float] | Mapping[str, Any] | None = None,
        absolute_dims: Sequence[int] = (),
        action_space: spaces.Box | None = None,
        action_adapter: Callable[[np.ndarray], np.ndarray] | str | None = None,
        vec_normalize: str | Path | None = "auto",
        algo: str | type | None = None,
        deterministic: bool = True,
        embedding: str = "inner",
        observation_space: spaces.Space | None = None,
        device: str | th.device = "auto",
        inner_base_kwargs: dict[str, Any] | None = None,
        residual_map: ResidualMap | str | None = None,
        trust_remote_code: bool = False,
        override_dims: Sequence[int] = (),
        instruction: str | None = None,
        decision_interval: int = 1,
    ) -> None:
        p = _model_path(path)
        if isinstance(decision_interval, bool) or not isinstance(decision_interval, int) or decision_interval < 1:
            raise ValueError(
                f"decision_interval must be an int >= 1 (env steps per decision), got {decision_interval!r}"
            )
        self.path = p
        self.device = resolve_device(device)
        self.policy = load_sb3_policy(p, self.device, algo, trust_remote_code=trust_remote_code)
        self.deterministic = bool(deterministic)
        self.policy_obs_space: spaces.Space = self.policy.observation_space
        keys = tuple(self.policy_obs_space.spaces) if isinstance(self.policy_obs_space, spaces.Dict) else ("obs",)
        residual_keys = [k for k in keys if k in (ACTION_KEY, EMBEDDING_KEY, MAPPED_ACTION_KEY)]
        self.residual_map = resolve_residual_map(residual_map)

        if vec_normalize == "auto":
            vec_normalize = _find_file(p, VEC_NORMALIZE_NPZ) or _find_file(p, "vecnormalize.pkl")
        self.vec_normalize = None
        if vec_normalize is not None:
            vn_path = existing_path(vec_normalize)
            if vn_path is None:
                raise ValueError(f"sb3: VecNormalize statistics {str(vec_normalize)!r} do not exist")
            self.vec_normalize = load_vec_normalize(vn_path, trust_remote_code)

        if isinstance(inner_base, str):
            warnings.warn(
                "SB3PolicyBase(inner_base=<spec string>) is deprecated and removed in the next release: pass a "
                "BaseModel (sb3_vla.bases.make_base(spec, ...)), or use the spec 'sb3:<zip>?inner_base=<spec>'",
                DeprecationWarning,
                stacklevel=2,
            )
            inner_base = make_base(
                inner_base, observation_space=observation_space, action_space=action_space, **(inner_base_kwargs or {})
            )
        self.inner = inner_base
        self.instruction = instruction
        self.adapter: Callable[[np.ndarray], np.ndarray] | None = None
        if residual_keys and self.inner is None:
            raise ValueError(
                f"sb3:{p}: the policy was trained as a residual policy (observation keys {residual_keys}); pass "
                "inner_base=<the base it was trained on> and residual_scale=<its residual scale> to replay it, or "
                "keep the zip in the run folder sb3_vla.train saved it in (its <env>/config.yml has them)"
            )
        if self.inner is not None:
            if not isinstance(self.inner, BaseModel):
                raise TypeError(f"inner_base must be a BaseModel or a spec string, got {type(self.inner).__name__}")
            if self.inner.action_space is None:
                raise ValueError(f"inner base {self.inner.name} gives no action; a residual needs an action base")
            if self.inner.chunk_size > 1:
                raise ValueError(
                    f"inner base {self.inner.name} returns action chunks (chunk_size={self.inner.chunk_size}); "
                    "residual-on-residual replay supports single-step inner bases only"
                )
            if residual_scale is None:
                raise ValueError(
                    "residual replay needs residual_scale (the value used when training the policy); the sb3: spec "
                    "reads it from the run folder's <env>/config.yml when the zip lies in one"
                )
            if action_space is None:
                raise ValueError("residual replay needs the env's action_space (the bounds of the composed action)")
            residual_shape = action_space.shape if self.residual_map is None else (self.residual_map.dim,)
            if not (
                isinstance(self.policy.action_space, spaces.Box) and self.policy.action_space.shape == residual_shape
            ):
                hint = (
                    "; was it trained through a residual_map? pass residual_map=<the map>"
                    if self.residual_map is None
                    else f" but {type(self.residual_map).__name__} takes {residual_shape}"
                )
                raise ValueError(
                    f"sb3:{p}: the residual policy acts in {self.policy.action_space}, the env in {action_space}{hint}"
                )
            if self.residual_map is not None:
                self.residual_map.check(action_space)
                if len(absolute_dims) or len(override_dims):
                    raise ValueError("absolute_dims / override_dims cannot be combined with a residual_map")
            self.adapter = resolve_adapter(action_adapter)
            decisions = read_zip_num_timesteps(p)  # SB3 counts decisions; the schedule counted env steps
            trained = None if decisions is None else decisions * decision_interval
            self.residual_scale = _final_scale(residual_scale, action_space, override_dims, trained)
            self.absolute_dims = np.asarray(list(absolute_dims), dtype=np.int64)
            self.action_space = action_space
            self.stateless = self.inner.stateless
            self.env_query = self.inner.env_query
        else:
            if not isinstance(self.policy.action_space, spaces.Box):
                raise ValueError(f"sb3:{p}: only Box action spaces can be a base, got {self.policy.action_space}")
            self.action_space = self.policy.action_space
        if embedding not in ("inner", "none"):
            raise ValueError(f"embedding must be 'inner' or 'none', got {embedding!r}")
        self.use_inner_embedding = embedding == "inner" and self.inner is not None and self.inner.embedding_dim > 0
        self.embedding_dim = self.inner.embedding_dim if self.use_inner_embedding and self.inner else 0
        own = tuple(k for k in keys if k not in (ACTION_KEY, EMBEDDING_KEY, MAPPED_ACTION_KEY))
        inner_keys = self.inner.obs_keys if self.inner is not None else ()
        if self.inner is not None and not inner_keys:
            self.obs_keys = ()  # the inner base reads every key
        else:
            self.obs_keys = tuple(dict.fromkeys(own + tuple(inner_keys)))
        if isinstance(observation_space, spaces.Dict):
            missing = [k for k in own if k not in observation_space.spaces and not (k == "obs" and len(keys) == 1)]
            if missing:
                raise ValueError(
                    f"sb3:{p}: the policy reads observation keys {missing} that the env does not provide "
                    f"(env keys: {sorted(observation_space.spaces)})"
                )

    @property
    def name(self) -> str:
        return f"sb3:{self.path.name}"

    def reset(self, env_ids: Sequence[int] | None = None) -> None:
        if self.inner is not None:
            self.inner.reset(env_ids)

    def _policy_obs(
        self, batch: VLABatch, inner_action: np.ndarray | None, inner_emb: np.ndarray | None
    ) -> dict[str, np.ndarray] | np.ndarray:
        space = self.policy_obs_space
        if not isinstance(space, spaces.Dict):
            if "obs" in batch.obs:
                return _match_image_layout(np.asarray(batch.obs["obs"]), space)
            if len(batch.obs) == 1:
                return _match_image_layout(np.asarray(next(iter(batch.obs.values()))), space)
            raise KeyError(f"{self.name}: the policy takes a Box observation; the batch has keys {sorted(batch.obs)}")
        obs: dict[str, np.ndarray] = {}
        for k in space.spaces:
            if k == ACTION_KEY:
                assert inner_action is not None
                obs[k] = inner_action
            elif k == MAPPED_ACTION_KEY:
                if inner_action is None or self.residual_map is None or self.residual_map.observation_space is None:
                    raise ValueError(
                        f"{self.name}: the policy reads {MAPPED_ACTION_KEY!r}; pass inner_base and the residual_map "
                        "it was trained through"
                    )
                mapped = self.residual_map.observe(np.asarray(inner_action, dtype=np.float64), batch.obs)
                obs[k] = mapped.astype(np.float32)
            elif k == EMBEDDING_KEY:
                if inner_emb is None:
                    raise ValueError(f"{self.name}: the policy reads {EMBEDDING_KEY!r} but the inner base gives none")
                obs[k] = inner_emb
            elif k in batch.obs:
                obs[k] = _match_image_layout(np.asarray(batch.obs[k]), space.spaces[k])
            else:
                raise KeyError(f"{self.name} needs the observation key {k!r}; got {sorted(batch.obs)}")
        return obs

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        inner_action = inner_emb = None
        if self.inner is not None:
            keys, instructions = self.inner.obs_keys, batch.instructions
            if self.instruction is not None:  # the training wrapper's default, for envs that give none
                instructions = [s or self.instruction for s in (instructions or [""] * batch_size(batch))]
            inner_batch = VLABatch(
                obs={k: batch.obs[k] for k in keys} if keys else batch.obs,
                instructions=instructions,
                env_ids=batch.env_ids,
                env_outputs=batch.env_outputs,
            )
            a, inner_emb = self.inner.predict(inner_batch)
            a = np.asarray(a, dtype=np.float32).reshape(batch_size(batch), *self.inner.action_space.shape)
            inner_action = np.asarray(self.adapter(a) if self.adapter is not None else a, dtype=np.float32)
            # as the observation wrapper does in training: vla_action lives in the env's action bounds
            inner_action = np.clip(inner_action, self.action_space.low, self.action_space.high).astype(np.float32)
        obs = self._policy_obs(batch, inner_action, inner_emb)
        if self.vec_normalize is not None:
            obs = self.vec_normalize.normalize_obs(obs)
        with th.inference_mode():
            action, _ = self.policy.predict(obs, deterministic=self.deterministic)
        action = np.asarray(action, dtype=np.float32).reshape(batch_size(batch), *self.policy.action_space.shape)
        if self.inner is None:
            return action, None
        assert inner_action is not None
        low, high = self.action_space.low, self.action_space.high
        if self.residual_map is not None:
            scale = self.residual_scale
            composed = compose_mapped(self.residual_map, inner_action, action, scale, low, high, batch.obs)
        else:
            composed = compose_action(inner_action, action, self.residual_scale, low, high, self.absolute_dims)
        return composed, (np.asarray(inner_emb, dtype=np.float32) if self.use_inner_embedding else None)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


# ---------------------------------------------------------------------------------------------- the sb3: spec
def make_sb3_base(
    arg: str, *, observation_space: spaces.Space | None, action_space: spaces.Box | None, **kwargs: Any
) -> SB3PolicyBase:
    """The ``sb3:`` spec factory: ``sb3:<model.zip>[?option=value&...]`` -> :class:`SB3PolicyBase`.

    Options (inline after ``?``, overridden by ``base_kwargs``) are :class:`SB3PolicyBase`'s arguments;
    ``inner_base`` may be a spec, built with :func:`~sb3_vla.bases.make_base` and ``inner_base_kwargs``. For a model
    in a run folder of ``sb3_vla.train``, the residual settings it was trained with (inner base, residual scale,
    map, absolute / override dims, action adapter, instruction) come from the run's saved config for every option
    not given (:func:`saved_replay_options`); without either, a residual policy raises a ``ValueError`` asking
    for them.

    :param arg: the spec after ``sb3:``.
    :param observation_space: the env's observation space (checked against the policy's).
    :param action_space: the env's action space (the bounds of the composed action).
    :param kwargs: more options (``base_kwargs``).
    """
    path, opts = parse_query(arg)
    if not path:
        raise ValueError("base spec 'sb3:' needs a model zip: sb3:/path/to/model.zip")
    options = {**opts, **kwargs}
    model = _model_path(path)
    options = {**saved_replay_options(model, options), **options}
    inner = options.pop("inner_base", None)
    inner_kwargs = options.pop("inner_base_kwargs", None) or {}
    if isinstance(inner, str):
        inner = make_base(inner, observation_space=observation_space, action_space=action_space, **inner_kwargs)
    elif inner_kwargs:
        raise ValueError(f"sb3:{path}: inner_base_kwargs are given but inner_base is no spec string ({inner!r})")
    options.setdefault("observation_space", observation_space)
    if action_space is not None:
        options.setdefault("action_space", action_space)
    return call_with_options(SB3PolicyBase, f"sb3:{path}", model, inner_base=inner, **options)
