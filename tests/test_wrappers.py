import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_vla import (
    CallableBase,
    EnvScriptedBase,
    ResidualActionWrapper,
    VecResidualActionWrapper,
    VecVLAObservationWrapper,
    VLAFeaturesExtractor,
    VLAObservationWrapper,
    ZeroBase,
    make_residual_vec_env,
)
from sb3_vla.wrappers import IndexActionAdapter, LinearActionAdapter, ResidualScaleSchedule
from tests._helpers import CountingChunkBase, NaNBase, ToyDictEnv, pendulum_controller


def residual_env(env: gym.Env, base, **kwargs) -> gym.Env:
    obs_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in ("query_interval", "action_adapter", "drop_keys")}
    return ResidualActionWrapper(VLAObservationWrapper(env, base, **obs_kwargs), **kwargs)


def test_check_env_box_obs():
    env = gym.make("Pendulum-v1")
    wrapped = residual_env(env, CallableBase(pendulum_controller, env.action_space), residual_scale=0.5)
    assert isinstance(wrapped.observation_space, spaces.Dict)
    assert set(wrapped.observation_space.spaces) == {"obs", "vla_action"}
    gym_check_env(wrapped, skip_render_check=True)
    sb3_check_env(wrapped, warn=False)


def test_check_env_dict_obs_with_embedding():
    env = ToyDictEnv()
    wrapped = residual_env(env, CountingChunkBase(), residual_scale=0.2)
    assert set(wrapped.observation_space.spaces) == {"rgb", "pcd", "state", "vla_action", "vla_embedding"}
    assert wrapped.observation_space["vla_embedding"].shape == (5,)
    gym_check_env(wrapped, skip_render_check=True)
    sb3_check_env(wrapped, warn=False)


def test_zero_residual_executes_base_action_exactly():
    env = gym.make("Pendulum-v1")
    base = CallableBase(lambda o: pendulum_controller(o, bias=0.3), env.action_space)
    wrapped = residual_env(env, base, residual_scale=0.5)
    obs, _ = wrapped.reset(seed=3)
    for _ in range(20):
        expected = pendulum_controller(obs["obs"], bias=0.3)
        np.testing.assert_array_equal(obs["vla_action"], expected)
        obs, _, _, _, info = wrapped.step(np.zeros(1, np.float32))
        np.testing.assert_array_equal(info["executed_action"], expected)
        np.testing.assert_array_equal(info["base_action"], expected)


def test_residual_scale_clip_and_absolute_dims():
    env = ToyDictEnv(action_dim=3)
    base = EnvScriptedBase(env.action_space)
    wrapped = residual_env(env, base, residual_scale=[0.1, 0.5, 1.0], absolute_dims=[2])
    obs, _ = wrapped.reset(seed=0)
    b = obs["vla_action"]
    res = np.array([1.0, -1.0, 0.5], np.float32)
    _, _, _, _, info = wrapped.step(res)
    executed = info["executed_action"]
    assert executed[0] == pytest.approx(np.clip(b[0] + 0.1, -1, 1))
    assert executed[1] == pytest.approx(np.clip(b[1] - 0.5, -1, 1))
    assert executed[2] == pytest.approx(0.5)  # absolute: (-1 + (0.5 + 1) / 2 * 2)
    # large residuals never leave the env's bounds
    _, _, _, _, info = wrapped.step(np.array([1.0, 1.0, 1.0], np.float32))
    assert np.all(info["executed_action"] <= 1.0) and np.all(info["executed_action"] >= -1.0)


def test_absolute_dim_maps_onto_env_bounds():
    # GarmentFold-style stage-advance dim in [0, 1]
    space = spaces.Box(np.array([-1, -1, 0], np.float32), np.array([1, 1, 1], np.float32))

    class Env(ToyDictEnv):
        def __init__(self):
            super().__init__()
            self.action_space = space

    wrapped = residual_env(Env(), ZeroBase(space), residual_scale=0.2, absolute_dims=[-1])
    wrapped.reset(seed=0)
    for r, expected in [(-1.0, 0.0), (0.0, 0.5), (1.0, 1.0)]:
        _, _, _, _, info = wrapped.step(np.array([0, 0, r], np.float32))
        assert info["executed_action"][2] == pytest.approx(expected)


def test_residual_scale_schedule():
    env = gym.make("Pendulum-v1")
    wrapped = residual_env(env, ZeroBase(env.action_space), residual_scale={"start": 0.1, "end": 1.1, "steps": 10})
    wrapped.reset(seed=0)
    _, _, _, _, info = wrapped.step(np.ones(1, np.float32))
    assert info["executed_action"][0] == pytest.approx(0.1)
    for _ in range(4):
        wrapped.step(np.ones(1, np.float32))
    _, _, _, _, info = wrapped.step(np.ones(1, np.float32))
    assert info["executed_action"][0] == pytest.approx(0.6)
    assert ResidualScaleSchedule(0.0 + 1, 3.0, 4)(100) == pytest.approx(3.0)


def test_eval_stacks_read_the_schedule_at_the_training_steps():
    from sb3_vla.config import resolve
    from sb3_vla.experiment import build_eval_env, build_vec_env, set_schedule_step

    schedule = {"start": 0.1, "end": 1.1, "steps": 20}
    cfg = resolve("sac", "Pendulum-v1", {"n_timesteps": 100}, {"residual_scale": schedule}, base="zero")
    train_env = build_vec_env(cfg, 2, 0)
    eval_env = build_eval_env(cfg, train_env, 1, 1)
    train_env.reset(), eval_env.reset()
    for _ in range(5):  # 2 envs x 5 = 10 env steps: half the ramp
        train_env.step(np.ones((2, 1), np.float32))
    eval_env.step(np.ones((1, 1), np.float32))  # its own steps do not move the schedule it follows
    residual = [unwrap_residual(e) for e in (train_env, eval_env)]
    assert float(residual[0].residual_scale) == pytest.approx(0.6)
    assert float(residual[1].residual_scale) == pytest.approx(0.6)
    _, _, _, infos = eval_env.step(np.ones((1, 1), np.float32))
    assert infos[0]["executed_action"][0] == pytest.approx(0.6)
    # a resumed run or a loaded model: the schedule where SB3's count (decisions x envs) left it
    set_schedule_step(train_env, 15)
    assert float(residual[0].residual_scale) == pytest.approx(0.85) and float(residual[1].residual_scale) == 0.85
    residual[1].set_schedule_step(100)  # stops following
    assert float(residual[1].residual_scale) == pytest.approx(1.1) and float(residual[0].residual_scale) == 0.85
    with pytest.raises(TypeError, match="holds no residual wrapper to follow"):
        residual[1].follow_schedule_of(make_vec_env("Pendulum-v1", n_envs=1))
    train_env.close(), eval_env.close()


def unwrap_residual(venv):
    from stable_baselines3.common.vec_env import unwrap_vec_wrapper

    from sb3_vla.wrappers import VecResidualActionWrapper

    return unwrap_vec_wrapper(venv, VecResidualActionWrapper)


@pytest.mark.parametrize("query_interval,chunk,steps", [(1, 1, 10), (3, 4, 10), (4, 4, 17), (5, 2, 9)])
def test_chunk_reuse_counts_and_values(query_interval, chunk, steps):
    base = CountingChunkBase(chunk_size=chunk)
    env = VLAObservationWrapper(ToyDictEnv(horizon=100), base, query_interval=query_interval)
    obs, _ = env.reset(seed=0)
    effective = min(query_interval, chunk)
    query_state = obs["state"].sum()
    for t in range(steps):
        if t % effective == 0:
            query_state = obs["state"].sum()
        np.testing.assert_allclose(obs["vla_action"], (query_state + (t % effective)) / 10, rtol=1e-5)
        if t < steps - 1:
            obs, *_ = env.step(env.action_space.sample())
    # `steps` observations were produced: the base ran once per `effective` of them
    assert base.calls == math.ceil(steps / effective)


def test_base_reset_and_instruction_per_episode():
    base = CountingChunkBase()
    env = VLAObservationWrapper(ToyDictEnv(horizon=3), base)
    _, info = env.reset(seed=1)
    assert base.resets[-1] == [0]
    assert base.instructions[-1] == [info["instruction"]]
    assert env.instruction == info["instruction"]


def _vec_and_single(n_envs: int, seed: int, base_factory, steps: int = 25, **kw):
    venv = make_vec_env(lambda: ToyDictEnv(horizon=7), n_envs=n_envs, seed=seed)
    venv = VecResidualActionWrapper(VecVLAObservationWrapper(venv, base_factory(), query_interval=2), 0.3)
    singles = [
        residual_env(ToyDictEnv(horizon=7), base_factory(), query_interval=2, residual_scale=0.3) for _ in range(n_envs)
    ]
    rng = np.random.default_rng(0)
    vobs = venv.reset()
    sobs = [e.reset(seed=seed + i)[0] for i, e in enumerate(singles)]
    for _ in range(steps):
        for k in vobs:
            np.testing.assert_allclose(vobs[k], np.stack([o[k] for o in sobs]), rtol=1e-6, atol=1e-6)
        actions = rng.uniform(-1, 1, (n_envs, 3)).astype(np.float32)
        vobs, vrew, vdone, vinfos = venv.step(actions)
        for i, e in enumerate(singles):
            o, r, term, trunc, info = e.step(actions[i])
            assert vrew[i] == pytest.approx(r, rel=1e-6)
            np.testing.assert_allclose(vinfos[i]["executed_action"], info["executed_action"], rtol=1e-6)
            if term or trunc:
                assert vdone[i]
                term_obs = vinfos[i]["terminal_observation"]
                for k in o:
                    np.testing.assert_allclose(term_obs[k], o[k], rtol=1e-6, atol=1e-6)
                o, _ = e.reset()
            sobs[i] = o
    return venv


def test_batched_equals_single_env():
    venv = _vec_and_single(3, seed=11, base_factory=CountingChunkBase)
    assert venv.observation_space["vla_embedding"].shape == (5,)


def test_batched_one_forward_per_step():
    base = CountingChunkBase(chunk_size=1)
    venv = make_vec_env(lambda: ToyDictEnv(horizon=50), n_envs=8, seed=0)
    venv = VecVLAObservationWrapper(venv, base)
    venv.reset()
    for _ in range(10):
        venv.step(np.zeros((8, 3), np.float32))
    assert base.calls == 11 and set(base.batch_sizes) == {8}


def test_scripted_base_in_subprocesses():
    venv = make_vec_env(ToyDictEnv, n_envs=2, seed=5, vec_env_cls=SubprocVecEnv)
    probe = ToyDictEnv()
    venv = VecResidualActionWrapper(VecVLAObservationWrapper(venv, EnvScriptedBase(probe.action_space)), 0.1)
    try:
        obs = venv.reset()
        targets = venv.env_method("scripted_action")
        np.testing.assert_allclose(obs["vla_action"], np.stack(targets))
        obs, rew, _, _ = venv.step(np.zeros((2, 3), np.float32))
        assert np.allclose(rew, 0.0)  # the scripted action is the target
    finally:
        venv.close()


def test_make_residual_vec_env_spec_and_seed():
    venv = make_residual_vec_env("Pendulum-v1", base="zero", n_envs=2, residual_scale=0.5, seed=0)
    obs = venv.reset()
    assert obs["vla_action"].shape == (2, 1) and venv.action_space.shape == (1,)
    _, _, _, infos = venv.step(np.full((2, 1), 1.0, np.float32))
    assert infos[0]["executed_action"][0] == pytest.approx(0.5)


def test_action_adapters():
    env = ToyDictEnv(action_dim=3)
    small = CallableBase(lambda o: np.array([0.25, -0.5], np.float32), spaces.Box(-1, 1, (2,), np.float32))
    wrapped = VLAObservationWrapper(env, small, action_adapter=IndexActionAdapter(3, env_indices=[2, 0], fill=0.1))
    obs, _ = wrapped.reset(seed=0)
    np.testing.assert_allclose(obs["vla_action"], [-0.5, 0.1, 0.25])
    lin = LinearActionAdapter(np.array([[1, 0], [0, 1], [1, 1]], np.float32))
    wrapped = VLAObservationWrapper(ToyDictEnv(), small, action_adapter=lin)
    obs, _ = wrapped.reset(seed=0)
    np.testing.assert_allclose(obs["vla_action"], [0.25, -0.5, -0.25])


def test_nonfinite_zero_mode_counts_and_reports():
    venv = make_vec_env(lambda: ToyDictEnv(horizon=50), n_envs=3, seed=0)
    base = NaNBase(spaces.Box(-1, 1, (3,), np.float32), bad_env=1, after=2)
    venv = VecVLAObservationWrapper(venv, base, nonfinite="zero")
    venv.reset()
    flagged = 0
    for _ in range(5):
        obs, _, _, infos = venv.step(np.zeros((3, 3), np.float32))
        assert np.all(np.isfinite(obs["vla_action"]))
        flagged += sum(bool(i.get("vla_nonfinite")) for i in infos)
        assert not infos[0].get("vla_nonfinite") and not infos[2].get("vla_nonfinite")
    assert flagged == 4 and venv.engine.num_nonfinite == 4


def test_hidden_base_action_is_also_hidden_in_terminal_observations():
    from stable_baselines3 import PPO

    venv = make_vec_env(lambda: ToyDictEnv(horizon=5), n_envs=2, seed=0)
    venv = VecResidualActionWrapper(VecVLAObservationWrapper(venv, "zero"), 0.2, keep_base_in_obs=False)
    assert "vla_action" not in venv.observation_space.spaces
    venv.reset()
    for _ in range(5):
        obs, _, dones, infos = venv.step(np.zeros((2, 3), np.float32))
    assert dones.all() and "vla_action" not in infos[0]["terminal_observation"]
    assert np.allclose(infos[0]["base_action"], 0.0)
    kwargs = dict(features_extractor_class=VLAFeaturesExtractor)
    PPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, policy_kwargs=kwargs).learn(32)


def test_override_dims_start_from_base_with_full_authority():
    space = spaces.Box(np.array([-1, -1, 0], np.float32), np.array([1, 1, 1], np.float32))

    class Env(ToyDictEnv):
        def __init__(self):
            super().__init__()
            self.action_space = space

    base = CallableBase(lambda o: np.array([0.2, 0.2, 1.0], np.float32), space)
    wrapped = residual_env(Env(), base, residual_scale=0.1, override_dims=[2])
    wrapped.reset(seed=0)
    for r, expected in [(0.0, 1.0), (-0.5, 0.5), (-1.0, 0.0)]:
        _, _, _, _, info = wrapped.step(np.array([1.0, 0.0, r], np.float32))
        assert info["executed_action"][2] == pytest.approx(expected)  # residual 0 keeps the base's value
        assert info["executed_action"][0] == pytest.approx(0.3)  # the other dims keep their small scale
    with pytest.raises(ValueError, match="both in absolute_dims and override_dims"):
        residual_env(Env(), base, residual_scale=0.1, override_dims=[2], absolute_dims=[2])
