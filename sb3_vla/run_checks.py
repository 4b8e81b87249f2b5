"""Checks a training request must pass before any env is built or any step runs, each failing with a message that
names the problem and the fix: the device, the env's constructor kwargs, the budget against ``learning_starts``,
the algorithm against the action space.

Example:

>>> check_device("cpu")
>>> check_env_kwargs("Pendulum-v1", {"g": 9.81})
>>> check_env_kwargs("Pendulum-v1", {"gravity": 9.81})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: Pendulum-v1: unknown env kwarg(s) 'gravity'; PendulumEnv takes ['g', 'render_mode'] (and ...)
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from typing import Any

import gymnasium as gym
import torch as th
from gymnasium import spaces

from sb3_vla.core.algos import ALGOS

_MAKE_KWARGS = ("max_episode_steps", "autoreset", "apply_api_compatibility", "disable_env_checker", "render_mode")


def check_device(device: str) -> None:
    """Refuse a device that is not there (``cuda`` without CUDA, ``cuda:3`` on a 1-GPU machine, a typo)."""
    if device == "auto":
        return
    try:
        dev = th.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a torch device ({e}); use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not th.cuda.is_available():
            raise ValueError(
                f"--device {device}: CUDA is not available on this machine (torch {th.__version__}, "
                f"built with CUDA {th.version.cuda}); use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= th.cuda.device_count():
            raise ValueError(
                f"--device {device}: this machine has {th.cuda.device_count()} CUDA device(s) (0 .. "
                f"{th.cuda.device_count() - 1})"
            )
    elif dev.type == "mps" and not th.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu or auto")


def _entry_point(env_id: str) -> Any | None:
    try:
        entry = gym.spec(env_id).entry_point
        return gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    except Exception:  # unregistered ids are reported by check_env_id; odd entry points are not checked
        return None


def check_env_kwargs(env_id: str, env_kwargs: dict[str, Any]) -> None:
    """Refuse env kwargs the env's constructor does not take (with close matches), and non-positive sizes."""
    for key, value in env_kwargs.items():
        if (key.endswith("_size") or key in ("width", "height")) and isinstance(value, int | float) and value <= 0:
            raise ValueError(f"{env_id}: env kwarg {key!r} must be > 0, got {value!r}")
    creator = _entry_point(env_id)
    if creator is None:
        return
    try:
        params = inspect.signature(creator).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL and n != "self")
    unknown = [k for k in env_kwargs if k not in params and k not in _MAKE_KWARGS]
    if unknown:
        hints = {k: difflib.get_close_matches(k, valid, n=1) for k in unknown}
        hint = ", ".join(f"{k!r}" + (f" (did you mean {v[0]!r}?)" if v else "") for k, v in hints.items())
        name = getattr(creator, "__name__", str(creator))
        raise ValueError(
            f"{env_id}: unknown env kwarg(s) {hint}; {name} takes {valid} (and gymnasium.make's {sorted(_MAKE_KWARGS)})"
        )


def check_action_space(algo: str, action_space: spaces.Space, env_id: str) -> None:
    """SAC, TD3, DDPG, TQC and CrossQ need a continuous (Box) action space."""
    if algo in ALGOS and ALGOS[algo].continuous and not isinstance(action_space, spaces.Box):
        raise ValueError(
            f"{algo.upper()} needs a continuous (Box) action space but {env_id} has {action_space}; use --algo ppo "
            "or a2c for discrete actions (a residual on a frozen base needs a Box action space)"
        )


def warn_no_updates(algo_cls: type, model_kwargs: dict[str, Any], n_timesteps: int) -> str | None:
    """Warn when an off-policy run ends before ``learning_starts``: no gradient update would run."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    if not issubclass(algo_cls, OffPolicyAlgorithm):
        return None
    default = inspect.signature(algo_cls).parameters["learning_starts"].default
    starts = int(model_kwargs.get("learning_starts", default))
    if n_timesteps > starts:
        return None
    msg = (
        f"n_timesteps {n_timesteps} <= learning_starts {starts}: no gradient update will run, and the saved "
        f"model is the untrained policy; raise -n above {starts} or pass -params learning_starts:<fewer steps>"
    )
    warnings.warn(msg, UserWarning, stacklevel=2)
    return msg
