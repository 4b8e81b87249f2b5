"""``module:`` bases: any ``torch.nn.Module`` with ``forward(obs) -> action`` (and optionally ``embed(obs)``).

The contract, exactly:

- ``forward(obs)`` receives **one dict** ``obs: dict[str, torch.Tensor]``, on the module's device, under
  ``torch.inference_mode()`` with the module in ``eval()``. Keys: the env's observation keys (``obs_keys`` picks a
  subset; by default every array key, including keys hidden from the agent with ``drop_keys``); an env with a
  ``Box`` observation gives the single key ``"obs"``. Values: ``(B, ...)`` batches, ``B`` being the number of envs
  that need a new query this step (``1 <= B <= n_envs``); uint8 images stay uint8 in the env's layout (HWC or
  CHW), every other array becomes float32. With ``instruction_key="instr"``, ``obs["instr"]`` is a ``list[str]`` of
  ``B`` instructions (``""`` where the env gives none). At construction ``forward`` runs once on an all-zero batch
  with ``B = 1`` to find the output shapes; an exception there raises :class:`ModuleProbeError`, listing the keys
  and shapes it was given.
- ``forward`` returns a tensor ``(B, A)`` (one action per row) or ``(B, H, A)`` (an action chunk of ``H`` steps,
  executed one step at a time), in the env's action units (the wrapper clips to the env's bounds; pass
  ``action_space`` / an ``action_adapter`` when the module acts in other units or shapes).
- ``embed(obs)``, when the module has it, takes the same dict and returns ``(B, D)``: the ``vla_embedding``.

Example (a module for ``Pendulum-v1``; the spec ``module:my_pkg.nets.TinyVLA@tiny.pt`` builds the same from a file)::

    >>> class TinyVLA(th.nn.Module):
    ...     def __init__(self, obs_dim: int = 3, act_dim: int = 1) -> None:
    ...         super().__init__()
    ...         self.net = th.nn.Linear(obs_dim, act_dim)
    ...     def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
    ...         return 2.0 * th.tanh(self.net(obs["obs"]))  # (B, 1) torques in [-2, 2]
    ...     def embed(self, obs: dict[str, th.Tensor]) -> th.Tensor:
    ...         return obs["obs"][:, :2]  # (B, 2): cos and sin of the angle
    >>> base = ModuleBase(TinyVLA(), observation_space=spaces.Box(-8, 8, (3,)), device="cpu")
    >>> action, emb = base.predict(VLABatch(obs={"obs": np.zeros((4, 3), np.float32)}, env_ids=np.arange(4)))
    >>> action.shape, emb.shape, base.embedding_dim, base.chunk_size
    ((4, 1), (4, 2), 2, 1)

Loading follows EmbodiChain's ``load_vla_model(model_path, model_class, model_config, device)``: import the class
by its dotted path, build it as ``Class(**model_config)``, load the checkpoint with
``torch.load(..., weights_only=True)`` (or safetensors), move it to the device and switch to ``eval()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_vla.bases.backends._common import batch_size, existing_path, require, resolve_device, to_numpy_f32
from sb3_vla.bases.base import BaseModel, VLABatch
from sb3_vla.core.imports import import_object, split_import_path

#: keys tried, in order, when a checkpoint is a dict wrapping the state dict
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model")


class ModuleProbeError(ValueError):
    """The module's ``forward`` (or ``embed``) raised on the probe call at construction; the message lists the
    observation dict it was given and what a ``module:`` base's ``forward`` must take and return."""


def import_class(path: str) -> type:
    """Import ``package.module.Class`` (``package.module:Class`` also accepted)."""
    try:
        split_import_path(path)
    except ValueError as e:
        raise ValueError(
            f"model class {path!r} must be a dotted path 'package.module.Class' (or 'package.module:Class'), the "
            "module importable from the current environment, e.g. 'my_pkg.nets.TinyVLA' or 'my_pkg.nets:TinyVLA' "
            "for a class TinyVLA defined in my_pkg/nets.py"
        ) from e
    return import_object(path, "model class")


def load_state_dict_file(path: str | Path, state_dict_key: str | None = None) -> dict[str, th.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``: no pickled code).

    :param path: the checkpoint file.
    :param state_dict_key: key of the state dict inside a checkpoint dict; by default the first of
        ``model_state_dict``, ``state_dict``, ``model`` that exists, else the whole dict.
    """
    p = Path(path)
    if p.suffix == ".safetensors":
        safetensors_torch = require("safetensors.torch", "loading .safetensors checkpoints")
        ckpt: Any = safetensors_torch.load_file(str(p), device="cpu")
    else:
        try:
            ckpt = th.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors come in several types
            raise ValueError(
                f"cannot load checkpoint {str(p)!r} with torch.load(weights_only=True) ({e}); save a state dict "
                "(torch.save(model.state_dict(), path)) or a .safetensors file"
            ) from e
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {str(p)!r} holds a {type(ckpt).__name__}, expected a state dict")
    if state_dict_key is not None:
        if state_dict_key not in ckpt:
            raise ValueError(f"checkpoint {str(p)!r} has no key {state_dict_key!r}; keys: {sorted(ckpt)[:20]}")
        ckpt = ckpt[state_dict_key]
    else:
        for key in STATE_DICT_KEYS:
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    return ckpt


class ModuleBase(BaseModel):
    """A frozen ``torch.nn.Module`` policy as the base.

    The module receives the observation batch as a dict of tensors on its device (``key -> (B, ...)``; images stay
    uint8 exactly as the env emits them, other arrays become float32) and returns the action ``(B, A)`` or an action
    chunk ``(B, H, A)``. When it has an ``embed(obs) -> (B, D)`` method, that gives the embedding.

    :param model: a built module, or a dotted class path ``"package.module.Class"``.
    :param checkpoint: state-dict file to load (``.pt``/``.pth``/``.bin`` via ``torch.load(weights_only=True)`` or
        ``.safetensors``); ``None`` keeps the module's weights.
    :param model_config: keyword arguments of the class constructor.
    :param action_space: the space of the module's actions; by default a ``Box(-inf, inf)`` of the shape found by
        a probe forward pass, or the env's action space when the factory passes it.
    :param observation_space: the env's observation space, used to probe the output shapes with a zero batch.
    :param obs_keys: observation keys to pass (and to require from the env); default: all keys of the batch.
    :param instruction_key: when set, the batch's instruction strings are passed under this key (a list of str).
    :param use_embed: call ``embed(obs)`` for the embedding when the module has it.
    :param embedding_dim: the embedding size (found by the probe, or the module's ``embedding_dim`` attribute).
    :param chunk_size: ``H`` when the module returns chunks (found by the probe when possible).
    :param state_dict_key: key of the state dict inside a checkpoint dict.
    :param strict: require the checkpoint's keys to match the module's exactly.
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
    :param fallback_action_space: used as the action space when ``action_space`` is not given and the probe
        finds the same action shape or cannot run (the ``module:`` factory passes the env's action space here).

    Example::

        base = ModuleBase("my_pkg.policies.TinyVLA", checkpoint="tiny.pt", model_config={"hidden": 64},
                          observation_space=env.observation_space, action_space=env.action_space)
    """

    def __init__(
        self,
        model: th.nn.Module | str,
        checkpoint: str | Path | None = None,
        model_config: dict[str, Any] | None = None,
        action_space: spaces.Box | None = None,
        observation_space: spaces.Space | None = None,
        obs_keys: tuple[str, ...] | list[str] | None = None,
        instruction_key: str | None = None,
        use_embed: bool = True,
        embedding_dim: int | None = None,
        chunk_size: int | None = None,
        state_dict_key: str | None = None,
        strict: bool = True,
        device: str | th.device = "auto",
        fallback_action_space: spaces.Box | None = None,
    ) -> None:
        self.device = resolve_device(device)
        if isinstance(model, str):
            cls = import_class(model)
            if not (isinstance(cls, type) and issubclass(cls, th.nn.Module)):
                raise TypeError(f"model class {model!r} is not a torch.nn.Module subclass")
            try:
                module = cls(**(model_config or {}))
            except TypeError as e:
                raise TypeError(f"cannot build {model}(**{model_config!r}): {e}") from e
            self._name = f"module:{model}"
        elif isinstance(model, th.nn.Module):
            if model_config:
                raise ValueError("model_config is only used when the model is given as a class path")
            module = model
            self._name = f"module:{type(model).__module__}.{type(model).__qualname__}"
        else:
            raise TypeError(f"model must be a torch.nn.Module or a dotted class path, got {type(model).__name__}")
        if checkpoint is not None:
            path = existing_path(checkpoint)
            if path is None or not path.is_file():
                raise ValueError(f"{self._name}: checkpoint file {str(checkpoint)!r} does not exist")
            state = load_state_dict_file(path, state_dict_key)
            try:
                result = module.load_state_dict(state, strict=strict)
            except RuntimeError as e:
                raise ValueError(
                    f"{self._name}: checkpoint {str(path)!r} does not match the module built from "
                    f"model_config={model_config!r}: {e}"
                ) from e
            if not strict and (result.missing_keys or result.unexpected_keys):
                import warnings

                warnings.warn(
                    f"{self._name}: checkpoint {str(path)!r} missing keys {result.missing_keys}, "
                    f"unexpected keys {result.unexpected_keys}",
                    stacklevel=2,
                )
        self.module = module.to(self.device).eval().requires_grad_(False)
        self.instruction_key = instruction_key
        self.obs_keys = tuple(obs_keys) if obs_keys is not None else ()
        self._select = obs_keys is not None
        self.use_embed = bool(use_embed) and callable(getattr(self.module, "embed", None))

        probe_action, probe_emb = self._probe(observation_space)
        if probe_action is not None:
            if chunk_size is None:
                chunk_size = probe_action.shape[1] if probe_action.ndim == 3 else 1
            shape = probe_action.shape[-1:]
            if action_space is not None and tuple(action_space.shape) != tuple(shape):
                raise ValueError(
                    f"{self._name}: the module returns actions of shape {tuple(probe_action.shape[1:])} but the "
                    f"action space has shape {action_space.shape}; pass the module's own action_space"
                )
            fallback_fits = fallback_action_space is not None and tuple(fallback_action_space.shape) == tuple(shape)
            if action_space is None and fallback_fits:
                action_space = fallback_action_space
            if action_space is None:
                action_space = spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)
        if action_space is None:
            action_space = fallback_action_space
        if action_space is None:
            raise ValueError(
                f"{self._name}: cannot tell the action shape; pass action_space or the env's observation_space"
            )
        self.action_space = action_space
        self.chunk_size = int(chunk_size or 1)
        if self.use_embed:
            if embedding_dim is None:
                embedding_dim = getattr(self.module, "embedding_dim", None)
            if embedding_dim is None and probe_emb is not None:
                embedding_dim = probe_emb.shape[-1]
            if embedding_dim is None:
                raise ValueError(f"{self._name}: has embed() but its size is unknown; pass embedding_dim")
            self.embedding_dim = int(embedding_dim)
        else:
            self.embedding_dim = 0

    @property
    def name(self) -> str:
        return self._name

    def _probe(self, observation_space: spaces.Space | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Run one zero observation through the module to learn the action (and embedding) shapes."""
        if not isinstance(observation_space, spaces.Dict):
            if isinstance(observation_space, spaces.Box):
                observation_space = spaces.Dict({"obs": observation_space})
            else:
                return None, None
        keys = self.obs_keys if self._select else tuple(observation_space.spaces)
        obs = {}
        for k in keys:
            sp = observation_space.spaces.get(k)
            if not isinstance(sp, spaces.Box):
                return None, None
            obs[k] = np.zeros((1, *sp.shape), dtype=sp.dtype)
        batch = VLABatch(obs=obs, instructions=[""], env_ids=np.zeros(1, dtype=np.int64))
        tensors = self._to_tensors(batch)
        try:
            action, emb = self._forward(tensors)
        except Exception as e:
            raise ModuleProbeError(self._probe_message(tensors, e)) from e
        return self._outputs(action, emb, 1)

    def _probe_message(self, tensors: dict[str, Any], error: Exception) -> str:
        given = ", ".join(
            f"{k!r}: {type(v).__name__} of {len(v)} str"
            if isinstance(v, list)
            else f"{k!r}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
            for k, v in tensors.items()
        )
        called = "forward(obs) or embed(obs)" if self.use_embed else "forward(obs)"
        return (
            f"{self.name}: {called} failed on the probe call at construction ({type(error).__name__}: {error}). "
            f"It was given one dict of tensors, obs = {{{given}}} (an all-zero batch, B = 1, on {self.device}). "
            "A module: base's forward receives that dict: the env's observation keys (key 'obs' for a Box "
            "observation space; obs_keys picks a subset), each a (B, ...) batch, uint8 images as uint8, everything "
            "else float32; with instruction_key, obs[instruction_key] is a list of B strings. forward must return "
            "the action, a tensor (B, A) or an action chunk (B, H, A); an optional embed(obs) returns the embedding "
            "(B, D). Adapt forward to take the dict (e.g. x = obs['obs']), or pass obs_keys / instruction_key to "
            "give it what it needs"
        )

    def _forward(self, obs: dict[str, Any]) -> tuple[Any, Any]:
        with th.inference_mode():
            action = self.module(obs)
            emb = getattr(self.module, "embed")(obs) if self.use_embed else None  # noqa: B009
        return action, emb

    def _to_tensors(self, batch: VLABatch) -> dict[str, Any]:
        keys = self.obs_keys if self._select else tuple(batch.obs)
        obs: dict[str, Any] = {}
        for k in keys:
            if k not in batch.obs:
                raise KeyError(f"{self.name} needs the observation key {k!r}; got {sorted(batch.obs)}")
            arr = np.asarray(batch.obs[k])
            t = th.as_tensor(arr if arr.dtype == np.uint8 else arr.astype(np.float32, copy=False))
            obs[k] = t.to(self.device)
        if self.instruction_key is not None:
            obs[self.instruction_key] = list(batch.instructions or [""] * batch_size(batch))
        return obs

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        action, emb = self._forward(self._to_tensors(batch))
        return self._outputs(action, emb, batch_size(batch))

    def _outputs(self, action: Any, emb: Any, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Check ``forward``'s output (``b`` rows) and convert the action and embedding to float32 arrays."""
        if not isinstance(action, th.Tensor):
            raise TypeError(f"{self.name}: forward(obs) must return a tensor, got {type(action).__name__}")
        act = to_numpy_f32(action)
        if act.ndim not in (2, 3) or act.shape[0] != b:
            raise ValueError(f"{self.name}: forward(obs) returned shape {act.shape}; expected (B, A) or (B, H, A)")
        if hasattr(self, "action_space") and act.shape[-1:] != self.action_space.shape:
            raise ValueError(
                f"{self.name}: forward(obs) returned actions of shape {act.shape}, the base declares "
                f"{self.action_space.shape}"
            )
        out_emb = None
        if emb is not None:
            out_emb = to_numpy_f32(emb).reshape(b, -1)
        return act, out_emb

    def close(self) -> None:
        del self.module
        if self.device.type == "cuda":
            th.cuda.empty_cache()
