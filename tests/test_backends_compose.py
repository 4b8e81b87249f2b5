"""Spec parsing and :class:`ComposedBase`: an action base plus embedding-only bases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _tiny_models import TINY_CLIP, TinyDictEnv, save_tiny_clip
from gymnasium import spaces

from sb3_vla.bases import CallableBase, VLABatch, ZeroBase, make_base, registered_bases
from sb3_vla.bases.backends import ComposedBase, make_composed_base
from sb3_vla.core.options import parse_query as parse_options

pytest.importorskip("open_clip")

ACT_SPACE = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
OBS_SPACE = TinyDictEnv(rgb=True).observation_space


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def _batch(n: int) -> VLABatch:
    rng = np.random.default_rng(0)
    obs = {
        "state": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "rgb": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
    }
    return VLABatch(obs=obs, instructions=["fold the towel"] * n, env_ids=np.arange(n))


def test_prefixes_registered() -> None:
    assert {"hf", "clip", "module", "sb3", "compose", "zero", "scripted"} <= set(registered_bases())


def test_parse_options() -> None:
    assert parse_options("/a/b") == ("/a/b", {})
    main, opts = parse_options("org/m?unnorm_key=bridge_orig&n=4&x=0.5&flag=True&none=None&l=[1, 2]&d={'a': 1}")
    assert main == "org/m"
    assert opts == {
        "unnorm_key": "bridge_orig",
        "n": 4,
        "x": 0.5,
        "flag": True,
        "none": None,
        "l": [1, 2],
        "d": {"a": 1},
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_options("m?novalue")


def test_compose_spec_scripted_action_clip_embedding(ckpt: Path) -> None:
    base = make_base(
        f"compose:scripted+clip:{TINY_CLIP}@{ckpt}",
        observation_space=OBS_SPACE,
        action_space=ACT_SPACE,
        clip={"device": "cpu"},
    )
    assert isinstance(base, ComposedBase)
    assert base.env_query == "scripted_action" and base.action_space is ACT_SPACE and base.embedding_dim == 32
    assert not base.stateless
    batch = _batch(3)
    batch.env_outputs = [np.array([0.1, -0.2], np.float32)] * 3
    action, emb = base.predict(batch)
    np.testing.assert_allclose(action, [[0.1, -0.2]] * 3)
    assert emb is not None and emb.shape == (3, 32)
    np.testing.assert_allclose(emb, base.embedding_bases[0].predict(batch)[1])  # type: ignore[arg-type]


def test_composed_base_in_python_concatenates_embeddings(ckpt: Path) -> None:
    from sb3_vla.bases.backends.clip import ClipBase

    clip_img = ClipBase(TINY_CLIP, str(ckpt), include_text=False, device="cpu")
    action_base = ZeroBase(ACT_SPACE, embedding_dim=4)
    base = ComposedBase(action_base, clip_img)
    assert base.embedding_dim == 4 + 16 and base.obs_keys == ()  # ZeroBase reads every key
    action, emb = base.predict(_batch(2))
    assert action.shape == (2, 2) and emb is not None and emb.shape == (2, 20)
    np.testing.assert_allclose(emb[:, :4], 0.0)
    cb = CallableBase(lambda o: o["state"][:, :2], ACT_SPACE, batched=True)
    cb.obs_keys = ("state",)
    assert ComposedBase(cb, clip_img).obs_keys == ("state", "rgb")


def test_compose_errors(ckpt: Path) -> None:
    from sb3_vla.bases.backends.clip import ClipBase

    clip = ClipBase(TINY_CLIP, str(ckpt), device="cpu")
    with pytest.raises(ValueError, match="gives the action"):
        ComposedBase(clip, clip)
    with pytest.raises(ValueError, match="no embedding"):
        ComposedBase(ZeroBase(ACT_SPACE), ZeroBase(ACT_SPACE))
    with pytest.raises(ValueError, match="at least one embedding base"):
        ComposedBase(ZeroBase(ACT_SPACE))
    with pytest.raises(ValueError, match=r"<action spec>\+<embedding spec>"):
        make_base("compose:zero", action_space=ACT_SPACE)
    with pytest.raises(ValueError, match="does not provide"):
        make_composed_base(
            f"zero+clip:{TINY_CLIP}@{ckpt}",
            observation_space=spaces.Dict({"state": OBS_SPACE["state"]}),
            action_space=ACT_SPACE,
        )
    with pytest.raises(ValueError, match="unknown base spec"):
        make_base("nope:thing")
    with pytest.raises(TypeError, match="valid options"):
        make_base(f"clip:{TINY_CLIP}@{ckpt}?imagekey=rgb")
