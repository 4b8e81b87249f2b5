"""The SB3 internals sb3_vla relies on (sb3_vla.sb3_adapter), pinned to the SB3 versions they were written for."""

from __future__ import annotations

import stable_baselines3 as sb3
import torch as th
from stable_baselines3 import PPO, SAC

from sb3_vla.sb3_adapter import TESTED_SB3, constructor_parameters, counters, save_params, set_counters


def test_written_for_this_sb3_version() -> None:
    major, minor = (int(x) for x in sb3.__version__.split(".")[:2])
    assert (major, minor) in TESTED_SB3, (
        f"stable-baselines3 {sb3.__version__} is not in sb3_adapter.TESTED_SB3 {TESTED_SB3}: check that its "
        "protected names still behave as the tests below assert, then add the version"
    )


def test_save_params_name_every_torch_state_the_model_has() -> None:
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=0, policy_kwargs={"net_arch": [8]})
    state_dicts, variables = save_params(model)
    assert set(state_dicts) == {"policy", "actor.optimizer", "critic.optimizer", "ent_coef_optimizer"}
    assert variables == ["log_ent_coef"]
    assert isinstance(model.log_ent_coef, th.Tensor)
    assert save_params(PPO("MlpPolicy", "Pendulum-v1", n_steps=16))[0] == ["policy", "policy.optimizer"]


def test_counters_round_trip_and_count_real_updates() -> None:
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=0, train_freq=1, policy_kwargs={"net_arch": [8]})
    assert counters(model) == {"n_updates": 0, "episode_num": 0}
    model.learn(210)  # one Pendulum episode is 200 steps
    got = counters(model)
    assert got["n_updates"] == 210 and got["episode_num"] == 1
    set_counters(model, n_updates=5, episode_num=2)
    assert counters(model) == {"n_updates": 5, "episode_num": 2}
    assert model._n_updates == 5 and model._episode_num == 2  # the names SB3's logger reads


def test_constructor_parameters_rebuild_the_policy() -> None:
    policy = SAC("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [8, 8]}).policy
    kwargs = constructor_parameters(policy)
    assert kwargs["net_arch"] == [8, 8]
    rebuilt = type(policy)(**kwargs)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in policy.parameters()]
