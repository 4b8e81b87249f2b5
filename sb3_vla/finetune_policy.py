"""Strategy 4: fine-tune a VLA's own heads with stock PPO.

:class:`VLAActorCriticPolicy` is an SB3 ``ActorCriticPolicy`` whose action, value, log-probability and entropy all
come from a user's ``torch.nn.Module`` with the EmbodiChain VLA interface:

- ``forward(observations) -> action (B, A)``; when it takes a ``deterministic`` keyword the policy passes it
  (``False`` while PPO collects rollouts: the module must then *sample*, or PPO never explores);
- ``evaluate_actions(observations, actions) -> (log_prob (B,), entropy (B,))``: the log-likelihood PPO's ratio
  and entropy bonus use, unchanged;
- ``get_value(observations) -> (B, 1)``, optional. Without it the policy adds a small value MLP (``net_arch``,
  default ``[64, 64]``) on ``embed(observations) -> (B, D)`` when the module has that method (the same optional
  method ``module:`` bases use), else on the flattened observation, and warns saying which.

``observations`` is a dict of tensors: the env's Dict keys, or ``{"obs": tensor}`` for a Box env. uint8 keys
(images) reach the module as uint8 both in rollouts and in PPO's updates (SB3's rollout buffer stores float32),
the other keys as float32; SB3 transposes HWC images to CHW before any policy sees them. The module is built and
its weights loaded by :func:`load_vla_model`; ``freeze`` names submodules that get no gradient and stay in
``eval()`` mode (no dropout, no BatchNorm statistics updates).

Saving: a model zip holds only what training can change. When the weights come from ``model_path``, the frozen
parameters and buffers are left out of the policy's ``state_dict`` and reloaded from ``model_path`` on load; a
SHA-256 digest of them is saved instead, and a checkpoint whose frozen weights differ is refused. Without
``model_path`` every weight is saved.

Example::

    model = PPO(VLAActorCriticPolicy, "Pendulum-v1", learning_rate=1e-4, policy_kwargs=dict(
        model_class="my_pkg.vla.MyVLA", model_path="ckpt.pt", model_config=dict(hidden=64), freeze=["encoder"]))
"""

from __future__ import annotations

import hashlib
import inspect
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_vla.bases.backends.module import import_class

#: key of the state dict in an EmbodiChain checkpoint (``{"model_state_dict": model.state_dict(), ...}``)
MODEL_STATE_KEY = "model_state_dict"
#: state-dict entry holding the SHA-256 digest of the frozen weights left out of a saved policy
FROZEN_DIGEST_KEY = "vla_frozen_sha256"
_PREFIX = "vla."
_PROBE_BATCH = 2


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def load_vla_model(
    model_path: str | Path | None,
    model_class: str | type[nn.Module],
    model_config: dict[str, Any] | None = None,
    device: str | th.device = "cpu",
    state_dict_key: str = MODEL_STATE_KEY,
) -> nn.Module:
    """Build ``model_class(**model_config)``, load ``checkpoint[state_dict_key]`` from ``model_path`` with
    ``torch.load(weights_only=True)``, move it to ``device`` and switch it to ``eval()`` (EmbodiChain's loader).

    :param model_path: a ``torch.save``-d dict holding the state dict under ``state_dict_key``; ``None`` keeps the
        weights the constructor makes.
    :param model_class: the class, or its dotted path ``"package.module.Class"``.
    :param model_config: constructor keyword arguments.
    :param device: where to put the module.
    :param state_dict_key: the checkpoint key of the state dict.
    :raises ValueError: a missing file or key, a checkpoint that is not a plain tensor dict, or parameter names or
        shapes that do not match the module (all of them listed).

    >>> import torch as th
    >>> m = load_vla_model(None, "torch.nn.Linear", {"in_features": 3, "out_features": 1})
    >>> tuple(m.weight.shape), m.training
    ((1, 3), False)
    """
    cls = import_class(model_class) if isinstance(model_class, str) else model_class
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"model_class {model_class!r} is not a torch.nn.Module subclass")
    name = _class_name(cls)
    try:
        module = cls(**(model_config or {}))
    except TypeError as e:
        raise TypeError(f"cannot build {name}(**{model_config!r}): {e}; fix model_config") from e
    if model_path is not None:
        _load_checkpoint(module, Path(model_path), state_dict_key, name)
    return module.to(device).eval()


def _load_checkpoint(module: nn.Module, path: Path, key: str, name: str) -> None:
    if not path.is_file():
        raise ValueError(f"{name}: checkpoint file {str(path)!r} does not exist (model_path)")
    try:
        ckpt = th.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in several types
        raise ValueError(
            f"{name}: cannot load {str(path)!r} with torch.load(weights_only=True) ({e}); save plain tensors: "
            f"torch.save({{{key!r}: model.state_dict()}}, path)"
        ) from e
    if not isinstance(ckpt, dict) or key not in ckpt:
        found = sorted(map(str, ckpt))[:20] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{name}: checkpoint {str(path)!r} has no key {key!r} (found {found}); save it as "
            f"torch.save({{{key!r}: model.state_dict()}}, path) or pass state_dict_key"
        )
    state = ckpt[key]
    if not isinstance(state, dict):
        raise ValueError(f"{name}: checkpoint {str(path)!r}[{key!r}] is a {type(state).__name__}, not a state dict")
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)}, module {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"missing keys {missing}"] * bool(missing) + [f"unexpected keys {unexpected}"] * bool(unexpected)
        parts += [f"shape mismatch {'; '.join(shapes)}"] * bool(shapes)
        raise ValueError(
            f"{name}: checkpoint {str(path)!r} does not match the module built from model_config: "
            f"{', '.join(parts)}. Use the model_config the checkpoint was trained with"
        )
    module.load_state_dict(state)


def _accepts_deterministic(module: nn.Module) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return "deterministic" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _digest(tensors: dict[str, th.Tensor]) -> bytes:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(tensors[key].shape)}|".encode())
        h.update(t.view(th.uint8).numpy().tobytes())
    return h.digest()


class VLAActorCriticPolicy(ActorCriticPolicy):
    """PPO/A2C policy that delegates action, value, log-prob and entropy to a user's VLA module.

    :param observation_space: Box or Dict of Box (SB3 passes it).
    :param action_space: the env's action space (SB3 passes it); the module's actions must have its shape.
    :param lr_schedule: learning-rate schedule (SB3 passes it). Fine-tuning a pretrained head wants a low rate
        (``learning_rate=1e-4`` or less).
    :param model_class: dotted path of the module class; a string keeps the model zip's ``policy_kwargs`` plain
        data (SB3 stores the kwargs as given; a class object would be pickled).
    :param model_path: checkpoint with ``checkpoint[state_dict_key]`` (see :func:`load_vla_model`); ``None``: the
        constructor's weights, and every weight is saved in the model zip.
    :param model_config: constructor keyword arguments of ``model_class``.
    :param freeze: dotted submodule names (``module.get_submodule``) whose parameters get no gradient; they stay in
        eval mode. Parameters the module itself sets ``requires_grad=False`` are frozen too.
    :param state_dict_key: checkpoint key of the state dict.
    :param net_arch: hidden sizes of the value head added when the module has no ``get_value`` (a list, or
        ``dict(vf=[...])``); unused otherwise.
    :param activation_fn: that value head's activation.
    :param use_sde: must be ``False`` (the module owns its exploration noise).
    :param normalize_images: only for the flattened-observation value head (the module gets raw images).
    :param optimizer_class: optimiser over the trainable parameters.
    :param optimizer_kwargs: its keyword arguments (default ``eps=1e-5`` for Adam, as SB3).

    Example::

        model = PPO(VLAActorCriticPolicy, env, learning_rate=1e-4, policy_kwargs=dict(
            model_class="my_pkg.vla.MyVLA", model_path="ckpt.pt", freeze=["encoder"]))

    In zoo YAML: ``policy: sb3_vla.policies.VLAActorCriticPolicy`` with ``policy_kwargs`` as a mapping or as the
    string ``"dict(model_class='my_pkg.vla.MyVLA', model_path='ckpt.pt', freeze=['encoder'])"`` (rl-zoo
    ``eval``-s strings; plain literals are all it needs).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        model_class: str | type[nn.Module] | None = None,
        model_path: str | Path | None = None,
        model_config: dict[str, Any] | None = None,
        freeze: Sequence[str] = (),
        state_dict_key: str = MODEL_STATE_KEY,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        use_sde: bool = False,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if model_class is None:
            raise ValueError(
                "VLAActorCriticPolicy needs policy_kwargs=dict(model_class='package.module.Class', "
                "model_path='ckpt.pt', model_config={...}, freeze=[...])"
            )
        if use_sde:
            raise ValueError("VLAActorCriticPolicy does not support use_sde: the module's own distribution samples")
        _check_spaces(observation_space)
        if isinstance(freeze, str):
            freeze = [freeze]
        # read by _build, which ActorCriticPolicy.__init__ calls: plain attributes before nn.Module.__init__
        self.model_class = _storable_class(model_class)
        self.model_path = None if model_path is None else str(model_path)
        self.model_config = dict(model_config or {})
        self.freeze = [str(n) for n in freeze]
        self.state_dict_key = state_dict_key
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch if net_arch is not None else [64, 64],
            activation_fn=activation_fn,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    # ------------------------------------------------------------------------------------------------ building
    def _build(self, lr_schedule: Schedule) -> None:
        """Load the module, freeze, probe the interface, add the value head if needed, build the optimiser."""
        self.vla = load_vla_model(self.model_path, self.model_class, self.model_config, "cpu", self.state_dict_key)
        self._name = _class_name(type(self.vla))
        if not callable(getattr(self.vla, "evaluate_actions", None)):
            raise TypeError(
                f"{self._name} has no evaluate_actions(observations, actions) -> (log_prob (B,), entropy (B,)); "
                "PPO needs the module's own log-likelihood of its actions"
            )
        if type(self.vla).forward is nn.Module.forward:
            raise TypeError(f"{self._name} has no forward(observations) -> action (B, A)")
        self._frozen_modules = self._apply_freeze()
        self._deterministic_kwarg = _accepts_deterministic(self.vla)
        self._value_source = "get_value" if callable(getattr(self.vla, "get_value", None)) else ""
        value_in = self._probe()
        self.value_head: nn.Module | None = None
        if not self._value_source:
            self._value_source = "embed" if callable(getattr(self.vla, "embed", None)) else "observation"
            arch = self.net_arch.get("vf", [64, 64]) if isinstance(self.net_arch, dict) else list(self.net_arch)
            self.value_head = nn.Sequential(*create_mlp(value_in, 1, arch, self.activation_fn))
            linears = [m for m in self.value_head if isinstance(m, nn.Linear)]
            for m in linears:  # SB3's orthogonal init: sqrt(2) hidden, 1 for the value output
                nn.init.orthogonal_(m.weight, gain=1.0 if m is linears[-1] else 2**0.5)
                nn.init.zeros_(m.bias)
            what = "embed(observations)" if self._value_source == "embed" else "the flattened observation"
            warnings.warn(
                f"{self._name} has no get_value(observations); PPO's value function is a new MLP {arch} -> 1 on "
                f"{what} ({value_in} inputs), trained from scratch",
                UserWarning,
                stacklevel=4,
            )
        self._frozen_keys, self._frozen_digest = self._frozen_state()
        trainable = [p for p in self.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(f"{self._name}: freeze={self.freeze} leaves no trainable parameter; freeze less")
        self.optimizer = self.optimizer_class(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _apply_freeze(self) -> list[nn.Module]:
        frozen = []
        for name in self.freeze:
            try:
                sub = self.vla.get_submodule(name)
            except AttributeError as e:
                children = [n for n, _ in self.vla.named_children()]
                raise ValueError(
                    f"freeze: {self._name} has no submodule {name!r}; its submodules are {children}"
                ) from e
            sub.requires_grad_(False)
            sub.eval()
            frozen.append(sub)
        return frozen

    def _frozen_state(self) -> tuple[set[str], bytes]:
        """State-dict keys left out of a saved policy (only when the weights come from ``model_path``)."""
        if self.model_path is None:
            return set(), b""
        keys = {_PREFIX + n for n, p in self.vla.named_parameters() if not p.requires_grad}
        for name in self.freeze:
            prefix = f"{_PREFIX}{name}."
            keys |= {prefix + k for k in self.vla.get_submodule(name).state_dict()}
        full = super().state_dict()
        keys &= set(full)
        return keys, _digest({k: full[k] for k in keys})

    def _probe(self) -> int:
        """Check the module's outputs on a zero batch; return the value head's input size."""
        obs = {
            k: th.zeros((_PROBE_BATCH, *(s.shape or ())), dtype=_dtype(s))
            for k, s in _obs_spaces(self.observation_space)
        }
        b, name = _PROBE_BATCH, self._name
        with th.no_grad():
            action = self._act(obs, deterministic=False)
            want = (b, *(self.action_space.shape or ()))
            if action.ndim == 0 or action.shape[0] != b or action[0].numel() != math.prod(want[1:]):
                raise ValueError(
                    f"{name}.forward returned actions of shape {tuple(action.shape)} for a batch of {b}; the env's "
                    f"action space needs {want}"
                )
            self._evaluate(obs, action)
            if not self._deterministic_kwarg and th.equal(action, self._act(obs, deterministic=False)):
                warnings.warn(
                    f"{name}.forward returned the same action twice for the same observation: PPO explores only if "
                    "the module samples. Accept forward(observations, deterministic=False) and sample from your "
                    "distribution when deterministic is False",
                    UserWarning,
                    stacklevel=5,
                )
            if self._value_source == "get_value":
                self._module_value(obs)
                return 0
            if callable(getattr(self.vla, "embed", None)):
                emb = self.vla.embed(obs)  # type: ignore[operator]
                if not isinstance(emb, th.Tensor) or emb.ndim < 2 or emb.shape[0] != b:
                    raise ValueError(f"{name}.embed(observations) must return a (B, D) tensor, got {_shape(emb)}")
                return int(emb.reshape(b, -1).shape[1])
        return int(self.features_dim)

    # ------------------------------------------------------------------------------------------------ the module
    def _module_obs(self, obs: PyTorchObs) -> dict[str, th.Tensor]:
        items = obs.items() if isinstance(obs, dict) else [("obs", obs)]
        out: dict[str, th.Tensor] = {}
        for key, value in items:
            space = self.observation_space[key] if isinstance(self.observation_space, spaces.Dict) else None
            space = space if space is not None else self.observation_space
            out[key] = value.to(_dtype(space))
        return out

    def _act(self, obs: dict[str, th.Tensor], deterministic: bool) -> th.Tensor:
        action = self.vla(obs, deterministic=deterministic) if self._deterministic_kwarg else self.vla(obs)
        if not isinstance(action, th.Tensor):
            raise TypeError(f"{self._name}.forward must return an action tensor, got {type(action).__name__}")
        # SB3 turns actions, log-probs and values into numpy: a bfloat16 VLA's outputs must become float32
        return action.float() if action.is_floating_point() else action

    def _evaluate(self, obs: dict[str, th.Tensor], actions: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
        out = self.vla.evaluate_actions(obs, actions)  # type: ignore[operator]
        b = actions.shape[0]
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise TypeError(f"{self._name}.evaluate_actions must return (log_prob, entropy), got {_shape(out)}")
        log_prob, entropy = out
        # a (B, 1) log-prob would broadcast against PPO's (B,) old log-probs into a (B, B) ratio: refuse it
        if not isinstance(log_prob, th.Tensor) or tuple(log_prob.shape) != (b,):
            raise ValueError(f"{self._name}.evaluate_actions: log_prob must have shape ({b},), got {_shape(log_prob)}")
        if entropy is not None and (not isinstance(entropy, th.Tensor) or tuple(entropy.shape) != (b,)):
            raise ValueError(f"{self._name}.evaluate_actions: entropy must have shape ({b},), got {_shape(entropy)}")
        return log_prob.float(), None if entropy is None else entropy.float()

    def _module_value(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        value = self.vla.get_value(obs)  # type: ignore[operator]
        b = next(iter(obs.values())).shape[0]
        if not isinstance(value, th.Tensor) or tuple(value.shape) != (b, 1):
            raise ValueError(f"{self._name}.get_value must return shape ({b}, 1), got {_shape(value)}")
        return value.float()

    def _value(self, obs: PyTorchObs, module_obs: dict[str, th.Tensor]) -> th.Tensor:
        if self._value_source == "get_value":
            return self._module_value(module_obs)
        assert self.value_head is not None
        if self._value_source == "embed":
            emb = self.vla.embed(module_obs)  # type: ignore[operator]
            return self.value_head(emb.reshape(emb.shape[0], -1).float())
        features = super().extract_features(obs, self.features_extractor)
        return self.value_head(features)

    # ------------------------------------------------------------------------------------------------ SB3 API
    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Actions, values and log-probabilities for a rollout step (what ``collect_rollouts`` stores)."""
        module_obs = self._module_obs(obs)
        actions = self._act(module_obs, deterministic)
        log_prob, _ = self._evaluate(module_obs, actions)
        values = self._value(obs, module_obs)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob  # type: ignore[misc]

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """Values and the module's own ``(log_prob, entropy)`` of ``actions`` (PPO's update)."""
        module_obs = self._module_obs(obs)
        log_prob, entropy = self._evaluate(module_obs, actions)
        return self._value(obs, module_obs), log_prob, entropy

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        return self._value(obs, self._module_obs(obs))

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._act(self._module_obs(observation), deterministic)

    def get_distribution(self, obs: PyTorchObs) -> Distribution:
        raise NotImplementedError(
            f"{type(self).__name__}: the module {self._name} owns its action distribution; use predict(), "
            "forward() or evaluate_actions()"
        )

    def train(self, mode: bool = True) -> VLAActorCriticPolicy:
        """SB3's ``set_training_mode``; frozen submodules always stay in eval mode."""
        super().train(mode)
        for sub in getattr(self, "_frozen_modules", ()):
            sub.eval()
        return self

    # ------------------------------------------------------------------------------------------------ saving
    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The trainable weights and buffers; frozen weights loaded from ``model_path`` are replaced by their
        digest (:data:`FROZEN_DIGEST_KEY`)."""
        state = super().state_dict(*args, **kwargs)
        keys = getattr(self, "_frozen_keys", None)
        if not keys:
            return state
        prefix = kwargs.get("prefix", "")
        for key in keys:
            state.pop(prefix + key, None)
        state[prefix + FROZEN_DIGEST_KEY] = th.tensor(list(self._frozen_digest), dtype=th.uint8)
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict from :meth:`state_dict`: frozen weights may be absent (they come from ``model_path``)
        but must match the saved digest."""
        state = dict(state_dict)
        digest = state.pop(FROZEN_DIGEST_KEY, None)
        if digest is not None:
            saved = bytes(digest.cpu().tolist())
            if saved != self._frozen_digest:
                raise ValueError(
                    f"the frozen weights of {self._name} loaded from model_path={self.model_path!r} differ from "
                    "those this policy was trained with (frozen-weights digest mismatch); point model_path at the "
                    "original checkpoint"
                )
        result = super().load_state_dict(state, strict=False, assign=assign)
        result.missing_keys[:] = [k for k in result.missing_keys if k not in self._frozen_keys or digest is None]
        if strict and (result.missing_keys or result.unexpected_keys):
            raise RuntimeError(
                f"error loading the state dict of {type(self).__name__} ({self._name}): missing keys "
                f"{result.missing_keys}, unexpected keys {result.unexpected_keys}"
            )
        return result

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        keep = set(inspect.signature(VLAActorCriticPolicy.__init__).parameters) - {"self"}
        data = {k: v for k, v in data.items() if k in keep}
        data.update(
            model_class=self.model_class,
            model_path=self.model_path,
            model_config=dict(self.model_config),
            freeze=list(self.freeze),
            state_dict_key=self.state_dict_key,
        )
        return data


def _storable_class(model_class: str | type[nn.Module]) -> str | type[nn.Module]:
    """A dotted path when the class can be imported back by it (plain data in the model zip), else the class."""
    if isinstance(model_class, str):
        return model_class
    name = _class_name(model_class)
    try:
        if import_class(name) is model_class:
            return name
    except ValueError:
        pass
    return model_class


def _check_spaces(observation_space: spaces.Space) -> None:
    for key, space in _obs_spaces(observation_space):
        if not isinstance(space, spaces.Box):
            raise TypeError(
                f"VLAActorCriticPolicy takes Box or Dict-of-Box observations; key {key!r} is {type(space).__name__}"
            )


def _obs_spaces(observation_space: spaces.Space) -> list[tuple[str, spaces.Space]]:
    if isinstance(observation_space, spaces.Dict):
        return list(observation_space.spaces.items())
    return [("obs", observation_space)]


def _dtype(space: spaces.Space) -> th.dtype:
    return th.uint8 if space.dtype is not None and space.dtype.name == "uint8" else th.float32


def _shape(value: Any) -> str:
    if isinstance(value, th.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(_shape(v) for v in value)})"
    return f"a {type(value).__name__}"
