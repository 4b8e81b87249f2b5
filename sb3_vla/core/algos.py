"""The one algorithm table: name -> stock SB3 / sb3-contrib class, and our residual policy for it.

The classes are imported on first use (:func:`algorithm_class`), so this module stays importable without
sb3-contrib.

>>> ALGOS["sac"].off_policy, ALGOS["sac"].residual_policy
(True, 'sb3_vla.policies:ResidualSACPolicy')
>>> algorithm_class("ppo").__name__
'PPO'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sb3_vla.core.imports import import_object

__all__ = ["ALGOS", "TRAINABLE", "AlgoInfo", "algorithm_class", "algorithms", "residual_policies"]


@dataclass(frozen=True)
class AlgoInfo:
    """One algorithm: where its class lives and what it needs.

    :param entry_point: ``package.module:Class`` of the stock algorithm.
    :param off_policy: it learns from a replay buffer (``replay_buffer_class``, ``learning_starts``).
    :param continuous: it needs a ``Box`` action space.
    :param residual_policy: our zero-initialised residual policy for it (``package.module:Class``), if any.
    """

    entry_point: str
    off_policy: bool
    continuous: bool
    residual_policy: str | None = None


ALGOS: dict[str, AlgoInfo] = {
    "a2c": AlgoInfo("stable_baselines3:A2C", False, False, "sb3_vla.policies:ResidualActorCriticPolicy"),
    "ddpg": AlgoInfo("stable_baselines3:DDPG", True, True, "sb3_vla.policies:ResidualTD3Policy"),
    "dqn": AlgoInfo("stable_baselines3:DQN", True, False),
    "ppo": AlgoInfo("stable_baselines3:PPO", False, False, "sb3_vla.policies:ResidualActorCriticPolicy"),
    "sac": AlgoInfo("stable_baselines3:SAC", True, True, "sb3_vla.policies:ResidualSACPolicy"),
    "td3": AlgoInfo("stable_baselines3:TD3", True, True, "sb3_vla.policies:ResidualTD3Policy"),
    "ars": AlgoInfo("sb3_contrib:ARS", False, False),
    "crossq": AlgoInfo("sb3_contrib:CrossQ", True, True),
    "qrdqn": AlgoInfo("sb3_contrib:QRDQN", True, False),
    "tqc": AlgoInfo("sb3_contrib:TQC", True, True, "sb3_vla.policies:ResidualTQCPolicy"),
    "trpo": AlgoInfo("sb3_contrib:TRPO", False, False),
}

#: the algorithms ``python -m sb3_vla.train`` offers (continuous control with a residual wrapper)
TRAINABLE = ("a2c", "crossq", "ddpg", "ppo", "sac", "td3", "tqc")


def algorithm_class(algo: str | type) -> Any:
    """The class of an algorithm name (``"sac"``), an import path (``"my_pkg.algos:MySAC"``) or a class.

    :raises ValueError: an unknown name, listing the known ones and the import-path form.
    """
    if isinstance(algo, type):
        return algo
    info = ALGOS.get(algo.lower())
    if info is not None:
        return import_object(info.entry_point, "algorithm")
    if ":" not in algo and "." not in algo:
        raise ValueError(f"unknown algo {algo!r}; use one of {sorted(ALGOS)} or 'package.module:Class'")
    return import_object(algo, "algorithm")


def algorithms() -> dict[str, Any]:
    """The trainable algorithms: name -> stock class (SB3 and sb3-contrib)."""
    return {name: algorithm_class(name) for name in TRAINABLE}


def residual_policies() -> dict[str, str]:
    """Algorithm name -> our zero-initialised residual policy (``package.module:Class``)."""
    return {name: info.residual_policy for name, info in ALGOS.items() if info.residual_policy}
