"""GarmentFold-v0: spaces, checkers, determinism, grasping, reward, stage advance and the scripted base."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("mujoco")

import sb3_vla  # noqa: F401  (registers the env ids)
from sb3_vla.bases import EnvScriptedBase, VLABatch
from sb3_vla.envs.garment_fold import GarmentFoldEnv
from sb3_vla.envs.garment_fold.scripted import HAND_OPEN


@pytest.fixture(scope="module")
def env() -> GarmentFoldEnv:
    e = GarmentFoldEnv()
    yield e
    e.close()


def _run_scripted(env: GarmentFoldEnv, seed: int, max_steps: int = 150) -> dict:
    env.reset(seed=seed)
    info: dict = {}
    for _ in range(max_steps):
        _, _, terminated, truncated, info = env.step(env.scripted_action())
        if terminated or truncated:
            break
    return info


def test_spaces_and_registration() -> None:
    env = gym.make("GarmentFold-v0")
    assert env.spec is not None and env.spec.max_episode_steps == 150
    space = env.action_space
    assert isinstance(space, gym.spaces.Box) and space.shape == (61,) and space.dtype == np.float32
    np.testing.assert_array_equal(space.low, np.r_[-np.ones(60), 0.0].astype(np.float32))
    np.testing.assert_array_equal(space.high, np.ones(61, dtype=np.float32))
    obs, info = env.reset(seed=0)
    assert set(obs) == {"garment_pcd", "keypoints", "joint_pos", "joint_vel", "stage", "held", "pinch_pos"}
    pinch = np.r_[env.unwrapped.pinch_position("L"), env.unwrapped.pinch_position("R")]
    np.testing.assert_allclose(obs["pinch_pos"], pinch, atol=1e-6)
    assert obs["garment_pcd"].shape == (256, 3) and obs["keypoints"].shape == (24,)
    np.testing.assert_array_equal(obs["stage"], [1.0, 0.0, 0.0])
    assert info["instruction"] == env.unwrapped.instruction == "fold the left sleeve onto the body"
    assert env.observation_space.contains(obs)
    env.close()


def test_gymnasium_and_sb3_check_env() -> None:
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = GarmentFoldEnv(rgb_obs=True, render_mode="rgb_array")
    gym_check_env(env, skip_render_check=False)
    sb3_check_env(env, warn=True)
    obs, _ = env.reset(seed=1)
    assert obs["rgb"].shape == (128, 128, 3) and obs["rgb"].dtype == np.uint8 and obs["rgb"].std() > 5
    frame = env.render()
    assert frame is not None and frame.shape == (240, 320, 3)
    env.close()
    assert not env._renderers  # close() freed the GL contexts


def test_seeded_determinism() -> None:
    runs = []
    for _ in range(2):
        e = GarmentFoldEnv(scripted_noise=0.02)
        obs, _ = e.reset(seed=7)
        rewards, pcds = [], [obs["garment_pcd"]]
        for _ in range(18):
            obs, r, *_ = e.step(e.scripted_action())
            rewards.append(r)
            pcds.append(obs["garment_pcd"])
        runs.append((np.array(rewards), np.stack(pcds), e.folder.grasp_noise.copy()))
        e.close()
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    other = GarmentFoldEnv(scripted_noise=0.02)
    other.reset(seed=8)
    assert not np.array_equal(other.folder.grasp_noise, runs[0][2])  # a different seed, different noise


def test_grasp_and_release() -> None:
    env = GarmentFoldEnv(scripted_noise=0.0)
    env.reset(seed=0)
    held_at = None
    for t in range(30):
        _, _, _, _, info = env.step(env.scripted_action())
        if env.held_vertex("L") >= 0:
            held_at = t
            break
    assert held_at is not None, "the left hand never pinched the sleeve"
    v = env.held_vertex("L")
    assert info["held"][0] == v and env.held_vertex("R") == -1
    assert env.data.eq_active[env._eq0["L"] + v] == 1
    assert np.linalg.norm(env._vertices()[v] - env.keypoint_position("left_sleeve_tip")) < 0.04
    # Carrying lifts the pinched vertex with the hand.
    for _ in range(4):
        obs, *_ = env.step(env.scripted_action())
    assert obs["held"][0] == 1.0 and env._vertices()[v, 2] > 0.03
    # Opening the hand (hand dims to the open posture) releases the cloth.
    action = env.scripted_action()
    q = np.concatenate([env.arm_qpos("L"), HAND_OPEN])
    action[:30] = env.normalise_side(q)
    for _ in range(2):
        obs, *_ = env.step(action)
    assert env.held_vertex("L") == -1 and obs["held"][0] == 0.0
    assert env.data.eq_active.sum() == 0
    env.close()


def test_grasp_accuracy_shaping_pays_at_the_grasp_and_keeps_the_return() -> None:
    """The accuracy term is part of the potential: paid when the hand pinches near the keypoint, taken back at the
    release, so it moves credit to the grasp without changing an episode's return."""
    rewards = {}
    for weight in (0.0, 1.0):
        env = GarmentFoldEnv(pcd_points=0, grasp_accuracy_shaping=weight)
        env.reset(seed=0)
        out = []
        for _ in range(40):
            out.append(env.step(env.scripted_action())[1])
            if env.held_vertex("L") >= 0:
                v = env.held_vertex("L")
                miss = np.linalg.norm(env._vertices()[v] - env.keypoint_position("left_sleeve_tip"))
        rewards[weight] = np.array(out)
        env.close()
    extra = rewards[1.0] - rewards[0.0]
    grasp, release = int(np.argmax(extra)), int(np.argmin(extra))
    assert extra[grasp] == pytest.approx(max(0.0, 1.0 - miss / 0.05), abs=1e-6) and extra[grasp] > 0.5
    assert release > grasp and extra[release] == pytest.approx(-extra[grasp], abs=0.02)  # the vertex moved a bit
    assert extra.sum() == pytest.approx(0.0, abs=0.02)


def test_reward_increases_with_fold_quality(env: GarmentFoldEnv) -> None:
    env.reset(seed=0)
    potentials, errors, layered = [], [], []
    for fraction in (0.0, 0.5, 1.0):
        env.set_cloth_shirt_frame(env.task.folded_state(0, fraction))
        m = env.fold_metrics()
        potentials.append(env.task.potential(m))
        errors.append(m.fold_error[0])
        layered.append(m.layered[0])
    assert potentials[0] < potentials[1] < potentials[2]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01
    assert layered[2] > 0.9 and layered[0] == 0.0
    # Step-level: teleporting from flat to the folded sleeve pays the potential difference as reward.
    env.reset(seed=0)
    hold = env.scripted_action()
    hold[60] = 0.0
    _, r_flat, *_ = env.step(hold)
    env.set_cloth_shirt_frame(env.task.folded_state(1, 0.0))
    _, r_fold, _, _, info = env.step(hold)
    assert r_fold > r_flat + 1.0
    assert info["stage_complete"][0] and not info["stage_complete"][1]


def test_stage_advance_and_early_penalty() -> None:
    env = GarmentFoldEnv()
    env.reset(seed=3)
    action = env.scripted_action()
    action[60] = 1.0
    _, r_early, _, _, info = env.step(action)
    assert info["advance_refused"] and not info["advanced"] and info["stage"] == 0
    assert r_early < -0.05  # the refused request costs early_advance_penalty (0.1)
    # Same state without the request: no penalty.
    twin = GarmentFoldEnv()
    twin.reset(seed=3)
    a2 = twin.scripted_action()
    a2[60] = 0.0
    _, r_wait, *_ = twin.step(a2)
    assert r_wait - r_early == pytest.approx(env.early_advance_penalty, abs=1e-6)
    # Complete stage 0 (teleport the folded sleeve), then advance: bonus, next stage and instruction.
    for e in (env, twin):
        e.set_cloth_shirt_frame(e.task.folded_state(1, 0.0))
    action = env.scripted_action()
    action[60] = 1.0
    a2 = twin.scripted_action()
    a2[60] = 0.0
    obs, r_adv, terminated, _, info = env.step(action)
    _, r_stay, *_ = twin.step(a2)
    assert info["advanced"] and info["stage"] == 1 and not terminated
    np.testing.assert_array_equal(obs["stage"], [0.0, 1.0, 0.0])
    assert info["instruction"] == "fold the right sleeve onto the body"
    assert r_adv - r_stay >= env.advance_bonus - 1e-6
    # Finishing: all three stages folded, advancing out of the last stage ends the episode with success.
    env.set_cloth_shirt_frame(env.task.folded_state(3))
    env.stage = 2
    action = env.scripted_action()
    action[60] = 1.0
    _, _, terminated, _, info = env.step(action)
    assert info["is_success"] and terminated
    env.close()
    twin.close()


def test_scripted_action_and_scripted_base(env: GarmentFoldEnv) -> None:
    obs, _ = env.reset(seed=5)
    a = env.scripted_action()
    assert a.shape == (61,) and a.dtype == np.float32 and env.action_space.contains(a)
    np.testing.assert_array_equal(a, env.scripted_action())  # one decision per env step
    base = EnvScriptedBase(env.action_space)
    assert base.env_query == "scripted_action"
    batch = VLABatch(obs={k: v[None] for k, v in obs.items()}, env_ids=np.array([0]), env_outputs=[a])
    action, emb = base.predict(batch)
    assert emb is None and action.shape == (1, 61)
    np.testing.assert_array_equal(action[0], a)
    for _ in range(40):
        _, _, terminated, truncated, _ = env.step(env.scripted_action())
        b = env.scripted_action()
        assert env.action_space.contains(b)


def test_scripted_folder_noise_free_and_closed_loop() -> None:
    env = GarmentFoldEnv(scripted_noise=0.0)
    info = _run_scripted(env, seed=11)
    assert info["is_success"], info["fold_error"]
    assert np.all(info["fold_error"] < 0.015)
    # Closed loop: a perturbed executed action (as under a residual policy) still folds the first sleeve.
    env.reset(seed=12)
    rng = np.random.default_rng(0)
    for _ in range(60):
        a = env.scripted_action()
        a[:60] = np.clip(a[:60] + rng.normal(0.0, 0.01, size=60), -1.0, 1.0)
        env.step(a)
        if env.stage > 0:
            break
    assert env.stage >= 1
    env.close()


def test_scripted_success_band() -> None:
    # The full figure (>= 50 episodes) is in benchmarks/garment_fold.py; a few seeds and a wide band here.
    env = GarmentFoldEnv()
    successes = [bool(_run_scripted(env, seed=100 + i)["is_success"]) for i in range(6)]
    env.close()
    assert 1 <= sum(successes) <= 5, successes


def test_camera_wrapper_adds_rgb_unless_the_env_turned_it_off() -> None:
    from sb3_vla.envs.garment_fold import CameraObservationWrapper

    env = CameraObservationWrapper(gym.make("GarmentFold-v0"), image_size=(48, 64))
    assert env.observation_space["rgb"].shape == (48, 64, 3)
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (48, 64, 3) and obs["rgb"].dtype == np.uint8 and obs["rgb"].std() > 0
    assert env.observation_space.contains(obs)
    off = CameraObservationWrapper(gym.make("GarmentFold-v0", rgb_obs=False))
    assert "rgb" not in off.observation_space.spaces and "rgb" not in off.reset(seed=0)[0]
    with pytest.raises(TypeError, match="for GarmentFold-v0"):
        CameraObservationWrapper(gym.make("Pendulum-v1"))
