"""``hf:`` backend: OpenVLA-style action-token decoding on a tiny real LLaVA saved with ``save_pretrained``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th

pytest.importorskip("transformers")

from _tiny_models import NORM_STATS, save_tiny_llava, tiny_vocab

from sb3_vla.bases import VLABatch, make_base
from sb3_vla.bases.backends.hf import (
    HFVLABase,
    decode_action_tokens,
    select_action_stats,
    unnormalize_actions,
)

INSTRUCTIONS = [
    "pick up the red block",
    "fold the towel",
    "open drawer",
    "put it on the plate",
    "push button",
    "close drawer",
    "pick up the blue cube",
    "fold cloth",
]
CENTERS = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2  # OpenVLA's 255 bin centres


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def base(llava_dir: Path) -> HFVLABase:
    return HFVLABase(llava_dir, unnorm_key="toy_a", embedding="vision+llm", device="cpu")


def _images(n: int, seed: int = 0, shape: tuple[int, int] = (40, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape, 3), dtype=np.uint8)


def _batch(images: np.ndarray, instructions: list[str] | None) -> VLABatch:
    return VLABatch(obs={"rgb": images}, instructions=instructions, env_ids=np.arange(len(images)))


def test_decode_action_tokens_hand_values() -> None:
    # centre k = -1 + (2k + 1) / 255; token t -> k = clip(V - t - 1, 0, 254): V-1 is the lowest bin, V-256 and
    # V-255 the highest, V-128 the centre bin 127 (= 0.0); non-action tokens clip to an end bin
    tokens = np.array([31999, 31744, 31745, 31872, 31871, 5, 32000])
    got = decode_action_tokens(tokens, vocab_size=32000)
    step = 1.0 / 255.0
    expected = [-1 + step, 1 - step, 1 - step, 0.0, 2 * step, 1 - step, -1 + step]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_unnormalize_hand_values() -> None:
    stats = NORM_STATS["toy_a"]["action"]  # q01 [-1, 0, 10], q99 [1, 2, 20], mask [T, T, F]
    x = np.array([[-1.0, 0.0, 0.5], [0.5, 1.0, -0.25]])
    np.testing.assert_allclose(unnormalize_actions(x, stats), [[-1.0, 1.0, 0.5], [0.5, 2.0, -0.25]])
    # no mask: every dim is un-normalised
    np.testing.assert_allclose(unnormalize_actions(np.array([0.0]), {"q01": [10.0], "q99": [20.0]}), [15.0])


def test_select_action_stats_errors() -> None:
    with pytest.raises(ValueError, match="unnorm_key=one of"):
        select_action_stats(NORM_STATS, None)
    with pytest.raises(ValueError, match="not in the model's dataset statistics"):
        select_action_stats(NORM_STATS, "bridge_orig")
    assert select_action_stats({"only": NORM_STATS["toy_b"]}, None)["q99"] == [0.5, 0.5, 0.5]


def test_shapes_spaces_and_embedding(base: HFVLABase) -> None:
    assert base.obs_keys == ("rgb",)
    assert base.action_space.shape == (3,)
    np.testing.assert_allclose(base.action_space.low, [-1.0, 0.0, -1.0])  # unmasked dim stays in [-1, 1]
    np.testing.assert_allclose(base.action_space.high, [1.0, 2.0, 1.0])
    assert base.embedding_dim == 32 + 32  # vision hidden + LLM hidden
    action, emb = base.predict(_batch(_images(3), INSTRUCTIONS[:3]))
    assert action.shape == (3, 3) and action.dtype == np.float32
    assert emb is not None and emb.shape == (3, 64) and emb.dtype == np.float32
    assert np.all(np.isfinite(emb))
    assert np.all(action >= base.action_space.low - 1e-6) and np.all(action <= base.action_space.high + 1e-6)


def test_actions_match_generate_decoded_by_hand(base: HFVLABase, llava_dir: Path) -> None:
    """Independent pipeline: processor + greedy generate with plain transformers, decoded with the formula."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    images, texts = _images(4, seed=1), INSTRUCTIONS[:4]
    processor = AutoProcessor.from_pretrained(llava_dir)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(llava_dir, dtype=th.float32).eval()
    prompts = [f"<image>\nIn: What action should the robot take to {t}?\nOut:" for t in texts]
    inputs = processor(text=prompts, images=[Image.fromarray(i) for i in images], return_tensors="pt", padding=True)
    with th.inference_mode():
        seq = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    tokens = seq[:, -3:].numpy()
    vocab = len(tiny_vocab())
    normalized = CENTERS[np.clip(vocab - tokens - 1, 0, 254)]
    q01, q99 = np.array([-1.0, 0.0, 10.0]), np.array([1.0, 2.0, 20.0])
    expected = np.where([True, True, False], 0.5 * (normalized + 1) * (q99 - q01) + q01, normalized)

    action, _ = base.predict(_batch(images, texts))
    np.testing.assert_allclose(action, expected, atol=1e-6)


def test_batch_of_8_equals_8_batches_of_1(base: HFVLABase) -> None:
    images = _images(8, seed=2)
    a8, e8 = base.predict(_batch(images, INSTRUCTIONS))
    singles = [base.predict(_batch(images[i : i + 1], INSTRUCTIONS[i : i + 1])) for i in range(8)]
    np.testing.assert_allclose(a8, np.concatenate([a for a, _ in singles]), atol=1e-6)
    np.testing.assert_allclose(e8, np.concatenate([e for _, e in singles]), atol=1e-4)


def test_max_batch_size_and_chw_images(base: HFVLABase) -> None:
    images = _images(5, seed=3)
    a, e = base.predict(_batch(images, INSTRUCTIONS[:5]))
    base.max_batch_size = 2
    try:
        a2, e2 = base.predict(_batch(np.transpose(images, (0, 3, 1, 2)), INSTRUCTIONS[:5]))
    finally:
        base.max_batch_size = None
    np.testing.assert_allclose(a, a2, atol=1e-6)
    np.testing.assert_allclose(e, e2, atol=1e-4)


def test_constrained_decoding_hand_value(tmp_path: Path) -> None:
    """With the final norm zeroed every logit is 0; restricted to action tokens, greedy picks the first one,
    token V-256, i.e. bin 254 (1 - 1/255), un-normalised by hand with toy_a's statistics."""
    from transformers import AutoModelForImageTextToText

    d = save_tiny_llava(tmp_path / "zero")
    model = AutoModelForImageTextToText.from_pretrained(d)
    for name, p in model.named_parameters():
        if name.endswith("language_model.norm.weight"):
            p.data.zero_()
    model.save_pretrained(d)
    b = HFVLABase(d, unnorm_key="toy_a", constrain_to_action_tokens=True, embedding="none", device="cpu")
    action, emb = b.predict(_batch(_images(2), INSTRUCTIONS[:2]))
    c = 1 - 1 / 255
    expected = [0.5 * (c + 1) * 2 - 1, 0.5 * (c + 1) * 2 + 0, c]
    np.testing.assert_allclose(action, [expected, expected], atol=1e-6)
    assert emb is None and b.embedding_dim == 0


def test_options_via_spec_chunks_and_stats(llava_dir: Path) -> None:
    b = make_base(f"hf:{llava_dir}?unnorm_key=toy_b&chunk_size=2&embedding=llm&llm_pool=mean", device="cpu")
    assert b.chunk_size == 2 and b.embedding_dim == 32
    np.testing.assert_allclose(b.action_space.low, -0.5)
    action, emb = b.predict(_batch(_images(3), INSTRUCTIONS[:3]))
    assert action.shape == (3, 2, 3) and emb is not None and emb.shape == (3, 32)
    assert np.all(np.abs(action) <= 0.5)
    raw = make_base(f"hf:{llava_dir}", unnormalize=False, action_dim=3, embedding="none", device="cpu")
    np.testing.assert_allclose(raw.action_space.low, -1.0)
    # default instruction when the env gives none
    d = make_base(f"hf:{llava_dir}", unnorm_key="toy_a", embedding="none", instruction="fold the towel")
    a1, _ = d.predict(_batch(_images(1), None))
    a2, _ = d.predict(_batch(_images(1), ["fold the towel"]))
    np.testing.assert_array_equal(a1, a2)


def test_norm_stats_from_dataset_statistics_json(tmp_path: Path) -> None:
    import json

    d = save_tiny_llava(tmp_path / "nostats", norm_stats=None)
    with pytest.raises(ValueError, match="no dataset statistics"):
        HFVLABase(d, embedding="none", device="cpu")
    with pytest.raises(ValueError, match="pass action_dim"):
        HFVLABase(d, unnormalize=False, embedding="none", device="cpu")
    (d / "dataset_statistics.json").write_text(json.dumps({"toy_b": NORM_STATS["toy_b"]}))
    b = HFVLABase(d, embedding="none", device="cpu")
    np.testing.assert_allclose(b.action_space.high, 0.5)


def test_errors(base: HFVLABase, llava_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unnorm_key=one of"):
        HFVLABase(llava_dir, embedding="none", device="cpu")
    with pytest.raises(KeyError, match="rgb"):
        base.predict(VLABatch(obs={"cam": _images(1)}, env_ids=np.zeros(1, dtype=np.int64)))
    with pytest.raises(ValueError, match="instruction"):
        base.predict(_batch(_images(1), None))
    with pytest.raises(ValueError, match="no such directory"):
        make_base("hf:./does/not/exist")
    with pytest.raises(ValueError, match="embedding must be one of"):
        HFVLABase(llava_dir, embedding="pooled")
    with pytest.raises(TypeError, match="unknown option"):
        make_base(f"hf:{llava_dir}?unnorm_keys=toy_a")


@pytest.mark.skipif(th.cuda.is_available(), reason="checks the CPU-only error")
def test_4bit_without_cuda_fails_fast(llava_dir: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        make_base(f"hf:{llava_dir}?quantization=4bit")
    assert time.perf_counter() - t0 < 1.0


def test_uncached_hub_id_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="pass the local path"):
        make_base("hf:openvla/openvla-7b", cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 2.0


def test_uncached_hub_id_without_network_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="cannot be reached"):
        make_base("hf:openvla/openvla-7b", cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 5.0


def test_missing_transformers_names_the_extra(llava_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[vla\]"'):
        make_base(f"hf:{llava_dir}")
