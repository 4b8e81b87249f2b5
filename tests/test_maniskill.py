"""ManiSkill3 tasks as residual-RL envs: spaces, checkers, the scripted base through the residual wrappers, VecEnv.

The env tests need mani_skill and a Vulkan device (on a CPU-only Debian machine: ``.ci/install_vulkan.sh``); they
are skipped with the reason when either is missing. The VecEnv conversion tests run on fake batched tensors and need
neither.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from sb3_vla.envs.maniskill import TASKS, get_task, resolve_env_id
from sb3_vla.envs.maniskill.vec_env import ManiSkillVecEnv, build_infos, scalars_to_numpy

HAS_MANISKILL = importlib.util.find_spec("mani_skill") is not None
# mani_skill's CPU action check calls np.isnan on a torch tensor (numpy 2 deprecation inside mani_skill)
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")
_ENVS: dict[tuple[str, str], Any] = {}
_UNAVAILABLE: list[str] = []


def make_env(task: str, obs_mode: str, **kwargs: Any) -> Any:
    """Build (and cache, the build takes seconds) a ManiSkillEnv, or skip when ManiSkill cannot run here."""
    if not HAS_MANISKILL:
        pytest.skip("mani_skill is not installed (pip install -e '.[maniskill]')")
    if _UNAVAILABLE:
        pytest.skip(_UNAVAILABLE[0])
    key = (task, obs_mode)
    if kwargs or key not in _ENVS:
        from sb3_vla.envs.maniskill import ManiSkillEnv

        try:
            env = ManiSkillEnv(task, obs_mode=obs_mode, **kwargs)
        except RuntimeError as e:  # SAPIEN raises RuntimeError when it finds no Vulkan device
            if "vulkan" in str(e).lower() or "render" in str(e).lower():
                _UNAVAILABLE.append(f"no Vulkan device for SAPIEN (run .ci/install_vulkan.sh): {e}")
                pytest.skip(_UNAVAILABLE[0])
            raise
        if kwargs:
            return env
        _ENVS[key] = env
    return _ENVS[key]


CASES = [(t, m) for t in ("PickCube-v1", "PushCube-v1") for m in ("state", "rgb")]


@pytest.mark.maniskill
@pytest.mark.parametrize("task,obs_mode", CASES)
def test_obs_keys_dtypes_and_info(task: str, obs_mode: str) -> None:
    env = make_env(task, obs_mode)
    assert env.unwrapped is env
    space = env.observation_space
    assert isinstance(space, spaces.Dict)
    expected = {"state"} | ({"rgb"} if obs_mode == "rgb" else set())
    assert set(space.spaces) == expected
    assert space["state"].dtype == np.float32 and len(space["state"].shape) == 1
    if obs_mode == "rgb":
        assert space["rgb"].dtype == np.uint8 and space["rgb"].shape == (128, 128, 3)
    assert env.action_space.shape == (7,)  # pd_ee_delta_pose: xyz, rotation, gripper

    obs, info = env.reset(seed=0)
    assert space.contains(obs)
    assert obs["state"].dtype == np.float32
    if obs_mode == "rgb":
        assert obs["rgb"].dtype == np.uint8 and obs["rgb"].max() > 0  # a rendered image, not zeros
    assert env.instruction == TASKS[task].instruction == info["instruction"]
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert space.contains(obs)
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert type(info["is_success"]) is bool and info["is_success"] is False
    assert info["instruction"] == TASKS[task].instruction


@pytest.mark.maniskill
@pytest.mark.parametrize("task,obs_mode", CASES)
def test_check_env(task: str, obs_mode: str) -> None:
    env = make_env(task, obs_mode)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


@pytest.mark.maniskill
@pytest.mark.parametrize("task,obs_mode", CASES)
def test_zero_residual_executes_scripted_base_unchanged(task: str, obs_mode: str) -> None:
    from sb3_vla.wrappers import ResidualActionWrapper, VLAObservationWrapper

    env = make_env(task, obs_mode)
    sent: list[np.ndarray] = []
    inner = env.maniskill_env
    inner_step = inner.step

    def recording_step(action: th.Tensor) -> Any:
        sent.append(np.array(action.cpu().numpy()[0]))
        return inner_step(action)

    inner.step = recording_step  # record what ManiSkill itself receives
    try:
        wrapped = ResidualActionWrapper(VLAObservationWrapper(env, base="scripted"), residual_scale=0.2)
        obs, _ = wrapped.reset(seed=3)
        for _ in range(5):
            base_in_obs = obs["vla_action"].copy()
            obs, _, _, _, info = wrapped.step(np.zeros(7, dtype=np.float32))
            np.testing.assert_array_equal(info["base_action"], base_in_obs)
            np.testing.assert_array_equal(info["executed_action"], info["base_action"])
            np.testing.assert_array_equal(sent[-1], info["base_action"])
        assert np.abs(np.stack(sent)[:, :3]).max() > 0.05  # the scripted base is moving the arm
    finally:
        del inner.step


@pytest.mark.maniskill
def test_scripted_base_is_closed_loop() -> None:
    """Under a residual that pushes the hand away, the scripted base's next actions change to correct it."""
    from sb3_vla.wrappers import ResidualActionWrapper, VLAObservationWrapper

    env = make_env("PickCube-v1", "state")
    runs = []
    for push in (0.0, 1.0):
        wrapped = ResidualActionWrapper(VLAObservationWrapper(env, base="scripted"), residual_scale=0.5)
        wrapped.reset(seed=5)
        residual = np.array([push, 0, 0, 0, 0, 0, 0], dtype=np.float32)
        runs.append(np.stack([wrapped.step(residual)[4]["base_action"] for _ in range(4)]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])  # same seed, same first action
    assert runs[1][1:, 0].mean() < runs[0][1:, 0].mean() - 0.1  # pushed along +x, the base steers back (-x)


@pytest.mark.maniskill
@pytest.mark.parametrize("task", ["PickCube-v1", "PushCube-v1"])
def test_noiseless_scripted_base_succeeds_and_reports_success(task: str) -> None:
    # default: success does not end the episode (dense rewards would teach RL to avoid success); opt-in ends it
    for ignore in (True, False):
        env = make_env(task, "state", scripted_action_noise=0.0, scripted_target_noise=0.0, ignore_terminations=ignore)
        try:
            env.reset(seed=11)
            succeeded_at = None
            for t in range(env.max_episode_steps):
                _, _, terminated, truncated, info = env.step(env.scripted_action())
                if info["is_success"] and succeeded_at is None:
                    succeeded_at = t
                if terminated or truncated:
                    break
            assert succeeded_at is not None
            if ignore:
                assert not terminated and truncated and t == env.max_episode_steps - 1
            else:
                assert terminated and t == succeeded_at
        finally:
            env.close()


@pytest.mark.maniskill
def test_registered_ids_and_make_function() -> None:
    import sb3_vla  # noqa: F401  (registers the ids)
    from sb3_vla.envs.maniskill import make_maniskill_env

    make_env("PickCube-v1", "state")  # skips here when ManiSkill cannot run
    for task in TASKS.values():
        assert gym.spec(task.env_id).entry_point == "sb3_vla.envs.maniskill.env:ManiSkillEnv"
    env = gym.make("ManiSkill-PickCube-v1")
    assert env.unwrapped.instruction == TASKS["PickCube-v1"].instruction
    env.close()
    env = make_maniskill_env("PushCube-v1", obs_mode="state+rgb", image_size=64, sim_backend="cpu")
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (64, 64, 3) and obs["state"].dtype == np.float32
    env.close()


@pytest.mark.maniskill
def test_vec_env_on_one_cpu_env() -> None:
    """The GPU VecEnv's code path, run on ManiSkill's CPU simulation with one sub-env: auto-reset and terminal obs."""
    make_env("PickCube-v1", "state")  # skips here when ManiSkill cannot run
    venv = ManiSkillVecEnv("PickCube-v1", num_envs=1, sim_backend="cpu", max_episode_steps=6)
    venv.seed(0)
    obs = venv.reset()
    assert obs["state"].shape == (1, *venv.observation_space["state"].shape)
    assert venv.reset_infos[0]["instruction"] == TASKS["PickCube-v1"].instruction
    for _ in range(6):
        action = np.stack(venv.env_method("scripted_action"))
        assert action.shape == (1, 7)
        obs, rewards, dones, infos = venv.step(action)
        assert type(infos[0]["is_success"]) is bool
    assert dones[0] and infos[0]["TimeLimit.truncated"] is True
    assert infos[0]["terminal_observation"]["state"].shape == venv.observation_space["state"].shape
    assert not np.allclose(infos[0]["terminal_observation"]["state"], obs["state"][0])  # obs is the new episode's
    venv.close()


# ---------------------------------------------------------------------------------------------------------------- #
# VecEnv conversion on fake batched tensors (no mani_skill needed)


class FakeBatchedEnv:
    """A stand-in for a batched ManiSkill env: torch tensors of the right shapes, episodes of ``horizon`` steps."""

    def __init__(self, num_envs: int, dim: int = 5, horizon: int = 3) -> None:
        self.num_envs, self.dim, self.horizon = num_envs, dim, horizon
        self.device = th.device("cpu")
        self.single_action_space = spaces.Box(-1, 1, (7,), np.float32)
        self.t = th.zeros(num_envs, dtype=th.long)
        self.episode = th.zeros(num_envs)
        self.resets: list[list[int]] = []

    @property
    def unwrapped(self) -> FakeBatchedEnv:
        return self

    def get_obs(self) -> th.Tensor:
        # column 0: episode counter, column 1: step, the rest: env index
        obs = th.arange(self.num_envs, dtype=th.float32)[:, None].repeat(1, self.dim)
        obs[:, 0], obs[:, 1] = self.episode, self.t.float()
        return obs

    def reset(self, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[th.Tensor, dict[str, Any]]:
        idx = th.arange(self.num_envs) if not options or "env_idx" not in options else options["env_idx"]
        self.resets.append(th.as_tensor(idx).tolist())
        self.t[idx] = 0
        self.episode[idx] += 1
        return self.get_obs(), {}

    def step(self, action: th.Tensor) -> tuple[th.Tensor, ...]:
        assert action.shape == (self.num_envs, 7) and action.dtype == th.float32
        self.t += 1
        success = self.t == 2
        success[1::2] = False
        truncated = self.t >= self.horizon
        return self.get_obs(), action[:, 0] * 2, success.clone(), truncated, {"success": success}

    def close(self) -> None:
        pass


def test_scalars_to_numpy_one_transfer() -> None:
    rew, term, trunc, succ = scalars_to_numpy(
        th.tensor([0.5, -1.0]), th.tensor([True, False]), th.tensor([False, True]), th.tensor([True, False])
    )
    assert rew.dtype == np.float32 and rew.tolist() == [0.5, -1.0]
    assert term.tolist() == [True, False] and trunc.tolist() == [False, True] and succ.tolist() == [True, False]
    _, _, _, succ = scalars_to_numpy(th.zeros(3), th.zeros(3, dtype=th.bool), th.zeros(3, dtype=th.bool), None)
    assert succ.tolist() == [False] * 3


def test_build_infos() -> None:
    done_idx = np.array([1, 2])
    infos = build_infos(
        success=np.array([False, True, False]),
        terminated=np.array([False, True, False]),
        truncated=np.array([False, False, True]),
        done_idx=done_idx,
        terminal_obs={"state": np.array([[1.0], [2.0]], dtype=np.float32)},
        instruction="do it",
    )
    assert [i["is_success"] for i in infos] == [False, True, False]
    assert "terminal_observation" not in infos[0] and all(i["instruction"] == "do it" for i in infos)
    assert infos[1]["terminal_observation"]["state"].tolist() == [1.0] and infos[1]["TimeLimit.truncated"] is False
    assert infos[2]["terminal_observation"]["state"].tolist() == [2.0] and infos[2]["TimeLimit.truncated"] is True


def test_vec_env_auto_reset_on_fake_batch() -> None:
    fake = FakeBatchedEnv(num_envs=4, horizon=3)
    venv = ManiSkillVecEnv("PickCube-v1", env=fake, ignore_terminations=False)  # type: ignore[arg-type]
    assert venv.num_envs == 4 and venv.observation_space["state"].shape == (5,)
    obs = venv.reset()
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (4, 5)
    actions = np.full((4, 7), 0.25, dtype=np.float32)
    obs, rew, dones, infos = venv.step(actions)
    assert rew.tolist() == [0.5] * 4 and not dones.any()
    obs, rew, dones, infos = venv.step(actions)  # t = 2: even envs succeed (terminate)
    assert dones.tolist() == [True, False, True, False]
    assert fake.resets[-1] == [0, 2]
    for i in (0, 2):
        term = infos[i]["terminal_observation"]["state"]
        assert term[1] == 2 and term[0] == 1 and term[2] == i  # the last obs of episode 1
        assert obs["state"][i, 0] == 2 and obs["state"][i, 1] == 0  # the first obs of episode 2
        assert infos[i]["is_success"] is True and infos[i]["TimeLimit.truncated"] is False
    obs, rew, dones, infos = venv.step(actions)  # t = 3 for odd envs: truncated
    assert dones.tolist() == [False, True, False, True]
    assert infos[1]["TimeLimit.truncated"] is True and infos[1]["is_success"] is False
    assert venv.get_attr("instruction", [0, 3]) == [TASKS["PickCube-v1"].instruction] * 2


def test_task_table() -> None:
    assert resolve_env_id("PickCube-v1") == "ManiSkill-PickCube-v1"
    assert resolve_env_id("Pendulum-v1") == "Pendulum-v1"
    assert get_task("ManiSkill-PushCube-v1").task_id == "PushCube-v1"
    with pytest.raises(ValueError, match="supported"):
        get_task("OpenDrawer-v1")
