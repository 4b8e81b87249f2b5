"""``clip:`` bases: frozen open_clip image (and instruction text) embeddings, no action.

An embedding-only base supplies ``vla_embedding``; combine it with an action base through
:class:`~sb3_vla.bases.backends.ComposedBase` (spec ``scripted+clip:...``, ``zero+clip:...``).
"""

from __future__ import annotations

import numpy as np
import torch as th

from sb3_vla.bases.backends._common import (
    batch_instructions,
    existing_path,
    hub_offline,
    hub_reachable,
    images_to_nhwc_uint8,
    require,
    resolve_device,
    to_numpy_f32,
)
from sb3_vla.bases.base import BaseModel, VLABatch


class ClipBase(BaseModel):
    """Frozen open_clip encoder: ``vla_embedding = [image_embedding, text_embedding]``, no action.

    The text embedding of each distinct instruction is computed once and cached (instructions rarely change within
    an episode); images are preprocessed as a batch on the model's device with the model's own size and
    mean/std (resize shortest side + centre crop, or squash, as in its preprocessing config).

    :param model_name: an open_clip model name (``"ViT-B-32"``, a config added with ``open_clip.add_model_config``),
        or ``"local-dir:/path"`` / ``"hf-hub:org/repo"``.
    :param pretrained: a pretrained tag (``"laion2b_s34b_b79k"``; needs the weights in the cache or network), a
        local checkpoint file (``.pt``/``.bin``/``.safetensors``), a directory holding one with its
        ``open_clip_config.json``, or ``None`` for random init (timing only).
    :param image_key: observation key holding uint8 images ``(B, H, W, C)`` or ``(B, C, H, W)``.
    :param include_text: append the instruction's text embedding (the embedding is then ``2 * embed_dim``).
    :param instruction: default instruction when the env gives none.
    :param normalize: L2-normalise the embeddings (CLIP's cosine space).
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
    :param precision: open_clip precision (``"fp32"``, ``"bf16"``, ``"amp_bf16"``...); default fp32 on CPU and
        bf16 on CUDA.
    :param cache_dir: open_clip / Hugging Face cache directory for pretrained tags.

    Example::

        base = ClipBase("ViT-B-32", pretrained="/weights/vit_b_32.safetensors", instruction="fold the towel")
        action, emb = base.predict(VLABatch(obs={"rgb": images}, env_ids=np.arange(len(images))))
        # action.shape == (B, 0): no action, emb.shape == (B, 1024)
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        image_key: str = "rgb",
        include_text: bool = True,
        instruction: str | None = None,
        normalize: bool = True,
        device: str | th.device = "auto",
        precision: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        open_clip = require("open_clip", "the clip: base")
        self.device = resolve_device(device)
        if precision is None:
            precision = "bf16" if self.device.type == "cuda" and th.cuda.is_bf16_supported() else "fp32"
        if self.device.type == "cpu" and precision in ("fp16", "pure_fp16"):
            raise ValueError("precision fp16 on CPU is not supported (NaN-prone); use 'fp32' or 'bf16'")
        self.model_name = model_name
        self.pretrained = pretrained
        model_name, pretrained = self._resolve_source(model_name, pretrained, cache_dir)
        try:
            model = open_clip.create_model(
                model_name,
                pretrained=pretrained,
                precision=precision,
                device=self.device,
                cache_dir=cache_dir,
                weights_only=True,
            )
        except RuntimeError as e:
            raise ValueError(
                f"clip:{self.model_name}@{self.pretrained}: could not build the open_clip model ({e}). Use a model "
                "name from open_clip.list_models() (or one added with open_clip.add_model_config) and a pretrained "
                "tag already in the cache or a local checkpoint file"
            ) from e
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        size = cfg.get("size", 224)
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.mean = th.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=self.device)
        self.std = th.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=self.device)
        self.interpolation = cfg.get("interpolation", "bicubic")
        self.resize_mode = cfg.get("resize_mode", "shortest")
        self.dtype = next(self.model.parameters()).dtype

        self.image_key = image_key
        self.include_text = bool(include_text)
        self.instruction = instruction
        self.normalize = bool(normalize)
        self.obs_keys = (image_key,)
        self.action_space = None  # type: ignore[assignment]  # embedding only: combine with an action base
        with th.inference_mode():
            probe = self.model.encode_image(th.zeros(1, 3, *self.image_size, device=self.device, dtype=self.dtype))
        self.embed_dim = int(probe.shape[-1])
        self.embedding_dim = self.embed_dim * (2 if self.include_text else 1)
        self._text_cache: dict[str, th.Tensor] = {}

    @staticmethod
    def _resolve_source(model_name: str, pretrained: str | None, cache_dir: str | None) -> tuple[str, str | None]:
        """Map a directory to open_clip's ``local-dir:`` schema and fail fast for uncached tags when offline."""
        if pretrained:
            path = existing_path(pretrained)
            if path is not None and path.is_dir():
                if (path / "open_clip_config.json").is_file():
                    return f"local-dir:{path}", None
                for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors"):
                    if (path / name).is_file():
                        return model_name, str(path / name)
                raise ValueError(
                    f"clip: directory {str(path)!r} holds neither open_clip_config.json nor an open_clip checkpoint"
                )
            if path is not None:
                return model_name, str(path)
            if "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
                raise ValueError(f"clip:{model_name}@{pretrained}: checkpoint file {pretrained!r} does not exist")
            _check_tag_available(model_name, pretrained, cache_dir)
        return model_name, pretrained

    @property
    def name(self) -> str:
        return f"clip:{self.model_name}@{self.pretrained}"

    def __repr__(self) -> str:
        return f"{self.name}(action=None, embedding_dim={self.embedding_dim})"

    def _preprocess(self, images: np.ndarray) -> th.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as tvf

        x = th.from_numpy(images_to_nhwc_uint8(images, self.image_key)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        interp = InterpolationMode(self.interpolation)
        h, w = self.image_size
        if self.resize_mode == "squash":
            x = tvf.resize(x, [h, w], interpolation=interp, antialias=True)
        elif self.resize_mode == "longest":
            # fit the long side, then pad to the target size with zeros (open_clip's ResizeKeepRatio + pad)
            scale = min(h / x.shape[-2], w / x.shape[-1])
            nh, nw = max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale))
            x = tvf.resize(x, [nh, nw], interpolation=interp, antialias=True)
            top, left = (h - nh) // 2, (w - nw) // 2
            x = th.nn.functional.pad(x, (left, w - nw - left, top, h - nh - top))
        else:  # "shortest": resize the short side, then centre crop
            x = tvf.resize(x, min(h, w), interpolation=interp, antialias=True)
            x = tvf.center_crop(x, [h, w])
        x = (x.clamp_(0.0, 1.0) - self.mean[:, None, None]) / self.std[:, None, None]
        return x.to(self.dtype)

    def encode_images(self, images: np.ndarray) -> th.Tensor:
        """Image embeddings ``(B, embed_dim)`` (float32) of a uint8 image batch."""
        with th.inference_mode():
            return self.model.encode_image(self._preprocess(images), normalize=self.normalize).float()

    def encode_texts(self, texts: list[str]) -> th.Tensor:
        """Text embeddings ``(B, embed_dim)`` (float32); each distinct text runs through the text tower once."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            with th.inference_mode():
                tokens = self.tokenizer(missing).to(self.device)
                emb = self.model.encode_text(tokens, normalize=self.normalize).float()
            self._text_cache.update(zip(missing, emb))
        return th.stack([self._text_cache[t] for t in texts])

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        if self.image_key not in batch.obs:
            raise KeyError(f"{self.name} needs the observation key {self.image_key!r}; got {sorted(batch.obs)}")
        images = batch.obs[self.image_key]
        b = len(images)
        emb = self.encode_images(images)
        if self.include_text:
            texts = batch_instructions(batch.instructions, b, self.instruction, self.name)
            emb = th.cat([emb, self.encode_texts(texts)], dim=-1)
        return np.zeros((b, 0), dtype=np.float32), to_numpy_f32(emb)

    def close(self) -> None:
        self._text_cache.clear()
        del self.model
        if self.device.type == "cuda":
            th.cuda.empty_cache()


def _check_tag_available(model_name: str, tag: str, cache_dir: str | None) -> None:
    """Raise quickly when a pretrained tag would need a download that cannot happen."""
    open_clip = require("open_clip", "the clip: base")
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(
            f"clip:{model_name}@{tag}: {tag!r} is neither a local file nor a known pretrained tag of {model_name} "
            f"(known: {tags})"
        )
    hf_hub = cfg.get("hf_hub", "")
    if hf_hub:
        from huggingface_hub import try_to_load_from_cache

        # hf_hub is "org/repo/" or "org/repo/file"; try the usual file names open_clip downloads
        org, _, rest = hf_hub.partition("/")
        repo, _, filename = rest.partition("/")
        repo_id = f"{org}/{repo}"
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if any(isinstance(try_to_load_from_cache(repo_id, n, cache_dir=cache_dir), str) for n in names):
            return
    reason = "HF_HUB_OFFLINE is set" if hub_offline() else None
    if reason is None and not hub_reachable():
        reason = "the Hugging Face hub cannot be reached"
    if reason:
        raise ValueError(
            f"clip:{model_name}@{tag}: the weights of tag {tag!r} are not cached and {reason}. Download them on a "
            f"machine with network access and pass the local file instead (clip:{model_name}@/path/to/weights.pt)"
        )
