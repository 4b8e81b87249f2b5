"""Training callbacks: residual/base statistics for TensorBoard, and the critic burn-in of residual RL."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


class VLAStatsCallback(BaseCallback):
    """Log residual and base-model statistics from the wrappers' ``info`` entries.

    Logged every rollout end: ``vla/residual_abs_mean`` (mean |residual| in [-1, 1] units),
    ``vla/correction_abs_mean`` (mean |executed - base| in env units) and ``vla/nonfinite_events`` (env steps whose
    base output was non-finite and zeroed, cumulative).

    Example::

        model.learn(10_000, callback=VLAStatsCallback())
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self._res: list[float] = []
        self._corr: list[float] = []
        self.nonfinite_events = 0

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "residual" in info:
                self._res.append(float(np.abs(info["residual"]).mean()))
                self._corr.append(float(np.abs(info["executed_action"] - info["base_action"]).mean()))
            if info.get("vla_nonfinite"):
                self.nonfinite_events += 1
        return True

    def _on_rollout_end(self) -> None:
        if self._res:
            self.logger.record("vla/residual_abs_mean", float(np.mean(self._res)))
            self.logger.record("vla/correction_abs_mean", float(np.mean(self._corr)))
            self._res.clear()
            self._corr.clear()
        self.logger.record("vla/nonfinite_events", self.nonfinite_events)


class ActorWarmupCallback(BaseCallback):
    """Critic burn-in for residual RL: keep the residual policy frozen for the first ``warmup_steps`` env steps.

    A zero-initialised residual executes the base, but SAC moves its actor from the first gradient step, against a
    critic that has seen a few hundred transitions; on a fragile base the arbitrary first corrections can wreck the
    base's success before the critic knows better. With this callback the actor's parameters (SAC/TQC/TD3
    ``model.actor``; PPO/A2C ``action_net`` and ``log_std``) get no gradient until ``warmup_steps``: the agent keeps
    executing the base plus its initial exploration noise while the critic learns the base's values, then both train
    as usual (the burn-in of Silver et al., "Residual Policy Learning", 2018). The algorithm class stays stock.

    :param warmup_steps: env steps (``model.num_timesteps``) before the actor trains.

    Example::

        model = SAC(ResidualSACPolicy, env, learning_starts=500)
        model.learn(20_000, callback=ActorWarmupCallback(warmup_steps=5_000))

    In YAML (rl-zoo or ``sb3_vla.train``)::

        callback:
          - sb3_vla.callbacks.ActorWarmupCallback: {warmup_steps: 5000}
    """

    def __init__(self, warmup_steps: int, verbose: int = 0) -> None:
        super().__init__(verbose)
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0 env steps, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        self.frozen = False

    def _actor_parameters(self) -> list:
        policy = self.model.policy
        actor = getattr(policy, "actor", None)
        if actor is not None:
            return list(actor.parameters())
        params = list(policy.action_net.parameters())  # type: ignore[union-attr]
        log_std = getattr(policy, "log_std", None)
        if log_std is not None:
            params.append(log_std)
        return params

    def _set_trainable(self, trainable: bool) -> None:
        for p in self._actor_parameters():
            p.requires_grad_(trainable)
        self.frozen = not trainable
        if self.verbose:
            print(f"ActorWarmupCallback: actor {'trains' if trainable else 'frozen'} at step {self.num_timesteps}")

    def _on_training_start(self) -> None:
        if self.model.num_timesteps < self.warmup_steps:
            self._set_trainable(False)

    def _on_step(self) -> bool:
        if self.frozen and self.model.num_timesteps >= self.warmup_steps:
            self._set_trainable(True)
        return True

    def _on_training_end(self) -> None:
        # a later learn() without this callback must not inherit frozen parameters; learn() in chunks with the same
        # callback freezes them again at the next start while still inside the warm-up
        if self.frozen:
            self._set_trainable(True)
