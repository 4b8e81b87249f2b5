import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import TQC
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env

from sb3_vla import (
    ResidualActorCriticPolicy,
    ResidualSACPolicy,
    ResidualTD3Policy,
    ResidualTQCPolicy,
    VecResidualActionWrapper,
    VecVLAObservationWrapper,
    VLAFeaturesExtractor,
    ZeroResidualInitCallback,
)
from sb3_vla.extractor import classify_key
from tests._helpers import CountingChunkBase, ToyDictEnv


def toy_venv(n_envs: int = 2, image_size: int = 36):
    venv = make_vec_env(lambda: ToyDictEnv(image_size=image_size), n_envs=n_envs, seed=0)
    return VecResidualActionWrapper(VecVLAObservationWrapper(venv, CountingChunkBase(chunk_size=2)), 0.2)


def test_extractor_key_kinds_and_feature_size():
    space = toy_venv().observation_space
    kinds = {k: classify_key(k, s) for k, s in space.spaces.items()}
    assert kinds == {
        "rgb": "image",
        "pcd": "pointcloud",
        "state": "vector",
        "vla_action": "vector",
        "vla_embedding": "embedding",
    }
    ext = VLAFeaturesExtractor(
        space, mlp_net_arch=(16,), cnn_output_dim=32, pointnet_output_dim=24, embedding_output_dim=8
    )
    assert ext.features_dim == 32 + 24 + 16 + 16 + 8
    obs = {k: th.as_tensor(np.stack([s.sample() for _ in range(5)])).float() for k, s in space.spaces.items()}
    obs["rgb"] = obs["rgb"] / 255.0
    out = ext(obs)
    assert out.shape == (5, ext.features_dim) and th.isfinite(out).all()


def test_extractor_images_chw_equals_hwc():
    hwc = spaces.Dict({"rgb": spaces.Box(0, 255, (32, 32, 3), np.uint8)})
    chw = spaces.Dict({"rgb": spaces.Box(0, 255, (3, 32, 32), np.uint8)})
    th.manual_seed(0)
    e1 = VLAFeaturesExtractor(hwc, cnn_output_dim=16)
    e2 = VLAFeaturesExtractor(chw, cnn_output_dim=16)
    e2.load_state_dict(e1.state_dict())
    img = th.rand(4, 32, 32, 3)
    th.testing.assert_close(e1({"rgb": img}), e2({"rgb": img.permute(0, 3, 1, 2)}))


def test_pointnet_is_permutation_invariant_and_exclude_keys():
    space = spaces.Dict({"pcd": spaces.Box(-1, 1, (64, 3), np.float32), "q": spaces.Box(-1, 1, (4,), np.float32)})
    ext = VLAFeaturesExtractor(space, exclude_keys=["q"])
    assert list(ext.extractors) == ["pcd"]
    pts = th.rand(2, 64, 3)
    perm = pts[:, th.randperm(64)]
    th.testing.assert_close(ext({"pcd": pts, "q": th.zeros(2, 4)}), ext({"pcd": perm, "q": th.ones(2, 4)}))


ALGOS = [
    (SAC, ResidualSACPolicy, dict(buffer_size=200, learning_starts=32, batch_size=16)),
    (TD3, ResidualTD3Policy, dict(buffer_size=200, learning_starts=32, batch_size=16)),
    (TQC, ResidualTQCPolicy, dict(buffer_size=200, learning_starts=32, batch_size=16)),
    (PPO, ResidualActorCriticPolicy, dict(n_steps=64, batch_size=32, n_epochs=2)),
]


@pytest.mark.parametrize("algo,policy,kwargs", ALGOS, ids=[a[0].__name__ for a in ALGOS])
def test_algorithms_learn_from_zero_residual(algo, policy, kwargs, tmp_path):
    venv = toy_venv()
    model = algo(
        policy,
        venv,
        seed=0,
        policy_kwargs=dict(net_arch=[32], features_extractor_kwargs=dict(cnn_output_dim=16)),
        **kwargs,
    )
    obs = venv.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert np.abs(action).max() < 1e-3  # executed == base at step 0
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(256)
    assert model.num_timesteps >= 256
    changed = [k for k, v in model.policy.state_dict().items() if not th.equal(v, before[k])]
    assert changed, "no parameter moved during learning"
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", env=venv)
    obs = venv.reset()
    a1, _ = model.predict(obs, deterministic=True)
    a2, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_allclose(a1, a2, atol=1e-6)
    assert isinstance(getattr(loaded.policy, "actor", loaded.policy).features_extractor, VLAFeaturesExtractor)


def test_zero_residual_callback_on_stock_policy():
    venv = toy_venv()
    model = SAC(
        "MultiInputPolicy",
        venv,
        buffer_size=100,
        learning_starts=1000,
        seed=0,
        policy_kwargs=dict(features_extractor_class=VLAFeaturesExtractor, net_arch=[16]),
    )
    obs = venv.reset()
    assert np.abs(model.predict(obs, deterministic=True)[0]).max() > 1e-4  # stock init is not zero
    model.learn(4, callback=ZeroResidualInitCallback())
    assert np.abs(model.predict(venv.reset(), deterministic=True)[0]).max() == 0.0


def test_excluding_an_embedding_the_base_does_not_give_is_a_no_op():
    """One config serves a base with an embedding and one without (the zoo entry with --base scripted)."""
    space = spaces.Dict({"q": spaces.Box(-1, 1, (3,)), "vla_action": spaces.Box(-1, 1, (2,))})
    ext = VLAFeaturesExtractor(space, exclude_keys=["vla_embedding"], mlp_net_arch=[])
    assert set(ext.kinds) == {"q", "vla_action"} and ext.features_dim == 5
