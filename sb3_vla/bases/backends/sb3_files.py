"""Plain-data files for SB3 models, so loading a policy as a base runs no code from the files.

SB3 saves a model zip whose ``data`` entry is JSON, with every non-JSON value (the policy class, its kwargs when
they name classes, the spaces, schedules ...) cloudpickled under a ``":serialized:"`` key; ``SAC.load`` unpickles
all of them, and ``VecNormalize.load`` unpickles ``vecnormalize.pkl``: either can run arbitrary code. This module
reads what a base needs without that:

- ``policy.json`` (written by ``sb3_vla.train`` next to the model: ``<run>/<env>/policy.json``): the policy's
  dotted class, kwargs and spaces as plain JSON (:func:`write_policy_spec`, :func:`read_policy_spec`);
- for other zips, only the four ``data`` entries a policy needs (``policy_class``, ``policy_kwargs``,
  ``observation_space``, ``action_space``), read by :class:`SafeUnpickler`, which resolves only spaces, numpy
  arrays / RNG states and classes of the policy, module and optimiser kinds from ``stable_baselines3``,
  ``sb3_contrib``, ``sb3_vla``, ``torch.nn`` and ``torch.optim``, and refuses anything else by name;
- the weights as a plain state dict (``policy.pth`` in the zip, ``torch.load(weights_only=True)``);
- ``vecnormalize.npz`` (written by ``sb3_vla.train``; ``np.load(allow_pickle=False)``), read as an
  :class:`ObsNormalizer`.

Example:

>>> from gymnasium import spaces
>>> space_from_json(space_to_json(spaces.Box(-1.0, 1.0, (2,))))
Box(-1.0, 1.0, (2,), float32)
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_vla.core.imports import import_object
from sb3_vla.sb3_adapter import constructor_parameters

POLICY_SPEC = "policy.json"
VEC_NORMALIZE_NPZ = "vecnormalize.npz"
SPEC_FORMAT = "sb3_vla.policy/1"
POLICY_KEYS = ("policy_class", "policy_kwargs", "observation_space", "action_space")
SAFE_PREFIXES = ("stable_baselines3.", "sb3_contrib.", "sb3_vla.", "torch.nn.", "torch.optim.")
OPT_IN = "trust_remote_code=True"

# numpy / collections names a pickled space or array needs: constructors of plain data only
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    *(("numpy.random._pickle", n) for n in ("__generator_ctor", "__bit_generator_ctor", "__randomstate_ctor")),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),  # Cython: SeedSequence.__new__ + its state
}


class UntrustedFileError(ValueError):
    """Loading a file would run code from it; the message says what and how to opt in."""


def _safe_class_kinds() -> tuple[type, ...]:
    from stable_baselines3.common.policies import BasePolicy

    return (BasePolicy, th.nn.Module, th.optim.Optimizer)


def resolve_class(dotted: str, what: str, trust_remote_code: bool = False) -> type:
    """Import the class ``package.module.Name`` named by a file, if it is a policy, module or optimiser class of a
    known library (or ``trust_remote_code``).

    >>> resolve_class("torch.nn.modules.activation.ReLU", "activation_fn").__name__
    'ReLU'
    """
    module, _, name = dotted.rpartition(".")
    if not trust_remote_code and not f"{module}.".startswith(SAFE_PREFIXES):
        raise UntrustedFileError(
            f"{what} names {dotted!r}, outside the modules loaded without opt-in ({', '.join(SAFE_PREFIXES)}); "
            f"pass {OPT_IN} to import it"
        )
    obj = import_object(f"{module}:{name}", what)
    if not trust_remote_code and not (isinstance(obj, type) and issubclass(obj, _safe_class_kinds())):
        raise UntrustedFileError(
            f"{what} names {dotted!r}, which is not a policy, torch module or optimiser class; pass {OPT_IN} to "
            "load it anyway"
        )
    return obj


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only plain-data constructors, gymnasium spaces and the classes
    :func:`resolve_class` accepts; any other global (``os.system``, cloudpickle's code rebuilders ...) is refused
    with an :class:`UntrustedFileError` naming it."""

    def __init__(self, file: Any, what: str) -> None:
        super().__init__(file)
        self.what = what

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module.startswith("gymnasium.spaces."):
            obj = super().find_class(module, name)
            if isinstance(obj, type) and issubclass(obj, spaces.Space):
                return obj
        if f"{module}.".startswith(SAFE_PREFIXES):
            return resolve_class(f"{module}.{name}", self.what)
        raise UntrustedFileError(
            f"{self.what} unpickles {module}.{name}, which can run code; pass {OPT_IN} to load it (only for files "
            "you trust)"
        )


def safe_loads(data: bytes, what: str) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler` (``what`` names it in errors)."""
    try:
        return SafeUnpickler(io.BytesIO(data), what).load()
    except UntrustedFileError:
        raise
    except Exception as e:  # truncated or malformed pickles fail in many ways
        raise ValueError(f"{what} cannot be read ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------- plain spaces
def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A gymnasium space as plain JSON data (Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple)."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "start": space.start.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [space_to_json(s) for s in space.spaces]}
    raise TypeError(f"cannot store {type(space).__name__} spaces as plain data")


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`space_to_json`."""
    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        return spaces.Box(np.asarray(data["low"], dtype), np.asarray(data["high"], dtype), tuple(data["shape"]), dtype)
    if kind == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.asarray(data["nvec"]), start=np.asarray(data.get("start", 0)))
    if kind == "MultiBinary":
        return spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return spaces.Dict({k: space_from_json(v) for k, v in data["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([space_from_json(v) for v in data["spaces"]])
    raise ValueError(f"unknown space type {kind!r} in a policy spec")


def _kwargs_to_json(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {str(k): _kwargs_to_json(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_kwargs_to_json(v, key) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, type):
        return {"__class__": f"{value.__module__}.{value.__qualname__}"}
    raise TypeError(f"policy_kwargs {key!r} is a {type(value).__name__}, which has no plain-data form")


def _kwargs_from_json(value: Any, trust_remote_code: bool) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__class__"}:
            return resolve_class(value["__class__"], "policy.json", trust_remote_code)
        return {k: _kwargs_from_json(v, trust_remote_code) for k, v in value.items()}
    if isinstance(value, list):
        return [_kwargs_from_json(v, trust_remote_code) for v in value]
    return value


def write_policy_spec(policy: Any, path: str | Path) -> Path:
    """Write ``policy``'s class, constructor kwargs and spaces as plain JSON (raises ``TypeError`` if a kwarg has
    no plain form, e.g. a function)."""
    kwargs = constructor_parameters(policy)
    obs_space, act_space = kwargs.pop("observation_space"), kwargs.pop("action_space")
    kwargs.pop("lr_schedule", None)
    spec = {
        "format": SPEC_FORMAT,
        "policy_class": f"{type(policy).__module__}.{type(policy).__qualname__}",
        "policy_kwargs": _kwargs_to_json(kwargs, "policy_kwargs"),
        "observation_space": space_to_json(obs_space),
        "action_space": space_to_json(act_space),
    }
    path = Path(path)
    path.write_text(json.dumps(spec, indent=2))
    return path


def read_policy_spec(path: str | Path, trust_remote_code: bool = False) -> dict[str, Any]:
    """Read a ``policy.json`` into ``{policy_class, policy_kwargs, observation_space, action_space}``."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
        if spec.get("format") != SPEC_FORMAT:
            raise ValueError(f"format {spec.get('format')!r}, expected {SPEC_FORMAT!r}")
        return {
            "policy_class": resolve_class(spec["policy_class"], str(path), trust_remote_code),
            "policy_kwargs": _kwargs_from_json(spec["policy_kwargs"], trust_remote_code),
            "observation_space": space_from_json(spec["observation_space"]),
            "action_space": space_from_json(spec["action_space"]),
        }
    except UntrustedFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"policy spec {str(path)!r} is malformed ({type(e).__name__}: {e})") from e


def read_zip_policy_data(path: str | Path) -> dict[str, Any]:
    """Read ``policy_class``, ``policy_kwargs`` and the spaces from an SB3 zip's ``data`` without running code."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            raw = json.loads(archive.read("data").decode())
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not a Stable-Baselines3 model zip ({type(e).__name__}: {e})") from e
    out: dict[str, Any] = {}
    for key in POLICY_KEYS:
        item = raw.get(key, {} if key == "policy_kwargs" else None)
        if item is None:
            raise ValueError(f"{str(path)!r} is not a Stable-Baselines3 model zip (no {key!r} in its data)")
        if isinstance(item, dict) and ":serialized:" in item:
            item = safe_loads(base64.b64decode(item[":serialized:"]), f"{path.name}: the data entry {key!r}")
        out[key] = item
    return out


def read_zip_num_timesteps(path: str | Path) -> int | None:
    """The ``num_timesteps`` an SB3 zip was saved at (SB3's count: agent decisions x envs), ``None`` if absent."""
    try:
        with zipfile.ZipFile(path) as archive:
            value = json.loads(archive.read("data").decode()).get("num_timesteps")
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return int(value) if isinstance(value, int | float) else None


def read_zip_policy_weights(path: str | Path, device: th.device | str = "cpu") -> dict[str, th.Tensor]:
    """The policy's state dict from an SB3 zip's ``policy.pth`` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            raw = archive.read("policy.pth")
        return th.load(io.BytesIO(raw), map_location=device, weights_only=True)
    except KeyError as e:
        raise ValueError(f"{str(path)!r} has no policy weights (policy.pth)") from e
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln] or [str(e).splitlines()[0]]
        raise UntrustedFileError(
            f"{path.name}: policy.pth holds more than tensors ({lines[0]}); pass {OPT_IN} to unpickle it (runs code "
            "from the file)"
        ) from e
    except (zipfile.BadZipFile, RuntimeError, EOFError) as e:
        raise ValueError(f"{str(path)!r}: cannot read policy.pth ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------------------- VecNormalize as arrays
def vec_normalize_arrays(venv: Any) -> dict[str, np.ndarray]:
    """A ``VecNormalize``'s statistics and settings as plain arrays (for ``np.savez``)."""
    rms = venv.obs_rms
    items = rms.items() if isinstance(rms, dict) else [("", rms)]
    out: dict[str, np.ndarray] = {
        "norm_obs": np.array(bool(venv.norm_obs)),
        "norm_reward": np.array(bool(venv.norm_reward)),
        "clip_obs": np.array(float(venv.clip_obs)),
        "clip_reward": np.array(float(venv.clip_reward)),
        "epsilon": np.array(float(venv.epsilon)),
        "gamma": np.array(float(venv.gamma)),
        "dict_obs": np.array(isinstance(rms, dict)),
        "ret_mean": np.asarray(venv.ret_rms.mean),
        "ret_var": np.asarray(venv.ret_rms.var),
        "ret_count": np.array(venv.ret_rms.count),
    }
    for key, r in items:
        out[f"obs_mean.{key}"] = np.asarray(r.mean)
        out[f"obs_var.{key}"] = np.asarray(r.var)
        out[f"obs_count.{key}"] = np.array(r.count)
    return out


def save_vec_normalize(venv: Any, path: str | Path) -> Path:
    """Save a ``VecNormalize``'s statistics as ``.npz`` (no pickle)."""
    path = Path(path)
    np.savez(path, **vec_normalize_arrays(venv))  # type: ignore[arg-type]
    return path


class ObsNormalizer:
    """Observation normalisation of a ``VecNormalize``, from plain arrays: ``clip((x - mean) / sqrt(var + eps))``
    on the keys it normalised (``""`` for a Box observation)."""

    def __init__(
        self, mean: dict[str, np.ndarray], var: dict[str, np.ndarray], clip_obs: float, epsilon: float, enabled: bool
    ) -> None:
        self.mean, self.var = mean, var
        self.clip_obs, self.epsilon, self.enabled = float(clip_obs), float(epsilon), bool(enabled)

    @classmethod
    def load(cls, path: str | Path) -> ObsNormalizer:
        """Read a ``vecnormalize.npz`` (``allow_pickle=False``)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = [k[len("obs_mean.") :] for k in data.files if k.startswith("obs_mean.")]
                mean = {k: np.asarray(data[f"obs_mean.{k}"]) for k in keys}
                var = {k: np.asarray(data[f"obs_var.{k}"]) for k in keys}
                return cls(mean, var, float(data["clip_obs"]), float(data["epsilon"]), bool(data["norm_obs"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"VecNormalize statistics {str(path)!r} cannot be read ({type(e).__name__}: {e})") from e

    def _norm(self, x: np.ndarray, key: str) -> np.ndarray:
        z = (x - self.mean[key]) / np.sqrt(self.var[key] + self.epsilon)
        return np.clip(z, -self.clip_obs, self.clip_obs).astype(np.float32)

    def normalize_obs(self, obs: dict[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray] | np.ndarray:
        """Normalise a batch of observations as ``VecNormalize.normalize_obs`` does."""
        if not self.enabled:
            return obs
        if isinstance(obs, dict):
            return {k: (self._norm(v, k) if k in self.mean else v) for k, v in obs.items()}
        return self._norm(obs, "")
