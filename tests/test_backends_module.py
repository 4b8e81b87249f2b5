"""``module:`` backend: a tiny ``nn.Module`` checkpoint loaded like EmbodiChain's ``load_vla_model``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch as th
from _tiny_models import TinyDictEnv, TinyPolicy
from gymnasium import spaces

from sb3_vla.bases import VLABatch, make_base
from sb3_vla.bases.backends.module import ModuleBase

OBS_SPACE = TinyDictEnv(rgb=True).observation_space
ACT_SPACE = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


def _save(path: Path, seed: int = 0, wrap: bool = True, **config: int) -> tuple[TinyPolicy, Path]:
    th.manual_seed(seed)
    net = TinyPolicy(**config)
    sd = net.state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        th.save({"model_state_dict": sd, "epoch": 3} if wrap else sd, path)
    return net.eval(), path


def _batch(n: int, seed: int = 0) -> VLABatch:
    rng = np.random.default_rng(seed)
    obs = {
        "state": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "rgb": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
    }
    return VLABatch(obs=obs, instructions=["x"] * n, env_ids=np.arange(n))


def _reference(net: TinyPolicy, batch: VLABatch) -> tuple[np.ndarray, np.ndarray]:
    obs = {k: th.as_tensor(v) for k, v in batch.obs.items()}
    with th.no_grad():
        return net(obs).numpy(), net.embed(obs).numpy()


def test_spec_loads_checkpoint_and_matches_module(tmp_path: Path) -> None:
    net, path = _save(tmp_path / "tiny.pt", hidden=8)
    base = make_base(
        f"module:_tiny_models.TinyPolicy@{path}?model_config={{'hidden': 8}}",
        observation_space=OBS_SPACE,
        action_space=ACT_SPACE,
        device="cpu",
    )
    assert isinstance(base, ModuleBase)
    assert base.action_space is ACT_SPACE  # the probe found the env's action shape
    assert base.embedding_dim == 8 and base.chunk_size == 1
    assert not base.module.training
    batch = _batch(5)
    action, emb = base.predict(batch)
    ref_a, ref_e = _reference(net, batch)
    np.testing.assert_allclose(action, ref_a, atol=1e-6)
    np.testing.assert_allclose(emb, ref_e, atol=1e-6)  # type: ignore[arg-type]


def test_batch_of_8_equals_8_batches_of_1(tmp_path: Path) -> None:
    _, path = _save(tmp_path / "tiny.pt")
    base = ModuleBase("_tiny_models.TinyPolicy", checkpoint=path, observation_space=OBS_SPACE, device="cpu")
    batch = _batch(8, seed=1)
    a8, e8 = base.predict(batch)
    singles = [base.predict(VLABatch(obs={k: v[i : i + 1] for k, v in batch.obs.items()})) for i in range(8)]
    np.testing.assert_allclose(a8, np.concatenate([a for a, _ in singles]), atol=1e-6)
    np.testing.assert_allclose(e8, np.concatenate([e for _, e in singles]), atol=1e-6)  # type: ignore[arg-type]


def test_safetensors_raw_state_dict_chunks_and_obs_keys(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    net, path = _save(tmp_path / "tiny.safetensors", chunk=3)
    base = make_base(
        f"module:_tiny_models.TinyPolicy@{path}",
        observation_space=OBS_SPACE,
        model_config={"chunk": 3},
        obs_keys=["state", "rgb"],
        use_embed=False,
        device="cpu",
    )
    assert base.chunk_size == 3 and base.embedding_dim == 0 and base.obs_keys == ("state", "rgb")
    action, emb = base.predict(_batch(4))
    assert action.shape == (4, 3, 2) and emb is None
    np.testing.assert_allclose(action, _reference(net, _batch(4))[0], atol=1e-6)
    _, raw = _save(tmp_path / "raw.pt", wrap=False)
    assert ModuleBase("_tiny_models.TinyPolicy", checkpoint=raw, observation_space=OBS_SPACE).embedding_dim == 8


def test_module_instance(tmp_path: Path) -> None:
    net = TinyPolicy()
    base = ModuleBase(net, action_space=ACT_SPACE, embedding_dim=8, device="cpu")
    np.testing.assert_allclose(base.predict(_batch(2))[0], _reference(net, _batch(2))[0], atol=1e-6)


def test_errors(tmp_path: Path) -> None:
    _, path = _save(tmp_path / "tiny.pt", hidden=8)
    with pytest.raises(ValueError, match="does not match"):  # checkpoint mismatch
        make_base(f"module:_tiny_models.TinyPolicy@{path}", model_config={"hidden": 16}, observation_space=OBS_SPACE)
    with pytest.raises(ValueError, match="does not exist"):
        make_base("module:_tiny_models.TinyPolicy@/nope/ckpt.pt", observation_space=OBS_SPACE)
    with pytest.raises(ValueError, match="cannot import module"):
        make_base("module:no_such_pkg.Net", observation_space=OBS_SPACE)
    with pytest.raises(ValueError, match="package.module.Class"):
        make_base("module:Net")
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        make_base("module:_tiny_models.TinyDictEnv", observation_space=OBS_SPACE)
    with pytest.raises(ValueError, match="action space has shape"):
        ModuleBase("_tiny_models.TinyPolicy", observation_space=OBS_SPACE, action_space=spaces.Box(-1, 1, (7,)))
    with pytest.raises(ValueError, match="cannot tell the action shape"):
        ModuleBase("_tiny_models.TinyPolicy")
    # weights_only=True refuses pickled objects other than tensors and containers
    bad = tmp_path / "pickled.pt"
    th.save({"model_state_dict": TinyPolicy().state_dict(), "env": TinyDictEnv()}, bad)
    with pytest.raises(ValueError, match="weights_only"):
        make_base(f"module:_tiny_models.TinyPolicy@{bad}", observation_space=OBS_SPACE)
    base = make_base(f"module:_tiny_models.TinyPolicy@{path}", observation_space=OBS_SPACE)
    with pytest.raises(KeyError):
        base.predict(VLABatch(obs={"state": np.zeros((1, 3), np.float32)}))
