"""Atomic, pickle-free training checkpoints: model and optimiser state, replay buffer, VecNormalize statistics,
RNG states and the resolved config.

Layout of a run's ``checkpoints/`` folder::

    checkpoints/
      latest                  # name of the newest complete checkpoint (replaced atomically)
      step_000012000/
        params.pt             # state dicts + torch variables (loaded with torch.load(weights_only=True))
        replay_buffer.npz     # off-policy algorithms (np.load(allow_pickle=False))
        vecnormalize.npz      # when VecNormalize is used
        rng.pt                # python / numpy / torch RNG states
        meta.json             # step counters, spaces, algorithm, env id
        config.yml            # the resolved zoo-format config

A checkpoint is written into a temporary folder and renamed into place, then ``latest`` is replaced; a crash
mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecNormalize

from sb3_vla.deprecation import warn_moved
from sb3_vla.sb3_adapter import counters, save_params, set_counters

_BUFFER_FIELDS = ("actions", "rewards", "dones", "timeouts")
_RB = "replay_buffer.npz"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, or does not match the env/algorithm it is loaded into."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files are missing, truncated or unreadable (an older checkpoint may still be good)."""


class DiskFullError(OSError):
    """A save failed for lack of space; the message names the folder and its free space."""


_WRITE_FAILURES = ("No space left", "file write failed", "inline_container", "Disk quota")


def _free_space(folder: Path) -> str:
    for p in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            return f"{shutil.disk_usage(p).free / 2**20:.1f} MiB free"
    return "free space unknown"


@contextlib.contextmanager
def guard_write(folder: str | Path, what: str) -> Iterator[None]:
    """Turn a failed write under ``folder`` (``OSError`` ENOSPC / EDQUOT, or torch's ``RuntimeError`` from its zip
    writer) into a :class:`DiskFullError` naming ``what``, the folder and the space left.

    >>> with guard_write("/tmp", "a note"):
    ...     pass
    """
    folder = Path(folder)
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on device while saving {what} to {str(folder)!r} ({_free_space(folder)}); free some "
            f"space or pass --log-folder on a disk with room ({e})",
        ) from e
    except RuntimeError as e:
        if not any(s in str(e) for s in _WRITE_FAILURES):
            raise
        raise DiskFullError(
            errno.ENOSPC,
            f"writing {what} to {str(folder)!r} failed ({_free_space(folder)}; torch: {str(e).splitlines()[0]}); "
            "the disk is probably full: free some space or pass --log-folder on a disk with room",
        ) from e


def _space_repr(space: Any) -> str:
    return repr(space)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _buffer_arrays(buffer: ReplayBuffer | DictReplayBuffer) -> dict[str, np.ndarray]:
    n = buffer.buffer_size if buffer.full else buffer.pos
    out: dict[str, np.ndarray] = {"pos": np.array(buffer.pos), "full": np.array(buffer.full)}
    for name in _BUFFER_FIELDS:
        out[name] = getattr(buffer, name)[:n]
    if isinstance(buffer, DictReplayBuffer):
        for key in buffer.observations:
            out[f"obs.{key}"] = buffer.observations[key][:n]
            out[f"next_obs.{key}"] = buffer.next_observations[key][:n]
    else:
        out["obs"] = buffer.observations[:n]
        if not buffer.optimize_memory_usage:
            out["next_obs"] = buffer.next_observations[:n]
    return out


def _restore_buffer(buffer: ReplayBuffer | DictReplayBuffer, data: Any) -> None:
    n = len(data["actions"])
    if n > buffer.buffer_size:
        raise CheckpointError(f"replay buffer holds {n} transitions but buffer_size is {buffer.buffer_size}")
    for name in _BUFFER_FIELDS:
        getattr(buffer, name)[:n] = data[name]
    if isinstance(buffer, DictReplayBuffer):
        for key in buffer.observations:
            buffer.observations[key][:n] = data[f"obs.{key}"]
            buffer.next_observations[key][:n] = data[f"next_obs.{key}"]
    else:
        buffer.observations[:n] = data["obs"]
        if "next_obs" in data:
            buffer.next_observations[:n] = data["next_obs"]
    buffer.pos = int(data["pos"])
    buffer.full = bool(data["full"])


def _vecnormalize_arrays(venv: VecNormalize) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"ret_mean": venv.ret_rms.mean, "ret_var": venv.ret_rms.var}
    out["ret_count"] = np.array(venv.ret_rms.count)
    rms = venv.obs_rms
    items = rms.items() if isinstance(rms, dict) else [("", rms)]
    for key, r in items:
        out[f"obs_mean.{key}"] = r.mean
        out[f"obs_var.{key}"] = r.var
        out[f"obs_count.{key}"] = np.array(r.count)
    return out


def _restore_vecnormalize(venv: VecNormalize, data: Any) -> None:
    venv.ret_rms.mean, venv.ret_rms.var = data["ret_mean"], data["ret_var"]
    venv.ret_rms.count = float(data["ret_count"])
    rms = venv.obs_rms
    items = rms.items() if isinstance(rms, dict) else [("", rms)]
    for key, r in items:
        if f"obs_mean.{key}" not in data:
            raise CheckpointError(f"VecNormalize statistics in the checkpoint lack observation key {key!r}")
        r.mean, r.var, r.count = data[f"obs_mean.{key}"], data[f"obs_var.{key}"], float(data[f"obs_count.{key}"])


def save_checkpoint(
    model: BaseAlgorithm,
    root: str | Path,
    config: dict[str, Any] | None = None,
    keep: int = 2,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model`` under ``root`` atomically; keep the newest ``keep`` checkpoints.

    :return: the checkpoint folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{model.num_timesteps:012d}"
    with guard_write(root, f"the checkpoint at step {model.num_timesteps}"):
        final = _write_checkpoint(model, root, name, config, extra_meta)
    _prune(root, keep)
    return final


def _write_checkpoint(
    model: BaseAlgorithm, root: Path, name: str, config: dict[str, Any] | None, extra_meta: dict[str, Any] | None
) -> Path:
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{name}-"))
    try:
        state_dicts, variables = save_params(model)
        params: dict[str, Any] = {}
        for sd_name in state_dicts:
            params[f"sd:{sd_name}"] = _getattr(model, sd_name).state_dict()
        for var_name in variables or []:
            params[f"var:{var_name}"] = _getattr(model, var_name).detach().cpu()
        th.save(params, tmp / "params.pt")
        if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
            np.savez(tmp / "replay_buffer.npz", **_buffer_arrays(model.replay_buffer))  # type: ignore[arg-type]
        venv = model.get_vec_normalize_env()
        if venv is not None:
            np.savez(tmp / "vecnormalize.npz", **_vecnormalize_arrays(venv))  # type: ignore[arg-type]
        th.save(
            {
                "python": json.dumps(random.getstate()),
                "numpy": json.dumps(_np_state()),
                "torch": th.get_rng_state(),
            },
            tmp / "rng.pt",
        )
        meta = {
            "algo": type(model).__name__,
            "num_timesteps": int(model.num_timesteps),
            **counters(model),
            "observation_space": _space_repr(model.observation_space),
            "action_space": _space_repr(model.action_space),
            **(extra_meta or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if config is not None:
            (tmp / "config.yml").write_text(yaml.safe_dump(config, sort_keys=True))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _atomic_write_text(root / "latest", name + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _np_state() -> list[Any]:
    state: Any = np.random.get_state()
    kind, keys, pos, has_gauss, cached = state
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _getattr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _prune(root: Path, keep: int) -> None:
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (``None`` when there is none)."""
    root = Path(root)
    pointer = root / "latest"
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / "meta.json").is_file():
            return path
    done = sorted(p for p in root.glob("step_*") if (p / "meta.json").is_file())
    return done[-1] if done else None


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads((path / "meta.json").read_text())
    except FileNotFoundError as e:
        raise CorruptCheckpointError(f"no checkpoint at {str(path)!r} (meta.json missing)") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(f"checkpoint {str(path)!r} is corrupted (meta.json: {e})") from e


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (read in full here, so a truncated file fails before anything is restored)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise CorruptCheckpointError(
            f"{str(path)!r} is truncated or corrupted ({type(e).__name__}: {e}); resume falls back to an older "
            "checkpoint when there is one"
        ) from e


def _read_checkpoint(model: BaseAlgorithm, path: Path) -> dict[str, Any]:
    """Read and check every file of a checkpoint without touching ``model``."""
    meta = read_meta(path)
    for key, current in (
        ("algo", type(model).__name__),
        ("observation_space", _space_repr(model.observation_space)),
        ("action_space", _space_repr(model.action_space)),
    ):
        if meta.get(key) != current:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was made with {key} {meta.get(key)} but this run has {current}; "
                "resume with the same env, wrappers and algorithm, or start a new run"
            )
    try:
        params = th.load(path / "params.pt", map_location=get_device(model.device), weights_only=True)
    except FileNotFoundError as e:
        raise CorruptCheckpointError(f"checkpoint {str(path)!r} has no params.pt") from e
    except Exception as e:  # truncated zips and pickles fail in many ways
        raise CorruptCheckpointError(f"checkpoint {str(path)!r} is corrupted (params.pt: {e})") from e
    out: dict[str, Any] = {"meta": meta, "params": params}
    if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None and (path / _RB).is_file():
        out["buffer"] = _read_npz(path / _RB)
    if model.get_vec_normalize_env() is not None and (path / "vecnormalize.npz").is_file():
        out["vecnormalize"] = _read_npz(path / "vecnormalize.npz")
    if (path / "rng.pt").is_file():
        try:
            out["rng"] = th.load(path / "rng.pt", weights_only=True)
        except Exception as e:
            raise CorruptCheckpointError(f"checkpoint {str(path)!r} is corrupted (rng.pt: {e})") from e
    return out


def load_checkpoint(model: BaseAlgorithm, path: str | Path) -> dict[str, Any]:
    """Restore a checkpoint into a freshly built ``model`` (same algorithm, env and hyperparameters).

    Every file is read and checked before ``model`` is changed, so a failed load leaves it as built.

    :raises CorruptCheckpointError: when files are missing, truncated or corrupted.
    :raises CheckpointError: when spaces/algorithm differ.
    :return: the checkpoint's metadata.
    """
    path = Path(path)
    data = _read_checkpoint(model, path)
    params = data["params"]
    state_dicts, variables = save_params(model)
    for sd_name in state_dicts:
        if f"sd:{sd_name}" not in params:
            raise CorruptCheckpointError(f"checkpoint {str(path)!r} lacks the state of {sd_name!r}")
    for sd_name in state_dicts:
        try:
            _getattr(model, sd_name).load_state_dict(params[f"sd:{sd_name}"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {str(path)!r}: {sd_name} does not match this model: {e}") from e
    for var_name in variables or []:
        if f"var:{var_name}" in params:
            with th.no_grad():
                _getattr(model, var_name).copy_(params[f"var:{var_name}"])
    if "buffer" in data:
        try:
            _restore_buffer(model.replay_buffer, data["buffer"])  # type: ignore[attr-defined]
        except KeyError as e:
            raise CorruptCheckpointError(f"{str(path / _RB)!r} lacks the array {e}") from e
    venv = model.get_vec_normalize_env()
    if venv is not None and "vecnormalize" in data:
        _restore_vecnormalize(venv, data["vecnormalize"])
    if "rng" in data:
        rng = data["rng"]
        random.setstate(_tuple_state(json.loads(rng["python"])))
        kind, keys, pos, has_gauss, cached = json.loads(rng["numpy"])
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        th.set_rng_state(rng["torch"])
    meta = data["meta"]
    model.num_timesteps = int(meta["num_timesteps"])
    set_counters(model, n_updates=int(meta.get("n_updates", 0)), episode_num=int(meta.get("episode_num", 0)))
    return meta


def load_latest_checkpoint(
    model: BaseAlgorithm, root: str | Path, log: Callable[[str], None] = print
) -> tuple[Path, dict[str, Any]]:
    """Restore the newest good checkpoint under ``root``: a truncated or corrupted one is renamed
    ``corrupt-<name>`` (kept for inspection, out of the way of later saves) and the previous one is tried, and
    ``log`` says so.

    :raises CheckpointError: when there is no checkpoint, or none can be read (each failure listed).
    :return: the checkpoint folder and its metadata.
    """
    root = Path(root)
    newest = latest_checkpoint(root)
    candidates = sorted((p for p in root.glob("step_*") if p.is_dir()), reverse=True)
    if newest is not None and newest in candidates:
        candidates.remove(newest)
        candidates.insert(0, newest)
    if not candidates:
        raise CheckpointError(f"no checkpoint under {str(root)!r}")
    failures: list[str] = []
    for path in candidates:
        try:
            meta = load_checkpoint(model, path)
        except CorruptCheckpointError as e:
            failures.append(str(e))
            moved = path.with_name(f"corrupt-{path.name}")
            with contextlib.suppress(OSError):
                shutil.rmtree(moved, ignore_errors=True)
                path.rename(moved)
            log(f"warning: {e}; kept as {moved.name}, falling back to the previous checkpoint")
            continue
        if failures:
            _atomic_write_text(root / "latest", path.name + "\n")
            log(f"Using the older checkpoint {path} (step {meta['num_timesteps']})")
        return path, meta
    raise CheckpointError(f"no readable checkpoint under {str(root)!r}: " + "; ".join(failures))


def _tuple_state(state: Any) -> Any:
    return tuple(_tuple_state(s) for s in state) if isinstance(state, list) else state


class ResumableCheckpointCallback(BaseCallback):
    """Save a checkpoint every ``save_freq`` env steps, and when asked to stop (SIGINT/SIGTERM): the whole
    training state (:func:`save_checkpoint`), which ``--resume`` continues from; SB3's own
    :class:`~stable_baselines3.common.callbacks.CheckpointCallback` saves model zips only.

    :param root: the run's ``checkpoints/`` folder.
    :param save_freq: env steps between checkpoints (counted over all envs); <= 0 disables periodic saves.
    :param config: the resolved config saved with each checkpoint.
    :param keep: checkpoints to keep.
    """

    def __init__(
        self, root: str | Path, save_freq: int, config: dict[str, Any] | None = None, keep: int = 2, verbose: int = 0
    ) -> None:
        super().__init__(verbose)
        self.root = Path(root)
        self.save_freq = int(save_freq)
        self.config = config
        self.keep = keep
        self.stop_requested: int | None = None  # signal number
        self._last_save = 0

    def _init_callback(self) -> None:
        self._last_save = self.model.num_timesteps

    def save(self) -> Path:
        path = save_checkpoint(self.model, self.root, self.config, keep=self.keep)
        self._last_save = self.model.num_timesteps
        if self.verbose:
            print(f"Checkpoint saved: {path}")
        return path

    def _on_step(self) -> bool:
        if self.stop_requested is not None:
            self.save()
            return False
        if self.save_freq > 0 and self.model.num_timesteps - self._last_save >= self.save_freq:
            self.save()
        return True


def __getattr__(name: str) -> Any:
    if name == "CheckpointCallback":  # renamed: it shadowed SB3's CheckpointCallback
        warn_moved("sb3_vla.checkpoint.CheckpointCallback", "sb3_vla.checkpoint.ResumableCheckpointCallback")
        return ResumableCheckpointCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
