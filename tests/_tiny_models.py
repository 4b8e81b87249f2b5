"""Tiny real models for the backend tests, built in seconds on CPU and saved to a temporary directory.

Nothing here is downloaded: the open_clip config is registered with ``open_clip.add_model_config``, the LLaVA has a
tiny CLIP vision tower and a tiny Llama with a word-level tokenizer, the SB3 policies train for a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

TINY_CLIP = "TinyCLIP-sb3vla-test"
TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_clip(directory: Path) -> str:
    """Write the tiny open_clip config into ``directory``, register it, and return its model name."""
    import open_clip

    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(directory)
    return TINY_CLIP


def save_tiny_clip(directory: Path, seed: int = 0, fmt: str = "pt") -> Path:
    """Build the tiny CLIP with random weights and save its state dict (``.pt`` or ``.safetensors``)."""
    import open_clip

    name = register_tiny_clip(directory / "configs")
    th.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    path = directory / f"tiny_clip.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        th.save(model.state_dict(), path)
    return path


# ------------------------------------------------------------------------------------------------ tiny LLaVA
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
_SENTENCES = (
    "in : what action should the robot take to pick up the red blue green block cube ? out put it on plate",
    "fold cloth towel open drawer close push button",
)
WORDS = [w for sentence in _SENTENCES for w in sentence.split(" ")]
N_BINS = 256
NORM_STATS = {
    "toy_a": {"action": {"q01": [-1.0, 0.0, 10.0], "q99": [1.0, 2.0, 20.0], "mask": [True, True, False]}},
    "toy_b": {"action": {"q01": [-0.5, -0.5, -0.5], "q99": [0.5, 0.5, 0.5]}},
}


def tiny_vocab() -> list[str]:
    words = list(dict.fromkeys(WORDS))
    return SPECIALS + words + [f"<act_{i}>" for i in range(N_BINS)]


def save_tiny_llava(directory: Path, seed: int = 0, norm_stats: dict[str, Any] | None = NORM_STATS) -> Path:
    """A LlavaForConditionalGeneration (2-layer CLIP vision 32x32 + 2-layer Llama, hidden 32) and its processor.

    The vocabulary is word-level; its last 256 ids are the action tokens, as in OpenVLA. ``norm_stats`` go in the
    config like OpenVLA's.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    vocab_list = tiny_vocab()
    vocab = {w: i for i, w in enumerate(vocab_list)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=16,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=16
    )
    text = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(vocab_list),
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        max_position_embeddings=128,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=vocab["<image>"])
    if norm_stats is not None:
        config.norm_stats = norm_stats
    th.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


# ------------------------------------------------------------------------------------------------ nn.Module base
class TinyPolicy(th.nn.Module):
    """``forward(obs) -> action`` from ``obs["state"]`` and a mean-pooled ``obs["rgb"]``; ``embed(obs)`` too."""

    def __init__(self, state_dim: int = 3, action_dim: int = 2, hidden: int = 8, chunk: int = 1) -> None:
        super().__init__()
        self.chunk = chunk
        self.action_dim = action_dim
        self.body = th.nn.Sequential(th.nn.Linear(state_dim + 3, hidden), th.nn.Tanh())
        self.head = th.nn.Linear(hidden, action_dim * chunk)

    def embed(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        rgb = obs["rgb"].float().mean(dim=(1, 2)) / 255.0  # (B, H, W, 3) -> (B, 3)
        return self.body(th.cat([obs["state"], rgb], dim=-1))

    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        out = self.head(self.embed(obs))
        return out.view(-1, self.chunk, self.action_dim) if self.chunk > 1 else out


# ------------------------------------------------------------------------------------------------ tiny Dict env
class TinyDictEnv(gym.Env):
    """``{"state": (3,)}`` (+ ``rgb`` uint8 (8, 8, 3), + ``vla_action`` when ``residual``); reward -|a - target|."""

    def __init__(self, residual: bool = False, rgb: bool = False, rgb_size: int = 8) -> None:
        obs: dict[str, spaces.Space] = {"state": spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)}
        if rgb:
            obs["rgb"] = spaces.Box(0, 255, shape=(rgb_size, rgb_size, 3), dtype=np.uint8)
        if residual:
            obs["vla_action"] = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.residual = residual
        self._t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        obs = {}
        for k, sp in self.observation_space.spaces.items():
            if k == "rgb":
                obs[k] = self.np_random.integers(0, 256, sp.shape, dtype=np.uint8)
            else:
                obs[k] = self.np_random.uniform(-1, 1, sp.shape).astype(np.float32)
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._last = self._obs()
        return self._last, {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        reward = -float(np.abs(np.asarray(action) - self._last["state"][:2]).sum())
        self._t += 1
        self._last = self._obs()
        return self._last, reward, False, self._t >= 20, {}


def train_tiny_sb3(
    path: Path, algo: str = "sac", residual: bool = False, steps: int = 64, seed: int = 0, rgb_size: int = 0
) -> Path:
    """Train a tiny MultiInputPolicy on :class:`TinyDictEnv` for a few steps and save it as a zip.

    With ``rgb_size`` (>= 36 for SB3's NatureCNN) the env also has an HWC ``rgb`` image.
    """
    from stable_baselines3 import PPO, SAC

    path.parent.mkdir(parents=True, exist_ok=True)
    env = TinyDictEnv(residual=residual, rgb=rgb_size > 0, rgb_size=max(rgb_size, 8))
    kw: dict[str, Any] = dict(policy_kwargs=dict(net_arch=[16]), seed=seed, device="cpu")
    if algo == "sac":
        model: Any = SAC("MultiInputPolicy", env, learning_starts=16, buffer_size=200, batch_size=16, **kw)
    else:
        model = PPO("MultiInputPolicy", env, n_steps=32, batch_size=16, n_epochs=1, **kw)
    model.learn(steps)
    model.save(path)
    return Path(f"{path}.zip") if not str(path).endswith(".zip") else path
