"""Training callbacks: residual/base statistics for TensorBoard, progressive exploration, and the critic burn-in
of residual RL."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_wrapper

from sb3_vla.buffers import ResidualReplayBuffer, as_residual_replay_buffer
from sb3_vla.core.keys import APPLIED_INFO_KEY, RESIDUAL_INFO_KEY
from sb3_vla.wrappers.residual import VecResidualActionWrapper


def decision_interval(env: VecEnv) -> int:
    """Env steps per agent decision of a training env's residual wrapper (1 without one): SB3's
    ``num_timesteps`` counts decisions, the callbacks' schedules count env steps."""
    vec = unwrap_vec_wrapper(env, VecResidualActionWrapper)
    if vec is not None:
        return vec.decision_interval
    try:
        return int(env.get_attr("decision_interval")[0])
    except AttributeError:
        return 1


class VLAStatsCallback(BaseCallback):
    """Log residual and base-model statistics from the wrappers' ``info`` entries.

    Logged every rollout end: ``vla/residual_applied_frac`` (share of agent decisions that carried their residual:
    below 1 under progressive exploration), ``vla/residual_abs_mean`` (mean |executed residual| in [-1, 1] units),
    ``vla/correction_abs_mean`` (mean |executed - base| in env units), ``vla/base_share`` (the base's share of the
    executed action, ``sum |base| / (sum |base| + sum |executed - base|)``: 1 means the pure base) and
    ``vla/nonfinite_events`` (env steps whose base output was non-finite and zeroed, cumulative).

    Example::

        >>> from stable_baselines3 import SAC
        >>> from sb3_vla import make_residual_env
        >>> from sb3_vla.policies import ResidualSACPolicy
        >>> model = SAC(ResidualSACPolicy, make_residual_env("Pendulum-v1", base="zero"), buffer_size=1000)
        >>> _ = model.learn(32, callback=VLAStatsCallback())
        >>> stats = model.logger.name_to_value
        >>> stats["vla/residual_applied_frac"], stats["vla/base_share"]  # the zero base: all residual
        (1.0, 0.0)
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self._res: list[float] = []
        self._corr: list[float] = []
        self._applied: list[bool] = []
        self._base_abs = 0.0
        self._corr_abs = 0.0
        self.nonfinite_events = 0

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if RESIDUAL_INFO_KEY in info:
                corr = np.abs(info["executed_action"] - info["base_action"])
                self._res.append(float(np.abs(info[RESIDUAL_INFO_KEY]).mean()))
                self._corr.append(float(corr.mean()))
                self._applied.append(bool(info.get(APPLIED_INFO_KEY, True)))
                self._base_abs += float(np.abs(info["base_action"]).sum())
                self._corr_abs += float(corr.sum())
            if info.get("vla_nonfinite"):
                self.nonfinite_events += 1
        return True

    def _on_rollout_end(self) -> None:
        if self._res:
            self.logger.record("vla/residual_abs_mean", float(np.mean(self._res)))
            self.logger.record("vla/correction_abs_mean", float(np.mean(self._corr)))
            self.logger.record("vla/residual_applied_frac", float(np.mean(self._applied)))
            total = self._base_abs + self._corr_abs
            self.logger.record("vla/base_share", self._base_abs / total if total > 0 else 1.0)
            self._res.clear()
            self._corr.clear()
            self._applied.clear()
            self._base_abs = self._corr_abs = 0.0
        self.logger.record("vla/nonfinite_events", self.nonfinite_events)


class ProgressiveExplorationCallback(BaseCallback):
    """Progressive exploration for residual RL (Policy Decorator): while training, each agent decision carries its
    residual with probability ``p(t) = start_prob + (end_prob - start_prob) * min(t / ramp_steps, 1)``; the others
    execute the pure base. Before ``learning_starts``, SB3 acts uniformly at random: ``warmup_gain`` scales those
    residuals down, so the replay buffer is not filled with a broken base.

    Only the training env is changed; evaluation envs, saved models and deployment always apply the full residual.
    Pair it with :class:`~sb3_vla.buffers.ResidualReplayBuffer`, which stores the residual actually executed (zero
    where masked), so the critic learns what happened. ``t`` counts env steps (``model.num_timesteps`` times the
    wrapper's ``decision_interval``), so a resumed run continues the ramp where it stopped.

    :param ramp_steps: env steps over which the probability rises to ``end_prob`` (0: ``end_prob`` from the start).
    :param start_prob: probability at step 0.
    :param end_prob: probability after the ramp (1: every decision). Below 1, a share of the training decisions keeps
        executing the pure base, so the replay buffer goes on holding zero residuals from the states the policy
        visits now (the critic's ``Q(s, 0)`` stays anchored in data as the policy moves away from it).
    :param warmup_gain: factor on the residual before the algorithm's ``learning_starts`` (1: SB3's behaviour).

    Example::

        >>> from stable_baselines3 import SAC
        >>> from sb3_vla import make_residual_env
        >>> from sb3_vla.policies import ResidualSACPolicy
        >>> env = make_residual_env("Pendulum-v1", base="zero")
        >>> model = SAC(ResidualSACPolicy, env, buffer_size=1000, replay_buffer_class=ResidualReplayBuffer)
        >>> callback = ProgressiveExplorationCallback(ramp_steps=20_000)
        >>> _ = model.learn(32, callback=callback)
        >>> callback.schedule(50), callback.schedule(10_000)  # (probability, gain): warm-up, then half the ramp
        ((0.0025, 0.1), (0.5, 1.0))

    In YAML (rl-zoo or ``sb3_vla.train``)::

        callback:
          - sb3_vla.callbacks.ProgressiveExplorationCallback: {ramp_steps: 20000, warmup_gain: 0.1}
    """

    def __init__(
        self,
        ramp_steps: int,
        start_prob: float = 0.0,
        warmup_gain: float = 0.1,
        end_prob: float = 1.0,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if ramp_steps < 0:
            raise ValueError(f"ramp_steps must be >= 0 env steps, got {ramp_steps}")
        if not 0.0 < end_prob <= 1.0:
            raise ValueError(f"end_prob must be in (0, 1], got {end_prob}")
        if not 0.0 <= start_prob <= end_prob:
            raise ValueError(f"start_prob must be in [0, end_prob={end_prob}], got {start_prob}")
        if not 0.0 < warmup_gain <= 1.0:
            raise ValueError(f"warmup_gain must be in (0, 1], got {warmup_gain}")
        self.ramp_steps = int(ramp_steps)
        self.start_prob = float(start_prob)
        self.end_prob = float(end_prob)
        self.warmup_gain = float(warmup_gain)
        self._set: Callable[[float, float], None] | None = None
        self._interval = 1
        self._current: tuple[float, float] | None = None

    def _bind(self) -> None:
        env = self.training_env
        vec = unwrap_vec_wrapper(env, VecResidualActionWrapper)
        if vec is not None:
            self._set, self._interval = vec.set_exploration, vec.decision_interval
            return
        try:  # per-env residual wrappers (rl-zoo's env_wrapper path)
            env.get_attr("set_exploration")
        except AttributeError as e:
            raise ValueError(
                "ProgressiveExplorationCallback needs a residual wrapper (ResidualActionWrapper or "
                "VecResidualActionWrapper) in the training env; none was found"
            ) from e
        self._interval = decision_interval(env)

        def set_all(prob: float, gain: float) -> None:
            env.env_method("set_exploration", prob, gain)

        self._set = set_all

    def schedule(self, num_timesteps: int) -> tuple[float, float]:
        """``(probability, gain)`` after ``num_timesteps`` agent steps."""
        steps = num_timesteps * self._interval
        frac = 1.0 if self.ramp_steps == 0 else min(1.0, steps / self.ramp_steps)
        prob = self.start_prob + (self.end_prob - self.start_prob) * frac
        learning_starts = int(getattr(self.model, "learning_starts", 0))
        gain = self.warmup_gain if num_timesteps < learning_starts else 1.0
        return prob, gain

    def _update(self) -> None:
        prob, gain = self.schedule(self.model.num_timesteps)
        # send changes of a percent or more: with SubprocVecEnv each update is a message to every worker
        cur = self._current
        end = self.end_prob
        if cur is None or gain != cur[1] or abs(prob - cur[0]) >= 0.01 or (prob == end and cur[0] != end):
            assert self._set is not None
            self._set(prob, gain)
            self._current = (prob, gain)

    def _on_training_start(self) -> None:
        self._bind()
        self._update()

    def _on_step(self) -> bool:
        self._update()
        return True

    def _on_training_end(self) -> None:
        # the env may be used for evaluation or deployment after learn(): leave it applying the full residual
        if self._set is not None:
            self._set(1.0, 1.0)
            self._current = None


class ResidualReplayBufferCallback(BaseCallback):
    """Make an off-policy model's replay buffer a :class:`~sb3_vla.buffers.ResidualReplayBuffer` at training start:
    it stores the residual the env executed (what progressive exploration needs) and sums ``n_steps`` returns with
    the model's own ``gamma``.

    The same as ``replay_buffer_class=ResidualReplayBuffer``, for configs that both CLIs read: rl-zoo evaluates a
    ``replay_buffer_class`` string in its own module, where our class has no name. Transitions already stored (a
    resumed run) are kept.

    :param n_steps: n-step returns (1: one-step TD).

    Example::

        >>> from stable_baselines3 import SAC
        >>> from sb3_vla import make_residual_env
        >>> from sb3_vla.policies import ResidualSACPolicy
        >>> model = SAC(ResidualSACPolicy, make_residual_env("Pendulum-v1", base="zero"), buffer_size=1000)
        >>> callbacks = [ResidualReplayBufferCallback(n_steps=3), ProgressiveExplorationCallback(4_000)]
        >>> _ = model.learn(8, callback=callbacks)
        >>> type(model.replay_buffer).__name__, model.replay_buffer.n_steps, model.replay_buffer.pos
        ('ResidualReplayBuffer', 3, 8)

    In YAML (rl-zoo or ``sb3_vla.train``)::

        callback:
          - sb3_vla.callbacks.ResidualReplayBufferCallback: {n_steps: 3}
    """

    def __init__(self, n_steps: int = 1, verbose: int = 0) -> None:
        super().__init__(verbose)
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps = int(n_steps)

    def _on_training_start(self) -> None:
        buffer = getattr(self.model, "replay_buffer", None)
        if buffer is None:
            raise ValueError(
                f"ResidualReplayBufferCallback needs an off-policy algorithm (SAC, TD3, TQC); "
                f"{type(self.model).__name__} has no replay buffer"
            )
        gamma = float(getattr(self.model, "gamma", 0.99))
        if not isinstance(buffer, ResidualReplayBuffer) or (buffer.n_steps, buffer.gamma) != (self.n_steps, gamma):
            self.model.replay_buffer = as_residual_replay_buffer(buffer, self.n_steps, gamma)  # type: ignore[attr-defined]

    def _on_step(self) -> bool:
        return True


class ActorWarmupCallback(BaseCallback):
    """Critic burn-in for residual RL: keep the residual policy frozen for the first ``warmup_steps`` env steps.

    A zero-initialised residual executes the base, but SAC moves its actor from the first gradient step, against a
    critic that has seen a few hundred transitions; on a fragile base the arbitrary first corrections can wreck the
    base's success before the critic knows better. With this callback the actor's parameters (SAC/TQC/TD3
    ``model.actor``; PPO/A2C ``action_net`` and ``log_std``) get no gradient until ``warmup_steps``: the agent keeps
    executing the base plus its initial exploration noise while the critic learns the base's values, then both train
    as usual (the burn-in of Silver et al., "Residual Policy Learning", 2018). The algorithm class stays stock.

    :param warmup_steps: env steps before the actor trains (``model.num_timesteps`` times the residual wrapper's
        ``decision_interval``).

    Example::

        >>> import torch as th
        >>> from stable_baselines3 import SAC
        >>> from sb3_vla import make_residual_env
        >>> from sb3_vla.policies import ResidualSACPolicy
        >>> env = make_residual_env("Pendulum-v1", base="zero")
        >>> model = SAC(ResidualSACPolicy, env, buffer_size=1000, learning_starts=16, batch_size=16)
        >>> actor = [p.clone() for p in model.actor.parameters()]
        >>> critic = [p.clone() for p in model.critic.parameters()]
        >>> _ = model.learn(32, callback=ActorWarmupCallback(warmup_steps=5_000))  # 16 gradient steps
        >>> all(th.equal(a, b) for a, b in zip(actor, model.actor.parameters()))  # the actor did not move ...
        True
        >>> any(not th.equal(c, d) for c, d in zip(critic, model.critic.parameters()))  # ... the critic trained
        True

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
        self._interval = 1

    def _actor_parameters(self) -> list:
        policy = self.model.policy
        actor = getattr(policy, "actor", None)
        if actor is not None:
            # with share_features_extractor=True SB3 trains the shared extractor through the actor's loss only, so
            # it is frozen with the actor; the critic's Q-networks train on its (fixed) features
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

    def _env_steps(self) -> int:
        return self.model.num_timesteps * self._interval

    def _on_training_start(self) -> None:
        self._interval = decision_interval(self.training_env)
        if self._env_steps() < self.warmup_steps:
            self._set_trainable(False)

    def _on_step(self) -> bool:
        if self.frozen and self._env_steps() >= self.warmup_steps:
            self._set_trainable(True)
        return True

    def _on_training_end(self) -> None:
        # a later learn() without this callback must not inherit frozen parameters; learn() in chunks with the same
        # callback freezes them again at the next start while still inside the warm-up
        if self.frozen:
            self._set_trainable(True)
