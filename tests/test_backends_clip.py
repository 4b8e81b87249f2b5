"""``clip:`` backend on a tiny open_clip config registered with ``open_clip.add_model_config``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th

pytest.importorskip("open_clip")

import open_clip
from _tiny_models import TINY_CLIP, TINY_CLIP_CFG, save_tiny_clip

from sb3_vla.bases import VLABatch, make_base
from sb3_vla.bases.backends.clip import ClipBase


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def base(ckpt: Path) -> ClipBase:
    return ClipBase(TINY_CLIP, str(ckpt), device="cpu")


def _batch(images: np.ndarray, instructions: list[str] | None = None) -> VLABatch:
    return VLABatch(obs={"rgb": images}, instructions=instructions, env_ids=np.arange(len(images)))


def _images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_shapes_and_no_action(base: ClipBase) -> None:
    assert base.action_space is None and base.obs_keys == ("rgb",)
    assert base.embedding_dim == 2 * TINY_CLIP_CFG["embed_dim"]
    action, emb = base.predict(_batch(_images(3), ["a", "b", "a"]))
    assert action.shape == (3, 0)
    assert emb is not None and emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb[:, :16], axis=1), 1.0, atol=1e-5)  # L2-normalised halves
    np.testing.assert_allclose(emb[0, 16:], emb[2, 16:])  # same instruction, same text embedding


def test_weights_are_loaded_and_match_open_clip_pipeline(base: ClipBase, ckpt: Path) -> None:
    """The image half equals open_clip's own PIL preprocessing + encode_image on the saved weights."""
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=str(ckpt))
    model.eval()
    images = _images(2, seed=5)
    with th.inference_mode():
        x = th.stack([preprocess(Image.fromarray(i)) for i in images])
        ref = model.encode_image(x, normalize=True).numpy()
        tok = open_clip.get_tokenizer(TINY_CLIP)
        ref_text = model.encode_text(tok(["fold the towel"]), normalize=True).numpy()
    _, emb = base.predict(_batch(images, ["fold the towel"] * 2))
    assert emb is not None
    np.testing.assert_allclose(emb[:, :16], ref, atol=1e-5)
    np.testing.assert_allclose(emb[:, 16:], np.repeat(ref_text, 2, axis=0), atol=1e-5)


def test_text_encoder_called_once_per_instruction(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = ClipBase(TINY_CLIP, str(ckpt), device="cpu")
    encoded: list[int] = []
    real = b.model.encode_text

    def spy(tokens: th.Tensor, normalize: bool = False) -> th.Tensor:
        encoded.append(int(tokens.shape[0]))
        return real(tokens, normalize=normalize)

    monkeypatch.setattr(b.model, "encode_text", spy)
    b.predict(_batch(_images(4), ["fold", "push", "fold", "fold"]))
    b.predict(_batch(_images(2), ["push", "fold"]))
    b.predict(_batch(_images(3), ["open drawer", "fold", "open drawer"]))
    assert sum(encoded) == 3  # three distinct instructions, each through the text tower once
    assert len(encoded) == 2  # and only the calls that had new ones


def test_batch_of_8_equals_8_batches_of_1(base: ClipBase) -> None:
    images = _images(8, seed=1, size=45)
    texts = [f"pick up the {c} block" for c in ("red", "blue", "green") * 3][:8]
    _, e8 = base.predict(_batch(images, texts))
    singles = [base.predict(_batch(images[i : i + 1], texts[i : i + 1]))[1] for i in range(8)]
    np.testing.assert_allclose(e8, np.concatenate(singles), atol=1e-5)  # type: ignore[arg-type]


def test_chw_and_float_images_equal_hwc(base: ClipBase) -> None:
    images = _images(2, seed=2, size=40)
    _, a = base.predict(_batch(images, ["x", "y"]))
    _, b = base.predict(_batch(np.transpose(images, (0, 3, 1, 2)), ["x", "y"]))
    _, c = base.predict(_batch(images.astype(np.float32) / 255.0, ["x", "y"]))
    np.testing.assert_allclose(a, b, atol=1e-6)  # type: ignore[arg-type]
    np.testing.assert_allclose(a, c, atol=1e-5)  # type: ignore[arg-type]


def test_spec_forms_safetensors_dir_and_options(ckpt: Path, tmp_path: Path) -> None:
    st = save_tiny_clip(tmp_path, fmt="safetensors")
    b = make_base(f"clip:{TINY_CLIP}@{st}?include_text=False", device="cpu")
    assert b.embedding_dim == 16
    _, emb = b.predict(_batch(_images(2)))  # no instruction needed without text
    assert emb is not None and emb.shape == (2, 16)
    # a directory in open_clip's hub layout (open_clip_config.json + weights)
    d = tmp_path / "hub_layout"
    d.mkdir()
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG, "preprocess_cfg": {}}))
    (d / "open_clip_model.safetensors").write_bytes(st.read_bytes())
    b2 = make_base(f"clip:{TINY_CLIP}@{d}", device="cpu", include_text=False)
    _, emb2 = b2.predict(_batch(_images(2)))
    np.testing.assert_allclose(emb, emb2, atol=1e-6)  # type: ignore[arg-type]
    # random init for timing
    assert make_base(f"clip:{TINY_CLIP}@random", device="cpu").embedding_dim == 32


def test_errors(base: ClipBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"clip:<model>@<pretrained>"):
        make_base(f"clip:{TINY_CLIP}")
    with pytest.raises(ValueError, match="does not exist"):
        make_base(f"clip:{TINY_CLIP}@/nope/weights.pt")
    with pytest.raises(ValueError, match="not a known pretrained tag|neither a local file"):
        make_base("clip:ViT-B-32@no_such_tag")
    with pytest.raises(ValueError, match="instruction"):
        base.predict(_batch(_images(1)))
    with pytest.raises(KeyError, match="rgb"):
        base.predict(VLABatch(obs={"cam": _images(1)}, env_ids=np.zeros(1, dtype=np.int64)))
    with pytest.raises(ValueError, match="could not build"):
        make_base("clip:No-Such-Model@random")


def test_uncached_tag_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="not cached.*pass the local file"):
        make_base("clip:ViT-B-32@laion2b_s34b_b79k", cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 2.0


def test_missing_open_clip_names_the_extra(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[vla\]"'):
        make_base(f"clip:{TINY_CLIP}@{ckpt}")
