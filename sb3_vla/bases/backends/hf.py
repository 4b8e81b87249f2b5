"""``hf:`` bases: Hugging Face transformers vision-language-action models (OpenVLA-style action tokens).

The model reads an image and an instruction prompt and greedily generates ``action_dim`` tokens (``chunk_size *
action_dim`` for chunked models). As in OpenVLA, actions are discretised into 256 uniform bins over ``[-1, 1]``
mapped onto the *last* tokens of the vocabulary: token ``t`` decodes to ``bin_centers[clip(V - t - 1, 0, 254)]``
with ``V`` the tokenizer's vocabulary size (``text_config.vocab_size - pad_to_multiple_of``), and is then
un-normalised with the dataset's action statistics (``norm_stats[unnorm_key]["action"]``: ``q01``, ``q99`` and an
optional ``mask`` of dims to un-normalise): ``a = 0.5 * (x + 1) * (q99 - q01) + q01``.

``trust_remote_code`` (off by default): some models, OpenVLA among them, ship their own Python modelling and
processing code with the weights (``auto_map`` in ``config.json``, files such as ``modeling_prismatic.py``).
``trust_remote_code=True`` is handed to transformers' ``AutoConfig`` / ``AutoProcessor`` / model
``from_pretrained``, which then import and **run that code** from the model folder or hub repo; for such a model
whose ``auto_map`` has no ``AutoModelForImageTextToText`` entry, the class is taken from its
``AutoModelForVision2Seq`` (else ``AutoModelForCausalLM``) entry. Without it (``False``, the default) only
transformers' built-in architectures load, and a model that needs its own code fails in transformers with an error
asking for ``trust_remote_code=True``. Enable it only for models you trust. Pass it inline in the base spec,
``hf:/models/openvla-7b?unnorm_key=bridge_orig&trust_remote_code=True``, as ``base_kwargs: {trust_remote_code:
true}`` of the ``VLAObservationWrapper`` in YAML, or as ``HFVLABase(..., trust_remote_code=True)``. A run folder
whose saved config opts in is refused by ``sb3_vla.train --resume`` and ``sb3_vla.evaluate`` / ``sb3_vla.record``
unless the command also gets ``--trust-remote-code``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_vla.bases.backends._common import (
    batch_instructions,
    check_hub_available,
    existing_path,
    hub_offline,
    images_to_nhwc_uint8,
    looks_like_hub_id,
    require,
    resolve_device,
    resolve_dtype,
    to_numpy_f32,
)
from sb3_vla.bases.base import BaseModel, VLABatch

OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
EMBEDDINGS = ("vision", "llm", "vision+llm", "none")
_VISION_MODULE_NAMES = ("vision_tower", "vision_backbone", "vision_model", "visual")
#: OpenVLA's Llama-2 tokenizer id of the empty token ('▁') it appends after "Out:" at training time
OPENVLA_EMPTY_TOKEN_ID = 29871


def bin_centers(n_bins: int = 256) -> np.ndarray:
    """Centres of ``n_bins - 1`` uniform bins between ``n_bins`` edges on ``[-1, 1]`` (OpenVLA's discretisation)."""
    edges = np.linspace(-1.0, 1.0, n_bins)
    return (edges[:-1] + edges[1:]) / 2.0


def decode_action_tokens(token_ids: np.ndarray, vocab_size: int, n_bins: int = 256) -> np.ndarray:
    """Map action token ids to normalised actions in ``[-1, 1]``.

    :param token_ids: integer token ids, any shape.
    :param vocab_size: ``V``; the action tokens are ``V - n_bins ... V - 1`` (token ``V - 1`` is the lowest bin).
    :param n_bins: number of bin edges (OpenVLA: 256).
    :return: float64 array of the same shape.

    Example::

        >>> decode_action_tokens(np.array([31999, 31744]), vocab_size=32000)  # doctest: +ELLIPSIS
        array([-0.996...,  0.996...])
    """
    centers = bin_centers(n_bins)
    disc = vocab_size - np.asarray(token_ids, dtype=np.int64)
    disc = np.clip(disc - 1, 0, centers.shape[0] - 1)
    return centers[disc]


def unnormalize_actions(normalized: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """OpenVLA's un-normalisation: ``0.5 * (x + 1) * (q99 - q01) + q01`` on the masked dims (all by default)."""
    low = np.asarray(stats["q01"], dtype=np.float64)
    high = np.asarray(stats["q99"], dtype=np.float64)
    mask = np.asarray(stats.get("mask", np.ones_like(low, dtype=bool)), dtype=bool)
    return np.where(mask, 0.5 * (normalized + 1.0) * (high - low) + low, normalized)


def select_action_stats(norm_stats: dict[str, Any], unnorm_key: str | None) -> dict[str, Any]:
    """Pick ``norm_stats[unnorm_key]["action"]`` (the only dataset when ``unnorm_key`` is ``None``)."""
    if not norm_stats:
        raise ValueError("no dataset statistics (norm_stats) to un-normalise with")
    if unnorm_key is None:
        if len(norm_stats) != 1:
            raise ValueError(
                f"the model has statistics for several datasets; pass unnorm_key=one of {sorted(norm_stats)}"
            )
        unnorm_key = next(iter(norm_stats))
    if unnorm_key not in norm_stats:
        raise ValueError(f"unnorm_key {unnorm_key!r} not in the model's dataset statistics {sorted(norm_stats)}")
    entry = norm_stats[unnorm_key]
    stats = entry.get("action", entry) if isinstance(entry, dict) else None
    if not isinstance(stats, dict) or "q01" not in stats or "q99" not in stats:
        raise ValueError(f"dataset statistics {unnorm_key!r} lack action q01/q99 entries")
    return stats


def _pool_vision_output(out: Any) -> th.Tensor:
    """Mean over tokens (or spatial positions) of a vision tower's last hidden state, float32 ``(B, D)``."""
    x = getattr(out, "last_hidden_state", None)
    if x is None:
        x = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(x, th.Tensor):
        raise TypeError(f"cannot read a hidden state from a vision tower output of type {type(out).__name__}")
    x = x.float()
    if x.ndim == 3:
        return x.mean(dim=1)
    if x.ndim == 4:
        return x.mean(dim=(2, 3))
    return x.reshape(x.shape[0], -1)


class HFVLABase(BaseModel):
    """A frozen Hugging Face VLA (OpenVLA and other image-text-to-action-token models).

    :param model: a local directory (``save_pretrained`` layout) or a hub id that is in the cache (or downloadable).
    :param unnorm_key: which dataset's action statistics to un-normalise with (needed when there are several).
    :param norm_stats: dataset statistics ``{key: {"action": {"q01", "q99", "mask"}}}`` or a JSON file with them;
        default: ``config.norm_stats``, else ``dataset_statistics.json`` in the model directory.
    :param unnormalize: un-normalise actions (else the base acts in the normalised ``[-1, 1]`` space).
    :param action_dim: number of action dims (default: the length of the statistics' ``q01``).
    :param chunk_size: actions per query (``H``); ``chunk_size * action_dim`` tokens are generated.
    :param image_key: observation key of the camera image, uint8 ``(B, H, W, C)`` or ``(B, C, H, W)``.
    :param instruction: default instruction when the env gives none.
    :param prompt: prompt template with ``{instruction}`` (OpenVLA's by default); the processor's image token is
        prepended when the processor has one and the template lacks it (LLaVA-style processors).
    :param lowercase_instruction: lower-case the instruction (OpenVLA was trained that way).
    :param append_token_ids: token ids appended after the prompt; ``"auto"`` appends OpenVLA's empty token 29871
        for ``model_type == "openvla"`` and nothing otherwise.
    :param embedding: ``"vision"`` (mean-pooled last hidden state of the vision tower), ``"llm"`` (last LLM layer),
        ``"vision+llm"`` (both, concatenated) or ``"none"``.
    :param llm_pool: ``"last"`` (the hidden state of the last prompt token) or ``"mean"`` (masked mean).
    :param n_bins: number of action bin edges (OpenVLA: 256).
    :param vocab_size: ``V`` for decoding; default ``text_config.vocab_size - pad_to_multiple_of``.
    :param constrain_to_action_tokens: only let the model generate action tokens (OpenVLA itself does not).
    :param trust_remote_code: let transformers import and run the modelling / processing code shipped with the model
        (OpenVLA needs it); ``False`` by default. It runs code from the model's files: only for models you trust.
        In a spec: ``hf:<model>?trust_remote_code=True`` (see the module docstring).
    :param dtype: ``"auto"`` (bfloat16 on CUDA, float32 on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
    :param quantization: ``None``, ``"4bit"`` or ``"8bit"`` (bitsandbytes; CUDA only).
    :param model_class: a dotted class path overriding the auto class.
    :param attn_implementation: e.g. ``"sdpa"``, ``"flash_attention_2"``.
    :param max_batch_size: split larger batches into forward passes of at most this many rows.
    :param revision: hub revision.
    :param cache_dir: Hugging Face cache directory.

    Example::

        base = HFVLABase("/models/openvla-7b", unnorm_key="bridge_orig", trust_remote_code=True,
                         quantization="4bit", instruction="put the carrot on the plate")
        action, emb = base.predict(VLABatch(obs={"rgb": images}, env_ids=np.arange(len(images))))
        # action.shape == (B, 7), emb.shape == (B, 2176)
    """

    def __init__(
        self,
        model: str | Path,
        unnorm_key: str | None = None,
        norm_stats: dict[str, Any] | str | Path | None = None,
        unnormalize: bool = True,
        action_dim: int | None = None,
        chunk_size: int = 1,
        image_key: str = "rgb",
        instruction: str | None = None,
        prompt: str = OPENVLA_PROMPT,
        lowercase_instruction: bool = True,
        append_token_ids: Sequence[int] | str | None = "auto",
        embedding: str = "vision",
        llm_pool: str = "last",
        n_bins: int = 256,
        vocab_size: int | None = None,
        constrain_to_action_tokens: bool = False,
        trust_remote_code: bool = False,
        dtype: str | th.dtype | None = "auto",
        device: str | th.device = "auto",
        quantization: str | None = None,
        model_class: str | None = None,
        attn_implementation: str | None = None,
        max_batch_size: int | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
        if llm_pool not in ("last", "mean"):
            raise ValueError(f"llm_pool must be 'last' or 'mean', got {llm_pool!r}")
        if "{instruction}" not in prompt:
            raise ValueError(f"prompt must contain '{{instruction}}', got {prompt!r}")
        self.device = resolve_device(device)
        quant_config = self._quantization_config(quantization)
        transformers = require("transformers", "the hf: base")
        require("PIL", "the hf: base")
        self.dtype = resolve_dtype(dtype, self.device)

        source, local_only = self._resolve_source(str(model), cache_dir)
        self.source = source
        load_kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, "cache_dir": cache_dir}
        if revision is not None:
            load_kw["revision"] = revision
        if local_only:
            load_kw["local_files_only"] = True
        try:
            config = transformers.AutoConfig.from_pretrained(source, **load_kw)
            self.processor = transformers.AutoProcessor.from_pretrained(source, **load_kw)
            model_kw: dict[str, Any] = dict(load_kw, config=config, dtype=self.dtype)
            if attn_implementation is not None:
                model_kw["attn_implementation"] = attn_implementation
            if quant_config is not None:
                model_kw["quantization_config"] = quant_config
                model_kw["device_map"] = {"": self.device.index or 0}
            cls = self._model_class(transformers, config, source, model_class, trust_remote_code, load_kw)
            net = cls.from_pretrained(source, **model_kw)
        except OSError as e:
            raise ValueError(
                f"hf:{model}: cannot load the model or its processor ({e}). Pass a local directory holding "
                "config.json, the weights and the processor files (save_pretrained layout)"
            ) from e
        if quant_config is None:
            net = net.to(self.device)
        self.model = net.eval().requires_grad_(False)
        self.config = self.model.config

        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"hf:{model}: the processor has no tokenizer; an image+text processor is needed")
        tokenizer.padding_side = "left"  # generation appends on the right
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.tokenizer = tokenizer

        # ---- action decoding
        text_config = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        self.vocab_size = int(
            vocab_size
            if vocab_size is not None
            else text_config.vocab_size - int(getattr(self.config, "pad_to_multiple_of", 0) or 0)
        )
        self.n_bins = int(n_bins)
        self.norm_stats = self._load_norm_stats(norm_stats, source)
        self.unnormalize = bool(unnormalize)
        if self.unnormalize and not self.norm_stats:
            raise ValueError(
                f"hf:{model}: no dataset statistics to un-normalise actions with (no config.norm_stats, no "
                "dataset_statistics.json); pass norm_stats={...} or a JSON path, or unnormalize=False and action_dim"
            )
        self.action_stats = select_action_stats(self.norm_stats, unnorm_key) if self.unnormalize else None
        if action_dim is None:
            stats_for_dim = self.action_stats
            if stats_for_dim is None and self.norm_stats:
                stats_for_dim = select_action_stats(self.norm_stats, unnorm_key)
            if stats_for_dim is None:
                raise ValueError(f"hf:{model}: no dataset statistics to read the action size from; pass action_dim")
            action_dim = len(stats_for_dim["q01"])
        self.action_dim = int(action_dim)
        self.chunk_size = int(chunk_size)
        if self.action_stats is not None:
            mask = np.asarray(self.action_stats.get("mask", [True] * self.action_dim), dtype=bool)
            q01 = np.asarray(self.action_stats["q01"], dtype=np.float32)
            q99 = np.asarray(self.action_stats["q99"], dtype=np.float32)
            if q01.shape != (self.action_dim,):
                raise ValueError(f"action statistics have {q01.shape} dims, action_dim is {self.action_dim}")
            low, high = np.where(mask, q01, -1.0), np.where(mask, q99, 1.0)
            self.action_space = spaces.Box(np.minimum(low, high), np.maximum(low, high), dtype=np.float32)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, shape=(self.action_dim,), dtype=np.float32)
        self.suppress_tokens: list[int] | None = None
        if constrain_to_action_tokens:
            full = int(text_config.vocab_size)
            first = self.vocab_size - self.n_bins
            self.suppress_tokens = [i for i in range(full) if not first <= i < self.vocab_size]

        # ---- prompt
        self.image_key = image_key
        self.obs_keys = (image_key,)
        self.instruction = instruction
        self.lowercase_instruction = bool(lowercase_instruction)
        image_token = getattr(self.processor, "image_token", None)
        if isinstance(image_token, str) and image_token not in prompt:
            prompt = f"{image_token}\n{prompt}"
        self.prompt = prompt
        if append_token_ids == "auto":
            append_token_ids = [OPENVLA_EMPTY_TOKEN_ID] if getattr(self.config, "model_type", "") == "openvla" else []
        elif isinstance(append_token_ids, str):
            raise ValueError(f"append_token_ids must be 'auto' or a list of ids, got {append_token_ids!r}")
        self.append_token_ids = [int(t) for t in (append_token_ids or [])]
        self.max_batch_size = int(max_batch_size) if max_batch_size else None

        # ---- embedding
        self.embedding = embedding
        self.llm_pool = llm_pool
        self._vision = self._find_vision_module() if "vision" in embedding else None
        self._captured: list[th.Tensor] = []
        if self._vision is not None:
            self._vision.register_forward_hook(self._capture)
        self.embedding_dim = 0
        if embedding != "none":
            probe = VLABatch(
                obs={image_key: np.zeros((1, 224, 224, 3), dtype=np.uint8)},
                instructions=["probe"],
                env_ids=np.zeros(1, dtype=np.int64),
            )
            _, emb = self._predict_rows(probe.obs[image_key], ["probe"])
            self.embedding_dim = int(emb.shape[-1])

    # ------------------------------------------------------------------ loading
    @staticmethod
    def _quantization_config(quantization: str | None) -> Any:
        if quantization in (None, "none", "None"):
            return None
        if quantization not in ("4bit", "8bit"):
            raise ValueError(f"quantization must be None, '4bit' or '8bit', got {quantization!r}")
        if not th.cuda.is_available():
            raise ValueError(
                f"quantization={quantization!r} uses bitsandbytes, which needs a CUDA GPU, and none is available; "
                "load in full precision instead (quantization=None, dtype='float32' or 'bfloat16')"
            )
        require("bitsandbytes", f"quantization={quantization!r}", hint="pip install bitsandbytes")
        transformers = require("transformers", "the hf: base")
        if quantization == "4bit":
            return transformers.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=th.bfloat16
            )
        return transformers.BitsAndBytesConfig(load_in_8bit=True)

    @staticmethod
    def _resolve_source(model: str, cache_dir: str | None) -> tuple[str, bool]:
        """A local directory, or a hub id checked for offline availability; returns ``(source, local_only)``."""
        path = existing_path(model)
        if path is not None:
            if not path.is_dir():
                raise ValueError(f"hf:{model}: expected a model directory, got a file")
            return str(path), False
        if model.startswith((".", "/", "~")) or not looks_like_hub_id(model):
            raise ValueError(f"hf:{model}: no such directory, and it is not a Hugging Face hub id (org/name)")
        cached = check_hub_available(model, "hf:", cache_dir=cache_dir)
        return model, cached and hub_offline()

    @staticmethod
    def _model_class(
        transformers: Any, config: Any, source: str, model_class: str | None, trust_remote_code: bool, kw: dict
    ) -> Any:
        if model_class is not None:
            from sb3_vla.bases.backends.module import import_class

            return import_class(model_class)
        auto_map = getattr(config, "auto_map", None) or {}
        if trust_remote_code and "AutoModelForImageTextToText" not in auto_map:
            # remote-code VLAs written for transformers 4 register under AutoModelForVision2Seq (removed in v5)
            for key in ("AutoModelForVision2Seq", "AutoModelForCausalLM"):
                if key in auto_map:
                    from transformers.dynamic_module_utils import get_class_from_dynamic_module

                    hub_kw = {k: v for k, v in kw.items() if k in ("cache_dir", "revision", "local_files_only")}
                    return get_class_from_dynamic_module(auto_map[key], source, **hub_kw)
        return transformers.AutoModelForImageTextToText

    def _load_norm_stats(self, norm_stats: dict[str, Any] | str | Path | None, source: str) -> dict[str, Any]:
        if isinstance(norm_stats, (str, Path)):
            p = existing_path(norm_stats)
            if p is None:
                raise ValueError(f"norm_stats file {str(norm_stats)!r} does not exist")
            return dict(json.loads(p.read_text()))
        if norm_stats is not None:
            return dict(norm_stats)
        stats = getattr(self.config, "norm_stats", None)
        if stats:
            return dict(stats)
        local = Path(source) / "dataset_statistics.json"
        if local.is_file():
            return dict(json.loads(local.read_text()))
        return {}

    def _find_vision_module(self) -> th.nn.Module:
        best: tuple[int, th.nn.Module] | None = None
        for name, mod in self.model.named_modules():
            if name.rsplit(".", 1)[-1] in _VISION_MODULE_NAMES:
                depth = name.count(".")
                if best is None or depth < best[0]:
                    best = (depth, mod)
        if best is None:
            raise ValueError(
                f"hf:{self.source}: no vision tower found (looked for submodules named {_VISION_MODULE_NAMES}); "
                "use embedding='llm' or 'none'"
            )
        return best[1]

    def _capture(self, module: th.nn.Module, args: Any, output: Any) -> None:
        if not self._captured:  # the first call is the prompt's; later decoding steps do not re-encode images
            self._captured.append(_pool_vision_output(output))

    # ------------------------------------------------------------------ inference
    @property
    def name(self) -> str:
        return f"hf:{self.source}"

    def _prompts(self, instructions: list[str]) -> list[str]:
        return [self.prompt.format(instruction=s.lower() if self.lowercase_instruction else s) for s in instructions]

    def _predict_rows(self, images: np.ndarray, instructions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        pil = [Image.fromarray(img) for img in images_to_nhwc_uint8(images, self.image_key)]
        inputs = self.processor(text=self._prompts(instructions), images=pil, return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) if isinstance(v, th.Tensor) else v for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        if self.append_token_ids:
            ids = inputs["input_ids"]
            extra = th.tensor(self.append_token_ids, device=ids.device, dtype=ids.dtype).expand(ids.shape[0], -1)
            inputs["input_ids"] = th.cat([ids, extra], dim=1)
            if "attention_mask" in inputs:
                mask = inputs["attention_mask"]
                inputs["attention_mask"] = th.cat([mask, th.ones_like(extra, dtype=mask.dtype)], dim=1)
        n_tokens = self.chunk_size * self.action_dim
        want_llm = "llm" in self.embedding
        self._captured.clear()
        with th.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=n_tokens,
                min_new_tokens=n_tokens,
                do_sample=False,
                num_beams=1,
                suppress_tokens=self.suppress_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                output_hidden_states=want_llm,
                return_dict_in_generate=True,
            )
        tokens = out.sequences[:, -n_tokens:].cpu().numpy()
        normalized = decode_action_tokens(tokens, self.vocab_size, self.n_bins)
        normalized = normalized.reshape(len(pil), self.chunk_size, self.action_dim)
        actions = unnormalize_actions(normalized, self.action_stats) if self.action_stats is not None else normalized
        parts = []
        if self._vision is not None:
            if not self._captured:
                raise RuntimeError(f"{self.name}: the vision tower did not run during generation")
            parts.append(self._captured[0])
        if want_llm:
            hidden = out.hidden_states[0][-1].float()  # prompt step, last layer: (B, L, D)
            if self.llm_pool == "last":
                parts.append(hidden[:, -1])
            else:
                mask = inputs.get("attention_mask")
                if mask is None or mask.shape[1] != hidden.shape[1]:
                    raise ValueError(
                        f"{self.name}: llm_pool='mean' needs hidden states aligned with the attention mask "
                        "(this model inserts image tokens itself); use llm_pool='last'"
                    )
                m = mask.to(hidden.dtype)[..., None]
                parts.append((hidden * m).sum(1) / m.sum(1).clamp_min(1.0))
        emb = to_numpy_f32(th.cat(parts, dim=-1)) if parts else np.zeros((len(pil), 0), dtype=np.float32)
        return actions.astype(np.float32), emb

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        if self.image_key not in batch.obs:
            raise KeyError(f"{self.name} needs the observation key {self.image_key!r}; got {sorted(batch.obs)}")
        images = np.asarray(batch.obs[self.image_key])
        b = images.shape[0]
        texts = batch_instructions(batch.instructions, b, self.instruction, self.name)
        step = self.max_batch_size or b
        acts, embs = [], []
        for i in range(0, b, step):
            a, e = self._predict_rows(images[i : i + step], texts[i : i + step])
            acts.append(a)
            embs.append(e)
        action = np.concatenate(acts)
        if self.chunk_size == 1:
            action = action[:, 0]
        return action, (np.concatenate(embs) if self.embedding_dim else None)

    def close(self) -> None:
        del self.model
        if self.device.type == "cuda":
            th.cuda.empty_cache()
