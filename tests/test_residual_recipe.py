"""The residual recipe: progressive exploration, warm-up gain, chunk-level residuals, n-step returns and
layer-normed critics, with stock SB3 algorithms."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import TQC
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from torch import nn

from sb3_vla import (
    ResidualActionWrapper,
    ResidualSACPolicy,
    ResidualTD3Policy,
    ResidualTQCPolicy,
    VLAObservationWrapper,
    make_residual_vec_env,
)
from sb3_vla.bases import CallableBase
from sb3_vla.buffers import ResidualReplayBuffer
from sb3_vla.callbacks import ActorWarmupCallback, ProgressiveExplorationCallback, VLAStatsCallback
from sb3_vla.wrappers.exploration import ResidualGate


class CountingEnv(gym.Env):
    """1-D env: reward 1 per step, episodes of ``horizon`` steps; the observation is the step count."""

    def __init__(self, horizon: int = 10) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.horizon = horizon
        self.t = 0
        self.actions: list[float] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        self.actions.append(float(action[0]))
        self.t += 1
        return np.array([self.t], np.float32), 1.0, self.t >= self.horizon, False, {}


def _half_base() -> CallableBase:
    return CallableBase(lambda obs: np.array([0.5], np.float32), action_space=spaces.Box(-1.0, 1.0, (1,), np.float32))


def _pendulum_env(n_envs: int = 2, **kwargs: Any) -> Any:
    return make_residual_vec_env("Pendulum-v1", base="zero", n_envs=n_envs, residual_scale=2.0, seed=0, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------------------------------------------


def test_gate_masks_rows_at_the_requested_rate_and_scales_by_gain() -> None:
    gate = ResidualGate(prob=0.3, gain=0.5, seed=0)
    gated, applied = gate(np.ones((20_000, 2), np.float32))
    assert abs(applied.mean() - 0.3) < 0.02
    np.testing.assert_array_equal(gated[applied], 0.5)
    np.testing.assert_array_equal(gated[~applied], 0.0)
    open_gate = ResidualGate()
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32)
    np.testing.assert_array_equal(open_gate(x)[0], x)
    with pytest.raises(ValueError, match="probability"):
        gate.set(1.5)
    with pytest.raises(ValueError, match="gain"):
        gate.set(0.5, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Chunk-level residuals
# ---------------------------------------------------------------------------------------------------------------


def test_vec_chunk_holds_the_residual_sums_rewards_and_ends_episodes_inside_a_chunk() -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_vla import VecResidualActionWrapper, VecVLAObservationWrapper

    raw = DummyVecEnv([lambda: CountingEnv(horizon=10), lambda: CountingEnv(horizon=100)])
    env = VecResidualActionWrapper(VecVLAObservationWrapper(raw, _half_base()), 0.25, decision_interval=4)
    obs = env.reset()
    assert env.decision_interval == 4
    short = raw.envs[0]
    both = np.array([[1.0], [1.0]], np.float32)
    obs, rewards, dones, infos = env.step(both)
    np.testing.assert_allclose(rewards, [4.0, 4.0])
    assert not dones.any()
    assert short.actions == [0.75] * 4  # base 0.5 + 0.25 * residual 1, held for 4 env steps
    assert obs["obs"][:, 0].tolist() == [4.0, 4.0]
    env.step(-both)
    assert short.actions[4:] == [0.25] * 4
    obs, rewards, dones, infos = env.step(both)  # env 0: steps 9, 10 end its episode
    assert dones.tolist() == [True, False]
    np.testing.assert_allclose(rewards, [2.0, 4.0])
    assert infos[0]["terminal_observation"]["obs"][0] == 10.0
    # the rest of env 0's chunk ran on the pure base in its new episode
    assert short.actions[8:] == [0.75, 0.75, 0.5, 0.5]
    assert obs["obs"][:, 0].tolist() == [2.0, 12.0]
    assert env.core.num_steps == 24
    # one env alone: the chunk stops at the episode end
    one = make_residual_vec_env(
        lambda: CountingEnv(horizon=3), base=_half_base(), n_envs=1, residual_scale=0.25, decision_interval=4
    )
    one.reset()
    _, rewards, dones, _ = one.step(np.array([[0.0]], np.float32))
    assert dones[0] and rewards[0] == pytest.approx(3.0)


def test_single_env_chunk_matches_the_vectorised_wrapper() -> None:
    single = ResidualActionWrapper(
        VLAObservationWrapper(CountingEnv(horizon=7), base=_half_base()), residual_scale=0.25, decision_interval=3
    )
    single.reset(seed=0)
    rewards, dones = [], []
    for a in (1.0, -1.0, 0.5):
        _, r, term, trunc, info = single.step(np.array([a], np.float32))
        rewards.append(r)
        dones.append(term or trunc)
    assert rewards == [3.0, 3.0, 1.0] and dones == [False, False, True]  # the episode end stops the last chunk
    assert single.unwrapped.actions == [0.75] * 3 + [0.25] * 3 + [0.625]
    assert info["residual"].tolist() == [0.5] and info["residual_applied"] is True
    with pytest.raises(ValueError, match="decision_interval"):
        ResidualActionWrapper(VLAObservationWrapper(CountingEnv(), base=_half_base()), decision_interval=0)


# ---------------------------------------------------------------------------------------------------------------
# Progressive exploration with the replay buffer that stores what ran
# ---------------------------------------------------------------------------------------------------------------


def test_progressive_exploration_masks_training_steps_and_the_buffer_stores_the_executed_residual() -> None:
    env = _pendulum_env()
    model = SAC(
        ResidualSACPolicy,
        env,
        learning_starts=100,
        buffer_size=1000,
        batch_size=32,
        seed=0,
        replay_buffer_class=ResidualReplayBuffer,
        policy_kwargs=dict(net_arch=[16]),
    )
    cb = ProgressiveExplorationCallback(ramp_steps=400, start_prob=0.0, warmup_gain=0.1)
    seen: list[dict[str, Any]] = []

    class Record(VLAStatsCallback):
        def _on_step(self) -> bool:
            seen.extend(dict(info) for info in self.locals["infos"])
            return super()._on_step()

    model.learn(400, callback=[cb, Record()])
    stored = model.replay_buffer.actions[: model.replay_buffer.pos].reshape(-1)
    executed = np.array([i["residual"][0] for i in seen])
    np.testing.assert_allclose(np.sort(stored), np.sort(executed), atol=1e-6)
    applied = np.array([i["residual_applied"] for i in seen])
    # masked decisions executed the pure base, with a zero residual in the buffer
    for info in seen:
        if not info["residual_applied"]:
            assert info["residual"][0] == 0.0
            np.testing.assert_allclose(info["executed_action"], info["base_action"])
    # the probability ramps up: fewer applied steps early than late
    assert applied[:100].mean() < applied[-100:].mean()
    # warm-up (before learning_starts = 100 env steps): uniform residuals scaled by 0.1
    warm = np.abs(executed[:100])
    assert warm.max() <= 0.1 + 1e-6
    assert cb.schedule(0) == (0.0, 0.1)
    assert cb.schedule(200) == (0.5, 1.0)
    # after learn() the env applies the full residual again (evaluation, deployment)
    assert env.residual_prob == 1.0


def test_progressive_exploration_can_keep_a_share_of_base_decisions() -> None:
    """end_prob < 1: after the ramp a share of the training decisions still executes the base (zero residuals stay
    in the replay buffer); the env applies the full residual once learn() returns."""
    env = _pendulum_env()
    model = SAC(ResidualSACPolicy, env, learning_starts=50, buffer_size=1000, batch_size=32, seed=0)
    cb = ProgressiveExplorationCallback(ramp_steps=100, end_prob=0.6, warmup_gain=1.0)
    seen: list[bool] = []

    class Record(VLAStatsCallback):
        def _on_step(self) -> bool:
            seen.extend(bool(info["residual_applied"]) for info in self.locals["infos"])
            return super()._on_step()

    model.learn(1100, callback=[cb, Record()])
    assert cb.schedule(50) == (0.3, 1.0) and cb.schedule(5000) == (0.6, 1.0)
    late = np.array(seen[100:])
    assert abs(late.mean() - 0.6) < 0.06  # 1000 decisions at p = 0.6
    assert env.residual_prob == 1.0
    with pytest.raises(ValueError, match="end_prob"):
        ProgressiveExplorationCallback(ramp_steps=10, end_prob=0.0)
    with pytest.raises(ValueError, match="start_prob"):
        ProgressiveExplorationCallback(ramp_steps=10, start_prob=0.8, end_prob=0.5)


def test_progressive_exploration_reaches_per_env_wrappers_through_env_method() -> None:
    def make() -> gym.Env:
        return ResidualActionWrapper(VLAObservationWrapper(gym.make("Pendulum-v1"), base="zero"), residual_scale=2.0)

    env = make_vec_env(make, n_envs=2)
    model = SAC("MultiInputPolicy", env, learning_starts=50, buffer_size=200, policy_kwargs=dict(net_arch=[8]))
    cb = ProgressiveExplorationCallback(ramp_steps=10_000)
    cb.init_callback(model)
    cb.on_training_start({}, {})
    assert env.get_attr("residual_prob") == [0.0, 0.0]
    env_without = make_vec_env("Pendulum-v1", n_envs=1)
    bad = ProgressiveExplorationCallback(ramp_steps=10)
    bad.init_callback(SAC("MlpPolicy", env_without, buffer_size=10))
    with pytest.raises(ValueError, match="residual wrapper"):
        bad.on_training_start({}, {})


# ---------------------------------------------------------------------------------------------------------------
# n-step returns
# ---------------------------------------------------------------------------------------------------------------


def _filled_buffer(n_steps: int, gamma: float) -> ResidualReplayBuffer:
    obs_space = spaces.Dict({"x": spaces.Box(-np.inf, np.inf, (1,), np.float32)})
    buf = ResidualReplayBuffer(
        50, obs_space, spaces.Box(-1, 1, (1,), np.float32), device="cpu", n_envs=1, n_steps=n_steps, gamma=gamma
    )
    # episode A: rewards 1..5, terminal at t=4; episode B: rewards 10, 20, truncated at t=6; then 100, 200 running
    rewards = [1, 2, 3, 4, 5, 10, 20, 100, 200]
    dones = [0, 0, 0, 0, 1, 0, 1, 0, 0]
    truncs = [False] * 6 + [True, False, False]
    for t, (r, d, tr) in enumerate(zip(rewards, dones, truncs)):
        info = {"residual": np.array([0.1 * t], np.float32), "TimeLimit.truncated": tr}
        buf.add(
            {"x": np.array([[t]], np.float32)},
            {"x": np.array([[t + 1]], np.float32)},
            np.array([[0.9]], np.float32),
            np.array([r], np.float32),
            np.array([d], np.float32),
            [info],
        )
    return buf


def test_n_step_returns_stop_at_episode_ends_truncations_and_the_newest_transition() -> None:
    gamma = 0.5
    buf = _filled_buffer(3, gamma)
    s = buf._get_samples(np.arange(9))
    returns = s.rewards.numpy().ravel()
    expected = [
        1 + 0.5 * 2 + 0.25 * 3,
        2 + 0.5 * 3 + 0.25 * 4,
        3 + 0.5 * 4 + 0.25 * 5,
        4 + 0.5 * 5,  # the episode ends at t = 4
        5,
        10 + 0.5 * 20,  # truncated at t = 6
        20,
        100 + 0.5 * 200,  # t = 8 is the newest transition
        200,
    ]
    np.testing.assert_allclose(returns, expected, rtol=1e-6)
    np.testing.assert_allclose(s.discounts.numpy().ravel(), [0.125, 0.125, 0.125, 0.25, 0.5, 0.25, 0.5, 0.25, 0.5])
    # bootstrap from the observation after the last summed step; terminal only for a real episode end
    np.testing.assert_array_equal(s.next_observations["x"].numpy().ravel(), [3, 4, 5, 5, 5, 7, 7, 9, 9])
    np.testing.assert_array_equal(s.dones.numpy().ravel(), [0, 0, 1, 1, 1, 0, 0, 0, 0])
    # the stored action is the residual that was executed, not the one the policy sampled
    np.testing.assert_allclose(s.actions.numpy().ravel(), 0.1 * np.arange(9), atol=1e-6)
    one = _filled_buffer(1, gamma)._get_samples(np.arange(9))
    np.testing.assert_allclose(one.rewards.numpy().ravel(), [1, 2, 3, 4, 5, 10, 20, 100, 200])
    assert one.discounts is None
    with pytest.raises(TypeError, match="Dict"):
        ResidualReplayBuffer(10, spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (1,)))


# ---------------------------------------------------------------------------------------------------------------
# Layer-normed critics, with every off-policy algorithm
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algo", "policy"), [(SAC, ResidualSACPolicy), (TQC, ResidualTQCPolicy), (TD3, ResidualTD3Policy)]
)
def test_layer_normed_critic_n_step_and_chunks_train_with_stock_algorithms(algo: Any, policy: Any, tmp_path) -> None:
    env = _pendulum_env(decision_interval=2)
    model = algo(
        policy,
        env,
        learning_starts=32,
        buffer_size=300,
        batch_size=16,
        seed=0,
        replay_buffer_class=ResidualReplayBuffer,
        replay_buffer_kwargs=dict(n_steps=3, gamma=0.99),
        policy_kwargs=dict(net_arch=[16, 16], critic_layer_norm=True),
    )
    for critic in (model.critic, model.critic_target):
        norms = [m for m in critic.qf0 if isinstance(m, nn.LayerNorm)]
        assert [n.normalized_shape for n in norms] == [(16,), (16,)]
        assert critic.q_networks[0] is critic.qf0
    before = [p.detach().clone() for p in model.critic.qf0.parameters()]
    model.learn(128, callback=ProgressiveExplorationCallback(ramp_steps=100))
    assert any(not th.equal(b, p) for b, p in zip(before, model.critic.qf0.parameters()))
    model.save(tmp_path / "m.zip")
    loaded = algo.load(tmp_path / "m.zip", env=env)
    assert loaded.policy.critic_layer_norm is True
    obs = env.reset()
    np.testing.assert_allclose(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0], atol=1e-6
    )


def test_actor_warmup_with_a_shared_features_extractor_trains_the_critic_only() -> None:
    env = make_residual_vec_env(
        "Pendulum-v1",
        base=CallableBase(lambda o: np.zeros(1, np.float32), action_space=gym.make("Pendulum-v1").action_space),
        n_envs=1,
        residual_scale=2.0,
    )
    model = SAC(
        ResidualSACPolicy,
        env,
        learning_starts=16,
        buffer_size=200,
        batch_size=16,
        policy_kwargs=dict(net_arch=[8], share_features_extractor=True),
    )
    assert model.actor.features_extractor is model.critic.features_extractor
    actor = [p.detach().clone() for p in model.actor.parameters()]
    q_net = [p.detach().clone() for p in model.critic.qf0.parameters()]
    model.learn(100, callback=ActorWarmupCallback(warmup_steps=1000))
    # SB3 trains a shared extractor through the actor's loss: it stays frozen with the actor during the burn-in
    assert all(th.equal(b, p) for b, p in zip(actor, model.actor.parameters()))
    assert any(not th.equal(b, p) for b, p in zip(q_net, model.critic.qf0.parameters()))
    assert all(p.requires_grad for p in model.policy.parameters())  # unfrozen after learn()


def test_replay_buffer_callback_swaps_in_the_residual_buffer_and_keeps_stored_transitions() -> None:
    from sb3_vla.callbacks import ResidualReplayBufferCallback

    env = _pendulum_env()
    model = SAC(
        ResidualSACPolicy, env, learning_starts=500, buffer_size=1000, gamma=0.9, policy_kwargs=dict(net_arch=[8])
    )
    model.learn(40)  # 20 transitions per env in SB3's DictReplayBuffer
    stored = model.replay_buffer.observations["obs"][:20].copy()
    model.learn(40, reset_num_timesteps=False, callback=[ResidualReplayBufferCallback(n_steps=3)])
    buf = model.replay_buffer
    assert isinstance(buf, ResidualReplayBuffer) and (buf.n_steps, buf.gamma) == (3, 0.9)
    assert buf.pos == 40
    np.testing.assert_array_equal(buf.observations["obs"][:20], stored)
    with pytest.raises(ValueError, match="off-policy"):
        from stable_baselines3 import PPO

        cb = ResidualReplayBufferCallback()
        cb.init_callback(PPO("MultiInputPolicy", env, n_steps=8, batch_size=8))
        cb.on_training_start({}, {})


def test_residual_penalty_costs_reward_per_env_step_and_leaves_the_monitor_alone() -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from sb3_vla import VecResidualActionWrapper, VecVLAObservationWrapper

    raw = DummyVecEnv([lambda: CountingEnv(horizon=100)])
    env = VecResidualActionWrapper(
        VecVLAObservationWrapper(raw, _half_base()), 0.25, decision_interval=2, residual_penalty=0.5
    )
    env.reset()
    _, rewards, _, _ = env.step(np.array([[0.5]], np.float32))
    assert rewards[0] == pytest.approx(2 * (1.0 - 0.5 * 0.25))  # two env steps, each 1 - 0.5 * 0.5**2
    _, rewards, _, _ = env.step(np.array([[0.0]], np.float32))
    assert rewards[0] == pytest.approx(2.0)  # the pure base costs nothing
    single = ResidualActionWrapper(
        VLAObservationWrapper(CountingEnv(), base=_half_base()), residual_scale=0.25, residual_penalty=0.5
    )
    single.reset(seed=0)
    assert single.step(np.array([-1.0], np.float32))[1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="residual_penalty"):
        ResidualActionWrapper(VLAObservationWrapper(CountingEnv(), base=_half_base()), residual_penalty=-1.0)


def _prefer(sign: float, quantiles: bool) -> Any:
    """A critic's forward for tests: Q(s, a) = sign * a[0] for two critics (TQC: as 5 equal quantiles each)."""

    def forward(obs: Any, actions: th.Tensor) -> Any:
        q = sign * actions[:, :1]
        return q.unsqueeze(-1).expand(-1, 2, 5) if quantiles else (q, q + 1.0)

    return forward


@pytest.mark.parametrize(
    ("algo", "policy"), [(SAC, ResidualSACPolicy), (TQC, ResidualTQCPolicy), (TD3, ResidualTD3Policy)]
)
def test_residual_gate_keeps_the_residual_only_where_the_critic_prefers_it(algo: Any, policy: Any, tmp_path) -> None:
    env = _pendulum_env(n_envs=4)
    model = algo(policy, env, buffer_size=100, seed=0, policy_kwargs=dict(net_arch=[8], residual_gate=True))
    actor = model.policy.actor
    with th.no_grad():  # a residual of +0.5 in every state
        head = [m for m in actor.mu.modules() if isinstance(m, nn.Linear)][-1]
        head.bias.fill_(float(np.arctanh(0.5)))  # the actor squashes its mean with tanh
    obs = env.reset()
    model.policy.critic.forward = _prefer(1.0, quantiles=algo is TQC)
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], 0.5, atol=1e-5)  # Q(s, r) > Q(s, 0): kept
    model.policy.critic.forward = _prefer(-1.0, quantiles=algo is TQC)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], 0.0)  # the base alone is preferred
    if algo is not TD3:  # exploration while training is not gated
        assert np.abs(model.predict(obs, deterministic=False)[0]).max() > 0
    model.policy.residual_gate = False
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], 0.5, atol=1e-5)
    assert policy(**model.policy._get_constructor_parameters()).residual_gate is False
