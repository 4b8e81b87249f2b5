"""Small bases, envs and callbacks for the rl-zoo and tuning tests, importable by subprocesses from the repo root
(``base: tests._zoo_helpers:biased_pendulum_base`` in a zoo YAML)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback

from sb3_vla.bases import BaseModel, VLABatch
from tests._helpers import pendulum_controller

BIAS = 1.0


class BiasedPendulumBase(BaseModel):
    """Pendulum-v1 swing-up controller with a constant torque bias; its embedding is the observation itself."""

    def __init__(self, action_space: spaces.Box, bias: float = BIAS) -> None:
        self.action_space = action_space
        self.embedding_dim = 3
        self.bias = bias

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        obs = batch.obs["obs"].reshape(len(batch), 3)
        actions = np.stack([pendulum_controller(o, self.bias) for o in obs]).astype(np.float32)
        return actions, obs.astype(np.float32)


def biased_pendulum_base(arg: str = "", *, observation_space: Any = None, action_space: Any = None, **kwargs: Any):
    """Factory for the spec ``tests._zoo_helpers:biased_pendulum_base``."""
    if action_space is None:
        action_space = gym.make("Pendulum-v1").action_space
    return BiasedPendulumBase(action_space, float(kwargs.get("bias", BIAS)))


class NaNRewardPendulum(gym.Wrapper):
    """Pendulum-v1 whose rewards are NaN (registered as ``NaNPendulum-v0``): a diverging trial's evaluation."""

    def __init__(self) -> None:
        super().__init__(gym.make("Pendulum-v1"))

    def step(self, action: Any):
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, float("nan"), terminated, truncated, info


if "NaNPendulum-v0" not in gym.registry:
    gym.register("NaNPendulum-v0", entry_point="tests._zoo_helpers:NaNRewardPendulum")


class RaiseValueErrorCallback(BaseCallback):
    """Raises ValueError after ``after`` steps, as SB3 does on NaN actions (``Expected parameter loc ...``)."""

    def __init__(self, after: int = 10, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.after = after

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.after:
            raise ValueError(
                "Expected parameter loc (Tensor of shape (1, 1)) to satisfy the constraint Real(), "
                "but found invalid values: nan"
            )
        return True
