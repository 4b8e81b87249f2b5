"""A replay buffer for residual RL: it stores the residual the env executed, with optional n-step returns.

Stock off-policy algorithms take it through ``replay_buffer_class`` (SB3 >= 2.7 computes n-step returns only for
Box observations, and our residual envs have Dict observations).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from sb3_vla.core.keys import RESIDUAL_INFO_KEY


class ResidualReplayBuffer(DictReplayBuffer):
    """SB3's ``DictReplayBuffer`` that stores ``info["residual"]`` (the residual actually executed) as the action,
    and optionally samples n-step returns.

    Under progressive exploration a masked decision executes the pure base; the policy's sampled residual never
    reached the env, so the critic must learn from a zero residual there. The residual wrappers put the executed
    residual in ``info["residual"]``; this buffer stores it in place of the sampled action (transitions without it
    keep the action SB3 passes).

    :param n_steps: number of transitions summed into one return (1: plain one-step TD). The sum stops at an
        episode end, a time-limit truncation, or the newest transition; ``discounts`` carries ``gamma ** m`` for the
        ``m`` steps summed, which SAC, TD3 and TQC use for bootstrapping.
    :param gamma: discount factor of the n-step sum: give the algorithm's ``gamma``.
        The other parameters are ``DictReplayBuffer``'s.

    Example::

        >>> from stable_baselines3 import SAC
        >>> from sb3_vla import make_residual_env
        >>> from sb3_vla.policies import ResidualSACPolicy
        >>> env = make_residual_env("Pendulum-v1", base="zero")
        >>> model = SAC(ResidualSACPolicy, env, gamma=0.98, buffer_size=1000, replay_buffer_class=ResidualReplayBuffer,
        ...             replay_buffer_kwargs=dict(n_steps=3, gamma=0.98))
        >>> _ = model.learn(16)  # before learning_starts: transitions are stored, no gradient step
        >>> batch = model.replay_buffer.sample(8)
        >>> {round(float(d), 4) for d in batch.discounts} <= {0.98, 0.9604, 0.9412}  # gamma ** m, m <= 3 steps
        True

    In zoo YAML::

        replay_buffer_class: sb3_vla.buffers.ResidualReplayBuffer
        replay_buffer_kwargs: "dict(n_steps=3, gamma=0.98)"
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_steps: int = 1,
        gamma: float = 0.99,
    ) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise TypeError(
                f"ResidualReplayBuffer needs a Dict observation space (a residual env's), got {observation_space}"
            )
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.n_steps = int(n_steps)
        self.gamma = float(gamma)

    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        action = np.array(action, dtype=np.float32).reshape((self.n_envs, self.action_dim))
        for i, info in enumerate(infos):
            executed = info.get(RESIDUAL_INFO_KEY)
            if executed is not None:
                action[i] = np.asarray(executed, dtype=np.float32).reshape(self.action_dim)
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> DictReplayBufferSamples:
        if self.n_steps == 1:
            return super()._get_samples(batch_inds, env)
        env_inds = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        # transition t + k (k < n_steps) continues t's return while no episode end or truncation came before it;
        # the newest transition counts as a truncation, since its successor is not stored yet
        steps = (batch_inds[:, None] + np.arange(self.n_steps)[None, :]) % self.buffer_size
        stop = np.logical_or(self.dones[steps, env_inds[:, None]], self.timeouts[steps, env_inds[:, None]])
        stop |= steps == (self.pos - 1) % self.buffer_size
        stop[:, -1] = True
        last = stop.argmax(axis=1)  # offset of the transition that ends the sum
        within = np.arange(self.n_steps)[None, :] <= last[:, None]
        rewards = self._normalize_reward(self.rewards[steps, env_inds[:, None]], env)
        returns = (rewards * within * self.gamma ** np.arange(self.n_steps)[None, :]).sum(axis=1, keepdims=True)
        end = steps[np.arange(len(batch_inds)), last]
        dones = self.dones[end, env_inds] * (1 - self.timeouts[end, env_inds])
        obs = self._normalize_obs({k: o[batch_inds, env_inds, :] for k, o in self.observations.items()}, env)
        next_obs = self._normalize_obs({k: o[end, env_inds, :] for k, o in self.next_observations.items()}, env)
        assert isinstance(obs, dict) and isinstance(next_obs, dict)
        return DictReplayBufferSamples(
            observations={k: self.to_torch(v) for k, v in obs.items()},
            actions=self.to_torch(self.actions[batch_inds, env_inds]),
            next_observations={k: self.to_torch(v) for k, v in next_obs.items()},
            dones=self.to_torch(dones).reshape(-1, 1),
            rewards=self.to_torch(returns.astype(np.float32)),
            discounts=self.to_torch((self.gamma ** (last + 1)).astype(np.float32).reshape(-1, 1)),
        )


def as_residual_replay_buffer(buffer: DictReplayBuffer, n_steps: int = 1, gamma: float = 0.99) -> ResidualReplayBuffer:
    """A :class:`ResidualReplayBuffer` holding ``buffer``'s transitions (its arrays are moved, not copied).

    :param buffer: an SB3 ``DictReplayBuffer`` (what off-policy algorithms build for Dict observations).
    :param n_steps: see :class:`ResidualReplayBuffer`.
    :param gamma: see :class:`ResidualReplayBuffer`.
    """
    if isinstance(buffer, ResidualReplayBuffer):
        buffer.n_steps, buffer.gamma = int(n_steps), float(gamma)
        return buffer
    if not isinstance(buffer, DictReplayBuffer):
        raise TypeError(
            f"the model's replay buffer is a {type(buffer).__name__}; the residual buffer replaces SB3's "
            "DictReplayBuffer (a residual env has Dict observations)"
        )
    assert isinstance(buffer.observation_space, spaces.Dict)
    new = ResidualReplayBuffer(
        buffer.buffer_size * buffer.n_envs,
        buffer.observation_space,
        buffer.action_space,
        device=buffer.device,
        n_envs=buffer.n_envs,
        handle_timeout_termination=buffer.handle_timeout_termination,
        n_steps=n_steps,
        gamma=gamma,
    )
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        setattr(new, name, getattr(buffer, name))
    new.pos, new.full = buffer.pos, buffer.full
    return new
