"""make_residual_env: the single-env stack that check_env can check, with the spaces of make_residual_vec_env."""

from __future__ import annotations

import numpy as np
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from sb3_vla import make_residual_env, make_residual_vec_env


def test_single_env_passes_check_env_with_the_vec_env_spaces() -> None:
    env = make_residual_env("Pendulum-v1", base="zero", residual_scale=2.0)
    sb3_check_env(env, warn=True)
    gym_check_env(env, skip_render_check=True)
    venv = make_residual_vec_env("Pendulum-v1", base="zero", n_envs=2, residual_scale=2.0)
    assert env.observation_space == venv.observation_space
    assert env.action_space == venv.action_space
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["vla_action"], np.zeros(1, np.float32))  # the zero base
    venv.close()


def test_garment_fold_pinch_residual_passes_check_env() -> None:
    from sb3_vla.envs.garment_fold import PinchResidualMap

    scale = [0.02, 0.02, 0.005, 0.02, 0.02, 0.005, 0.3]
    env = make_residual_env(
        "GarmentFold-v0", base="scripted", residual_scale=scale, residual_map=PinchResidualMap(), decision_interval=4
    )
    sb3_check_env(env, warn=True)
    assert env.action_space.shape == (7,)
    _, _, _, _, info = env.step(np.zeros(7, np.float32))
    assert info["residual_applied"] in (True, False, 0, 1)
