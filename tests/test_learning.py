"""Residual SAC on a real gymnasium env (Pendulum-v1) with a deliberately biased base ends clearly better."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_vla import CallableBase, ResidualSACPolicy, make_residual_vec_env
from tests._helpers import pendulum_controller

BIAS = 2.0  # a torque offset that makes the base fail to balance (return about -750 instead of -130)


def _eval_env(base):
    return make_residual_vec_env("Pendulum-v1", base=base, n_envs=1, residual_scale=2.0, seed=1000)


def test_residual_sac_beats_biased_base():
    th.manual_seed(0)
    space = gym.make("Pendulum-v1").action_space
    base = CallableBase(lambda o: pendulum_controller(o, bias=BIAS), space, name="biased_pd")
    env = make_residual_vec_env("Pendulum-v1", base=base, n_envs=1, residual_scale=2.0, seed=0)
    model = SAC(
        ResidualSACPolicy, env, learning_starts=300, learning_rate=1e-3, seed=0, policy_kwargs=dict(net_arch=[64, 64])
    )
    base_return, _ = evaluate_policy(model, _eval_env(base), n_eval_episodes=5, deterministic=True)
    model.learn(3000)
    final_return, _ = evaluate_policy(model, _eval_env(base), n_eval_episodes=5, deterministic=True)
    print(f"biased base {base_return:.0f} -> residual SAC {final_return:.0f}")
    # at step 0 the residual is exactly zero, so the first evaluation is the base itself
    assert base_return < -400, base_return
    assert np.isfinite(final_return) and final_return > base_return + 200, (base_return, final_return)


def test_actor_warmup_freezes_only_the_actor_until_its_step():
    import torch as th
    from stable_baselines3 import SAC

    from sb3_vla import ResidualSACPolicy, make_residual_vec_env
    from sb3_vla.callbacks import ActorWarmupCallback

    env = make_residual_vec_env("Pendulum-v1", base="zero", residual_scale=2.0, seed=0)
    model = SAC(ResidualSACPolicy, env, learning_starts=50, batch_size=32, seed=0)
    actor0 = [p.detach().clone() for p in model.actor.parameters()]
    critic0 = [p.detach().clone() for p in model.critic.parameters()]
    callback = ActorWarmupCallback(warmup_steps=300)
    model.learn(200, callback=callback)
    assert all(th.equal(a, b) for a, b in zip(actor0, model.actor.parameters()))  # the residual is still exactly zero
    assert not all(th.equal(a, b) for a, b in zip(critic0, model.critic.parameters()))  # the critic learned
    assert all(p.requires_grad for p in model.actor.parameters())  # nothing stays frozen after learn()
    model.learn(200, callback=ActorWarmupCallback(warmup_steps=300), reset_num_timesteps=False)
    assert not all(th.equal(a, b) for a, b in zip(actor0, model.actor.parameters()))
    with pytest.raises(ValueError, match="warmup_steps"):
        ActorWarmupCallback(warmup_steps=-1)
