"""RayVecEnv and the Ray base server on a real local Ray cluster (2 CPUs) that this module starts and stops.

The VecEnv contract is checked on SubprocVecEnv and RayVecEnv alike, against a DummyVecEnv reference.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import sys
import time

import numpy as np
import pytest
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from sb3_vla import VecVLAObservationWrapper, VLAFeaturesExtractor, VLAObservationWrapper, make_residual_vec_env
from sb3_vla.bases import make_base
from tests._helpers import CountingChunkBase, FailingToyEnv, ToyDictEnv

ray = pytest.importorskip("ray", reason='Ray is optional: pip install -e ".[ray]"')

from sb3_vla.ray import RayServedBase, RayVecEnv, RayWorkerError, ray_vec_env_class, serve_base  # noqa: E402
from sb3_vla.ray.base_server import parse_ray_spec  # noqa: E402

HORIZON = 5
TOY = functools.partial(ToyDictEnv, image_size=8, n_points=4, horizon=HORIZON)
VEC_CLASSES = {
    "subproc": SubprocVecEnv,
    "ray": functools.partial(RayVecEnv, num_cpus_per_env=0.5),  # step over the direct channel
    "ray_calls": functools.partial(RayVecEnv, num_cpus_per_env=0.5, direct_steps=False),  # every call through Ray
}


def counting_base(observation_space=None, action_space=None, **kwargs) -> CountingChunkBase:
    """Spec ``tests.test_ray:counting_base``: chunks of 4 computed from ``obs["state"]`` (built in the server)."""
    return CountingChunkBase(chunk_size=int(kwargs.get("chunk_size", 4)))


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    for attempt in range(2):  # Ray gives a node 30 s to start; on a heavily loaded machine the first try may miss
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt:
                raise
    yield
    ray.shutdown()


def _toy_vec(kind: str, n_envs: int = 2, **kwargs) -> VecEnv:
    return make_vec_env(TOY, n_envs=n_envs, seed=0, vec_env_cls=VEC_CLASSES[kind], **kwargs)


@pytest.fixture(scope="module", params=sorted(VEC_CLASSES))
def venv(request):
    env = _toy_vec(request.param)
    yield env
    env.close()


# ------------------------------------------------------------------------------------------------ VecEnv contract
def test_reset_and_step_shapes(venv):
    obs = venv.reset()
    assert {k: v.shape for k, v in obs.items()} == {"rgb": (2, 8, 8, 3), "pcd": (2, 4, 3), "state": (2, 4)}
    assert obs["rgb"].dtype == np.uint8 and obs["state"].dtype == np.float32
    assert [info["instruction"] for info in venv.reset_infos] == [
        "reach the target" if s[3] > 0 else "reach the other target" for s in obs["state"]
    ]
    obs, rewards, dones, infos = venv.step(np.zeros((2, 3), np.float32))
    assert rewards.shape == (2,) and dones.shape == (2,) and dones.dtype == bool and len(infos) == 2
    assert obs["state"].shape == (2, 4) and obs["state"].flags.writeable


def test_terminal_observation_on_auto_reset(venv):
    venv.seed(7)
    venv.reset()
    for _ in range(HORIZON - 1):
        _, _, dones, _ = venv.step(np.zeros((2, 3), np.float32))
        assert not dones.any()
    obs, _, dones, infos = venv.step(np.zeros((2, 3), np.float32))
    assert dones.all()
    for i, info in enumerate(infos):
        term = info["terminal_observation"]
        assert set(term) == {"rgb", "pcd", "state"} and term["state"].shape == (4,)
        assert info["TimeLimit.truncated"] is True
        assert not np.array_equal(term["state"], obs["state"][i])  # obs is already the next episode's first
        assert "instruction" in venv.reset_infos[i]


def test_seeding_matches_dummy_vec_env(venv):
    ref = make_vec_env(TOY, n_envs=2, vec_env_cls=DummyVecEnv)
    rollouts = []
    for env in (venv, venv, ref):
        env.seed(123)
        states = [env.reset()["state"]]
        for _ in range(3):
            states.append(env.step(np.full((2, 3), 0.1, np.float32))[0]["state"])
        rollouts.append(np.stack(states))
    np.testing.assert_array_equal(rollouts[0], rollouts[1])
    np.testing.assert_array_equal(rollouts[0], rollouts[2])
    ref.close()


def test_env_method_get_attr_set_attr(venv):
    assert venv.get_attr("horizon") == [HORIZON, HORIZON]
    venv.set_attr("horizon", 9, indices=[1])
    assert venv.get_attr("horizon") == [HORIZON, 9]
    assert venv.get_attr("horizon", indices=1) == [9]
    venv.set_attr("horizon", HORIZON)
    assert venv.has_attr("scripted_action") and not venv.has_attr("no_such_attribute")
    venv.reset()
    targets = venv.env_method("scripted_action", indices=[0, 1])
    assert [t.shape for t in targets] == [(3,), (3,)]
    np.testing.assert_allclose(targets[1], venv.env_method("target", indices=1)[0])
    assert venv.env_is_wrapped(Monitor) == [True, True]


def test_close_subproc():
    env = _toy_vec("subproc", n_envs=1)
    env.reset()
    env.close()
    env.close()  # twice is fine
    assert env.closed and not any(p.is_alive() for p in env.processes)


# ------------------------------------------------------------------------------------------------ Ray-only errors
@pytest.mark.parametrize("kind", ["ray", "ray_calls"])
def test_env_error_names_the_env_index_and_the_others_stay_usable(kind):
    env = make_vec_env(
        functools.partial(FailingToyEnv, image_size=8, n_points=4), n_envs=2, seed=0, vec_env_cls=VEC_CLASSES[kind]
    )
    try:
        env.reset()
        bad = np.zeros((2, 3), np.float32)
        bad[1] = 11.0
        with pytest.raises(ValueError, match="out of range") as raised:
            env.step(bad)
        assert any("env index 1 during step" in note for note in getattr(raised.value, "__notes__", []))
        obs, rewards, dones, _ = env.step(np.zeros((2, 3), np.float32))  # every env answers the next step
        assert obs["state"].shape == (2, 4) and rewards.shape == (2,)
    finally:
        env.close()


def test_unreachable_worker_port_falls_back_to_ray_calls(monkeypatch):
    import sb3_vla.ray.vec_env as vec_env_module

    def unreachable(address, authkey, connect_timeout_s):
        raise ConnectionRefusedError(f"connection to {address[0]}:{address[1]} refused")

    monkeypatch.setattr(vec_env_module, "Channel", unreachable)
    with pytest.warns(UserWarning, match=r"cannot connect to the worker of env index 0 at .*refused.*through Ray"):
        env = _toy_vec("ray", n_envs=2)
    try:
        assert env._channels is None
        env.seed(123)
        first = env.reset()["state"]
        assert env.step(np.full((2, 3), 0.1, np.float32))[0]["state"].shape == (2, 4)
        env.seed(123)
        np.testing.assert_array_equal(env.reset()["state"], first)
    finally:
        env.close()


@pytest.mark.timeout(60)
def test_unschedulable_worker_times_out_instead_of_hanging():
    with (
        pytest.warns(UserWarning, match="CPUs but the cluster has 2"),
        pytest.raises(RayWorkerError, match=r"env index \[0\] did not answer start within 1 s"),
    ):
        make_vec_env(TOY, n_envs=1, vec_env_cls=RayVecEnv, vec_env_kwargs=dict(num_cpus_per_env=64, start_timeout_s=1))


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray sees
    with pytest.raises(ImportError, match=r'--vec-env ray needs .* pip install -e "\.\[ray\]"'):
        ray_vec_env_class("--vec-env ray")
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[ray\]\""):
        make_residual_vec_env("Pendulum-v1", base="zero", vec_env_cls="ray")
    with pytest.raises(ImportError, match=r"base spec 'ray:zero' needs"):
        make_base("ray:zero", action_space=TOY().action_space)


# ------------------------------------------------------------------------------------------------ base server
def test_parse_ray_spec_keeps_inner_options():
    kwargs = {"max_batch": 8, "device": "cpu"}
    inner, server, client = parse_ray_spec("hf:/m?unnorm_key=bridge&max_wait_ms=5&prefetch=2", kwargs)
    assert inner == "hf:/m?unnorm_key=bridge"
    assert server == {"max_wait_ms": 5, "max_batch": 8} and client == {"prefetch": 2}
    assert kwargs == {"device": "cpu"}  # the backend's own kwargs stay
    with pytest.raises(ValueError, match="needs the spec of the base to serve"):
        make_base("ray:?max_batch=2", action_space=TOY().action_space)


def _rollout(venv: VecEnv, steps: int) -> tuple[np.ndarray, np.ndarray]:
    states, actions = [], []
    obs = venv.reset()
    for _ in range(steps):
        states.append(obs["state"])
        actions.append(obs["vla_action"])
        obs = venv.step(np.zeros((venv.num_envs, 3), np.float32))[0]
    return np.stack(states), np.stack(actions)


SERVER = "test-counting"  # one server for the tests below; a request of max_batch rows runs at once


@pytest.fixture(scope="module")
def counting_server():
    return serve_base(functools.partial(CountingChunkBase, chunk_size=4), name=SERVER, max_batch=2, max_wait_ms=3000)


def test_served_base_returns_the_inner_base_actions(counting_server):
    spec = f"ray:tests.test_ray:counting_base?name={SERVER}"  # found by name: the factory does not run again
    served = VecVLAObservationWrapper(make_vec_env(TOY, n_envs=2, seed=3), spec)
    local = VecVLAObservationWrapper(make_vec_env(TOY, n_envs=2, seed=3), CountingChunkBase(chunk_size=4))
    _, served_actions = _rollout(served, 12)  # crosses chunk ends and two episode resets
    _, local_actions = _rollout(local, 12)
    np.testing.assert_allclose(served_actions, local_actions, rtol=1e-6)
    assert served.base.chunk_size == 4 and served.base.embedding_dim == 5 and served.base.name.startswith("ray:")


def test_served_base_instance_goes_into_a_gymnasium_wrapper(counting_server):
    # Gymnasium wrappers deep-copy their constructor kwargs (RecordConstructorArgs): the client must copy
    env = VLAObservationWrapper(ToyDictEnv(), base=RayServedBase(SERVER))
    obs, _ = env.reset(seed=0)
    assert obs["vla_action"].shape == env.action_space.shape
    assert env.base.name.startswith("ray:")


@pytest.fixture(scope="module")
def wrapped_ray_venv(counting_server):
    """Two Ray env workers whose own VLAObservationWrapper reaches the server through a ``ray:`` spec (the last
    test using it, the dead-worker test, kills a worker and closes it)."""
    spec = f"ray:tests.test_ray:counting_base?name={SERVER}"
    worker_wrapper = functools.partial(VLAObservationWrapper, base=spec, query_interval=4)  # one query per chunk
    env = make_vec_env(TOY, n_envs=2, seed=5, vec_env_cls=VEC_CLASSES["ray"], wrapper_class=worker_wrapper)
    yield env
    env.close()


def test_one_server_batches_the_env_workers(wrapped_ray_venv):
    local_wrapper = functools.partial(VLAObservationWrapper, base="tests.test_ray:counting_base", query_interval=4)
    ref = make_vec_env(TOY, n_envs=2, seed=5, wrapper_class=local_wrapper)
    server = ray.get_actor(SERVER, namespace="sb3_vla")
    before = ray.get(server.stats.remote())
    wrapped_ray_venv.seed(5)
    states, actions = _rollout(wrapped_ray_venv, 9)
    ref_states, ref_actions = _rollout(ref, 9)
    np.testing.assert_array_equal(states, ref_states)
    np.testing.assert_allclose(actions, ref_actions, rtol=1e-6)
    stats = ray.get(server.stats.remote())
    # queries at reset, step 4 (chunk end), step 5 (episode end) and step 9, from both workers, batched together
    assert stats["batch_rows"][len(before["batch_rows"]) :] == [2, 2, 2, 2]
    assert stats["requests"] - before["requests"] == 8
    # each worker's wrapper found the one server by name (the model is loaded once per cluster)
    assert before["clients"] >= 2
    assert [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "sb3_vla"] == [
        SERVER
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie (exited, not yet reaped) is gone too
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return True


def _wait_gone(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), f"worker process {pid} still alive after {timeout} s"


@pytest.mark.timeout(120)
def test_dead_worker_names_the_env_index_and_close_frees_the_rest(wrapped_ray_venv):
    env = wrapped_ray_venv
    env.reset()
    pid, other = (ray.get(env.actors[i].__ray_call__.remote(lambda self: os.getpid())) for i in (1, 0))
    ray.kill(env.actors[1])  # asynchronous: wait until the process is gone, as after a crash
    _wait_gone(pid)
    with pytest.raises(RayWorkerError, match="env index 1 died during step"):
        env.step(np.zeros((2, 3), np.float32))
    with pytest.raises(RayWorkerError, match="env index 1 died during get_attr"):
        env.get_attr("horizon")
    env.close()  # does not wait on the dead worker
    env.close()  # twice is fine
    assert env.closed
    _wait_gone(other)  # ray.kill is asynchronous too: a call made right after close may still be answered
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(env.actors[0].node.remote(), timeout=30)


def test_prefetch_uses_the_chunk_asked_one_step_early(counting_server):
    server = counting_server
    client = RayServedBase(server, prefetch=1)
    venv = VecVLAObservationWrapper(make_vec_env(functools.partial(ToyDictEnv, horizon=50), n_envs=2, seed=1), client)
    states, actions = _rollout(venv, 9)

    def chunk(state: np.ndarray, k: int) -> np.ndarray:  # CountingChunkBase's k-th action, clipped as the env does
        return np.clip(np.repeat((state.sum(-1, keepdims=True) + k) / 10, 3, axis=-1), -1, 1)

    for t in range(4):  # the first chunk: asked at reset
        np.testing.assert_allclose(actions[t], chunk(states[0], t), rtol=1e-5)
    for t in range(4, 8):  # the second: asked with the observation of step 3, one step stale
        np.testing.assert_allclose(actions[t], chunk(states[3], t - 4), rtol=1e-5)
    np.testing.assert_allclose(actions[8], chunk(states[7], 0), rtol=1e-5)
    assert client.num_requests == 3 and client.chunk_size == 1 and not client.stateless
    with pytest.raises(ValueError, match="prefetch must be between 0 and the base's chunk size 4"):
        RayServedBase(server, prefetch=5)


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def residual_ray_env():
    env = make_residual_vec_env("Pendulum-v1", base="zero", n_envs=1, residual_scale=2.0, seed=0, vec_env_cls="ray")
    yield env
    env.close()


@pytest.mark.parametrize("algo", [SAC, PPO])
def test_stock_algorithms_learn_on_the_residual_stack(residual_ray_env, algo):
    assert isinstance(residual_ray_env.unwrapped, RayVecEnv)
    kwargs = dict(buffer_size=200, learning_starts=64) if algo is SAC else dict(n_steps=64, batch_size=32)
    model = algo(
        "MultiInputPolicy",
        residual_ray_env,
        policy_kwargs=dict(features_extractor_class=VLAFeaturesExtractor, net_arch=[32, 32]),
        seed=0,
        **kwargs,
    )
    model.learn(256 if algo is SAC else 64)
    assert model.num_timesteps >= (256 if algo is SAC else 64)
    obs = residual_ray_env.reset()
    np.testing.assert_array_equal(obs["vla_action"], np.zeros((1, 1), np.float32))
    assert model.predict(obs, deterministic=True)[0].shape == (1, 1)
