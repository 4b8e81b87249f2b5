"""Helpers shared by the backends: lazy optional imports, device/dtype selection, image batches, spec options,
and the offline check for Hugging Face hub ids."""

from __future__ import annotations

import importlib
import inspect
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch as th

from sb3_vla.bases.base import batch_size
from sb3_vla.core.options import parse_query as parse_options

__all__ = ["VLA_EXTRA_HINT", "batch_size", "call_with_options", "parse_options", "require", "resolve_device"]

VLA_EXTRA_HINT = 'pip install -e ".[vla]"'


def require(module: str, feature: str, hint: str = VLA_EXTRA_HINT) -> ModuleType:
    """Import an optional dependency or raise an ``ImportError`` naming the install command.

    :param module: the module to import, e.g. ``"open_clip"``.
    :param feature: what needs it, for the message (e.g. ``"the clip: base"``).
    :param hint: the install command to suggest.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{feature} needs the optional dependency {module!r}, which is not installed: {hint}") from e


def resolve_device(device: str | th.device = "auto") -> th.device:
    """``"auto"`` picks CUDA when available, then Apple MPS, else CPU; anything else is passed to ``th.device``."""
    if isinstance(device, th.device):
        return device
    if device == "auto":
        if th.cuda.is_available():
            return th.device("cuda")
        mps = getattr(th.backends, "mps", None)
        if mps is not None and mps.is_available():
            return th.device("mps")
        return th.device("cpu")
    return th.device(device)


_DTYPES = {
    "float32": th.float32,
    "fp32": th.float32,
    "float": th.float32,
    "bfloat16": th.bfloat16,
    "bf16": th.bfloat16,
    "float16": th.float16,
    "fp16": th.float16,
    "half": th.float16,
}


def resolve_dtype(dtype: str | th.dtype | None, device: th.device) -> th.dtype:
    """``"auto"``/``None``: bfloat16 on CUDA (when supported), float32 elsewhere.

    Half precision on CPU is refused: many CPU kernels lack it or lose enough precision to produce NaNs.
    """
    if dtype is None or dtype == "auto":
        if device.type == "cuda" and th.cuda.is_bf16_supported():
            return th.bfloat16
        return th.float32
    if isinstance(dtype, th.dtype):
        out = dtype
    else:
        key = str(dtype).lower().removeprefix("torch.")
        if key not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(sorted(_DTYPES))}")
        out = _DTYPES[key]
    if device.type == "cpu" and out == th.float16:
        raise ValueError("dtype float16 on CPU is not supported (NaN-prone); use dtype='float32' or 'bfloat16'")
    return out


def images_to_nhwc_uint8(images: np.ndarray, key: str = "rgb") -> np.ndarray:
    """Bring a batch of images to uint8 ``(B, H, W, 3)``.

    Accepts uint8 or float (``[0, 1]`` or ``[0, 255]``) arrays shaped ``(B, H, W, C)`` or ``(B, C, H, W)`` with
    ``C`` in 1, 3, 4 (grey is repeated, alpha dropped).

    :param images: the stacked images of one batch.
    :param key: the observation key, for error messages.
    """
    arr = np.asarray(images)
    if arr.ndim != 4:
        raise ValueError(
            f"observation {key!r}: expected a batch of images (B, H, W, C) or (B, C, H, W), got shape {arr.shape}"
        )
    if arr.shape[-1] in (1, 3, 4):
        hwc = arr
    elif arr.shape[1] in (1, 3, 4):
        hwc = np.transpose(arr, (0, 2, 3, 1))
    else:
        raise ValueError(f"observation {key!r}: cannot find a channel axis of size 1, 3 or 4 in shape {arr.shape}")
    if hwc.dtype != np.uint8:
        f = hwc.astype(np.float32)
        if not np.all(np.isfinite(f)):
            raise ValueError(f"observation {key!r}: image contains NaN or inf")
        if f.size and f.max() <= 1.0:
            f = f * 255.0
        hwc = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    if hwc.shape[-1] == 1:
        hwc = np.repeat(hwc, 3, axis=-1)
    elif hwc.shape[-1] == 4:
        hwc = hwc[..., :3]
    return np.ascontiguousarray(hwc)


def batch_instructions(instructions: Sequence[str] | None, n: int, default: str | None, who: str) -> list[str]:
    """One instruction per row: the batch's own, else ``default``; raise when neither is there."""
    if instructions is not None:
        out: list[str | None] = [s if s is not None else default for s in instructions]
        if len(out) != n:
            raise ValueError(f"{who}: got {len(out)} instructions for a batch of {n}")
    else:
        out = [default] * n
    if any(s is None for s in out):
        raise ValueError(
            f"{who} needs a language instruction: the env gave none; pass instruction='...' (a default prompt)"
        )
    return [str(s) for s in out]


def call_with_options(cls: Callable[..., Any], who: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``cls(*args, **kwargs)``, turning an unknown keyword into a ``TypeError`` listing the valid options."""
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            valid = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
            raise TypeError(f"{who}: unknown option(s) {unknown}; valid options: {valid}")
    return cls(*args, **kwargs)


def hub_offline() -> bool:
    """Whether the user asked Hugging Face libraries to stay offline (read at call time, not import time)."""
    on = {"1", "true", "yes", "on"}
    if any(os.environ.get(v, "").strip().lower() in on for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers/open_clip
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connect to the hub endpoint, so a missing network fails in seconds instead of after retries."""
    try:
        from huggingface_hub import constants

        endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    except ImportError:  # pragma: no cover
        return False
    url = urlparse(endpoint)
    host = url.hostname
    if not host:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` or ``name`` without path separators beyond the one slash."""
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(p and not p.startswith(".") for p in parts) and "\\" not in name


def check_hub_available(repo_id: str, who: str, cache_dir: str | None = None, filename: str = "config.json") -> bool:
    """Make sure a hub id can be loaded: it is cached, or the hub is reachable and offline mode is off.

    :return: ``True`` when the id is cached locally (callers then load with ``local_files_only=True``).
    :raises ValueError: offline (``HF_HUB_OFFLINE=1`` or no network) and not cached, telling the user to pass
        a local path.
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return False
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    if isinstance(cached, str):
        return True
    reason = None
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif not hub_reachable():
        reason = "the Hugging Face hub cannot be reached"
    if reason:
        raise ValueError(
            f"{who}: {repo_id!r} is not a local directory and is not in the Hugging Face cache, and {reason}. "
            "Download it on a machine with network access and pass the local path instead "
            f"(e.g. hf:/path/to/{repo_id.split('/')[-1]})"
        )
    return False


def existing_path(path: str | os.PathLike[str]) -> Path | None:
    """The expanded path when it exists, else ``None``."""
    p = Path(os.path.expandvars(os.path.expanduser(str(path))))
    return p if p.exists() else None


def to_numpy_f32(x: th.Tensor | np.ndarray) -> np.ndarray:
    """Float32 numpy copy of a model output, upcast from bf16/fp16 on the device first.

    Non-finite values are passed through: the observation wrappers own that check (raise, or zero and count).
    """
    if isinstance(x, th.Tensor):
        return x.detach().to(dtype=th.float32).cpu().numpy()
    return np.asarray(x, dtype=np.float32)
