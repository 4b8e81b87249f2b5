"""The one place that touches Stable-Baselines3 internals: protected methods and private counters.

Checkpoints, run folders and pickle-free policy files need a model's save parameters and its update and episode
counters, which SB3 keeps on protected names. Every such use goes through this module, and
``tests/test_sb3_adapter.py`` pins the behaviour to the SB3 version it was written for (:data:`TESTED_SB3`).

>>> from stable_baselines3 import SAC
>>> model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=0)
>>> sorted(save_params(model)[0])
['actor.optimizer', 'critic.optimizer', 'ent_coef_optimizer', 'policy']
>>> set_counters(model, n_updates=7, episode_num=3); counters(model)
{'n_updates': 7, 'episode_num': 3}
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy

__all__ = ["TESTED_SB3", "constructor_parameters", "counters", "save_params", "set_counters"]

#: the SB3 releases whose internals this module was written against (major, minor)
TESTED_SB3 = ((2, 7), (2, 8), (2, 9))


def save_params(model: BaseAlgorithm) -> tuple[list[str], list[str]]:
    """The names of the model's torch state dicts and tensors that SB3's own ``save`` writes."""
    state_dicts, variables = model._get_torch_save_params()
    return list(state_dicts), list(variables or [])


def constructor_parameters(policy: BasePolicy) -> dict[str, Any]:
    """The keyword arguments that rebuild ``policy`` (spaces, ``lr_schedule``, ``net_arch`` ...)."""
    return dict(policy._get_constructor_parameters())


def counters(model: BaseAlgorithm) -> dict[str, int]:
    """The model's gradient-update and episode counters (zero where the algorithm has none)."""
    return {
        "n_updates": int(getattr(model, "_n_updates", 0)),
        "episode_num": int(getattr(model, "_episode_num", 0)),
    }


def set_counters(model: BaseAlgorithm, n_updates: int, episode_num: int) -> None:
    """Restore the counters :func:`counters` read, so a resumed run logs and schedules as if never stopped."""
    if hasattr(model, "_n_updates"):
        model._n_updates = int(n_updates)
    if hasattr(model, "_episode_num"):
        model._episode_num = int(episode_num)
