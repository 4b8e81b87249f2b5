"""A small vision-language-action model of our own, trained by behaviour cloning.

Trained by ``python -m sb3_vla.envs.garment_fold.pretrain`` (GarmentFold-v0 demonstrations and DAgger).

:class:`SmallVLA` maps a 128x128 RGB image, the stage instruction and the proprioception of GarmentFold-v0 to an
action chunk ``(B, H, 61)``: a compact CNN with a spatial-softmax head (image -> 2-D feature points), a learned
token embedding of the instruction (the known instructions map to ids, anything else to a fallback id), and the
normalised state vector go through an MLP trunk whose output is the embedding (``embed(obs)``, used as
``vla_embedding``); one linear action head maps it to the chunk. Joint targets are predicted in normalised units
(absolute, or as offsets from the current joint positions with ``relative=True``); the stage-advance dim is a
probability in ``[0, 1]``.

It follows the ``module:`` backend's protocol (``forward(obs) -> action``, ``embed(obs) -> (B, D)``), so both
``--base small-vla:garment_fold`` (the shipped weights) and
``--base module:sb3_vla.models.small_vla.SmallVLA@<weights.pt>?instruction_key=instruction`` load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch as th
from torch import nn

#: the GarmentFold-v0 stage instructions, in stage order; their token ids are their indices
GARMENT_FOLD_INSTRUCTIONS = (
    "fold the left sleeve onto the body",
    "fold the right sleeve onto the body",
    "fold the bottom half of the shirt onto the top half",
)
#: id of an unknown (or missing) instruction; the model then falls back on the ``stage`` observation
FALLBACK_ID = len(GARMENT_FOLD_INSTRUCTIONS)
#: the non-image observation keys read by default, with the scale applied before the learned normalisation
DEFAULT_STATE_KEYS = ("joint_pos", "joint_vel", "held", "stage", "keypoints")
JOINT_DIMS = 60
#: GarmentFold's hand joints (24 per side, after each side's 6 arm joints): the scripted folder only ever commands
#: two postures per hand (open, pinch), so the model can snap each hand's prediction to the nearest demonstrated one
GARMENT_FOLD_HAND_DIMS = (tuple(range(6, 30)), tuple(range(36, 60)))


def instruction_ids(instructions: Sequence[str] | None, n: int, vocab: Sequence[str]) -> th.Tensor:
    """Token ids ``(n,)`` of the instructions: their index in ``vocab``, else ``len(vocab)`` (the fallback id)."""
    index = {s.strip().lower(): i for i, s in enumerate(vocab)}
    if instructions is None:
        return th.full((n,), len(vocab), dtype=th.long)
    ids = [index.get(str(s).strip().lower(), len(vocab)) for s in instructions]
    if len(ids) != n:
        raise ValueError(f"got {len(ids)} instructions for a batch of {n} observations")
    return th.tensor(ids, dtype=th.long)


class SpatialSoftmax(nn.Module):
    """Expected 2-D image coordinates of each channel's softmax ``(B, C, H, W) -> (B, 2C)``, in ``[-1, 1]``."""

    def forward(self, x: th.Tensor) -> th.Tensor:
        b, c, h, w = x.shape
        att = th.softmax(x.flatten(2), dim=-1).view(b, c, h, w)
        ys = th.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = th.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        ex = (att.sum(dim=2) * xs).sum(dim=-1)
        ey = (att.sum(dim=3) * ys).sum(dim=-1)
        return th.cat([ex, ey], dim=1)


class SmallVLA(nn.Module):
    """Compact CNN + instruction embedding + proprioception -> action chunk, for GarmentFold-v0.

    :param action_dim: action size ``A`` (61 for GarmentFold: 60 normalised joint targets + stage advance).
    :param horizon: the chunk length ``H`` the model is trained to predict.
    :param exec_horizon: how many actions of the chunk ``forward`` returns (``<= horizon``); a base re-queries the
        model when they run out.
    :param image_key: the RGB observation key, uint8 ``(B, H, W, 3)`` or ``(B, 3, H, W)``.
    :param image_size: the image side the model expects (other sizes are resized).
    :param state_keys: the non-image observation keys concatenated into the state vector.
    :param state_dim: total size of those keys (149 for the GarmentFold defaults).
    :param instruction_key: key of the instruction strings in ``obs`` (a list of str); when absent, the
        instruction id comes from the one-hot ``stage`` observation, else the fallback id.
    :param vocab: the known instructions (token ids are their indices).
    :param channels: CNN channels per layer; :param keypoints_2d: feature points of the spatial softmax.
    :param text_dim: instruction embedding size; :param hidden: trunk hidden size; :param embedding_dim: trunk
        output size (the ``vla_embedding``).
    :param relative: predict joint targets as offsets from the current ``joint_pos`` (precise near the data; off
        it a biased offset integrates towards the joint limits) instead of absolute normalised targets.
    :param snap_groups: groups of joint dims of equal size (default: GarmentFold's two hands when ``action_dim`` is
        61) whose predicted targets can be replaced by the nearest (L2) of up to ``snap_count`` allowed vectors per
        group in the returned actions (training regresses them as usual). Off until :meth:`set_snap` gives the
        vectors (e.g. the demonstrated open and pinch postures); they are buffers, saved in the state dict.
    :param snap_count: the number of allowed vectors per group.

    Example::

        >>> model = SmallVLA().eval()
        >>> obs = {"rgb": th.zeros(8, 128, 128, 3, dtype=th.uint8), "joint_pos": th.zeros(8, 60),
        ...        "joint_vel": th.zeros(8, 60), "held": th.zeros(8, 2), "stage": th.zeros(8, 3),
        ...        "keypoints": th.zeros(8, 24), "instruction": ["fold the left sleeve onto the body"] * 8}
        >>> with th.inference_mode():
        ...     chunk, emb = model(obs), model.embed(obs)
        >>> tuple(chunk.shape), tuple(emb.shape)  # (B, exec_horizon, 61), (B, embedding_dim)
        ((8, 2, 61), (8, 256))
    """

    state_mean: th.Tensor
    state_std: th.Tensor
    delta_mean: th.Tensor
    delta_std: th.Tensor
    snap_index: th.Tensor
    snap_values: th.Tensor
    snap_on: th.Tensor

    def __init__(
        self,
        action_dim: int = 61,
        horizon: int = 4,
        exec_horizon: int = 2,
        image_key: str = "rgb",
        image_size: int = 128,
        state_keys: Sequence[str] = DEFAULT_STATE_KEYS,
        state_dim: int = 149,
        instruction_key: str = "instruction",
        vocab: Sequence[str] = GARMENT_FOLD_INSTRUCTIONS,
        channels: Sequence[int] = (16, 32, 64, 64),
        keypoints_2d: int = 64,
        text_dim: int = 32,
        hidden: int = 512,
        embedding_dim: int = 256,
        relative: bool = True,
        snap_groups: Sequence[Sequence[int]] | None = None,
        snap_count: int = 2,
    ) -> None:
        super().__init__()
        if not 1 <= exec_horizon <= horizon:
            raise ValueError(f"exec_horizon must be in [1, horizon={horizon}], got {exec_horizon}")
        if len(channels) != 4:
            raise ValueError(f"channels must have 4 entries, got {tuple(channels)}")
        self.action_dim = int(action_dim)
        self.horizon = int(horizon)
        self.exec_horizon = int(exec_horizon)
        self.image_key = image_key
        self.image_size = int(image_size)
        self.state_keys = tuple(state_keys)
        self.state_dim = int(state_dim)
        self.instruction_key = instruction_key
        self.vocab = tuple(vocab)
        self.embedding_dim = int(embedding_dim)
        self.relative = bool(relative)
        c1, c2, c3, c4 = (int(c) for c in channels)
        # 128 -> 31 -> 14 -> 6 -> 6: the first strided layer keeps the CPU cost low (~10 M MACs per image).
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c1, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c3, keypoints_2d, 3, padding=1),
            SpatialSoftmax(),
        )
        self.text = nn.Embedding(len(self.vocab) + 1, text_dim)
        # data statistics of the state and of the joint targets (of target - joint_pos when relative), set by pretrain
        self.register_buffer("state_mean", th.zeros(self.state_dim))
        self.register_buffer("state_std", th.ones(self.state_dim))
        self.register_buffer("delta_mean", th.zeros(self.action_dim - 1))
        self.register_buffer("delta_std", th.ones(self.action_dim - 1))
        self.trunk = nn.Sequential(
            nn.Linear(2 * keypoints_2d + text_dim + self.state_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, self.embedding_dim),
            nn.LayerNorm(self.embedding_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.embedding_dim, self.horizon * self.action_dim)
        self._last: tuple[Any, th.Tensor] | None = None
        if snap_groups is None:
            snap_groups = GARMENT_FOLD_HAND_DIMS if self.action_dim == JOINT_DIMS + 1 else ()
        self.snap_groups = [[int(i) for i in g] for g in snap_groups]
        size = len(self.snap_groups[0]) if self.snap_groups else 0
        if any(len(g) != size or not all(0 <= i < self.action_dim - 1 for i in g) for g in self.snap_groups):
            raise ValueError(f"snap groups need equal sizes and joint dims < {self.action_dim - 1}: {self.snap_groups}")
        self.snap_count = int(snap_count)
        self.register_buffer(
            "snap_index", th.as_tensor(self.snap_groups, dtype=th.long).reshape(len(self.snap_groups), size)
        )
        self.register_buffer("snap_values", th.zeros(len(self.snap_groups), self.snap_count, size))
        self.register_buffer("snap_on", th.zeros(()))

    def set_snap(self, values: Sequence[Sequence[Sequence[float]]]) -> None:
        """Turn snapping on: per snap group, the allowed vectors (1 to ``snap_count`` of ``len(group)`` values)."""
        if len(values) != len(self.snap_groups):
            raise ValueError(
                f"need allowed vectors for each of the {len(self.snap_groups)} snap groups, got {len(values)}"
            )
        for i, (g, v) in enumerate(zip(self.snap_groups, values)):
            t = th.as_tensor(v, dtype=th.float32)
            if t.ndim != 2 or t.shape[1] != len(g) or not 1 <= len(t) <= self.snap_count:
                raise ValueError(
                    f"snap group {i}: need 1 to {self.snap_count} vectors of {len(g)} values, got {tuple(t.shape)}"
                )
            t = th.cat([t, t[-1:].expand(self.snap_count - len(t), -1)])  # pad by repeating (nearest is unchanged)
            self.snap_values[i].copy_(t)
        self.snap_on.fill_(1.0)

    # ------------------------------------------------------------------------------------------------ inputs
    def _image(self, obs: dict[str, Any]) -> th.Tensor:
        if self.image_key not in obs:
            raise KeyError(f"SmallVLA needs the image key {self.image_key!r}; got {sorted(obs)} (use rgb_obs=True)")
        img = th.as_tensor(obs[self.image_key])
        if img.ndim != 4:
            raise ValueError(f"image {self.image_key!r} must be (B, H, W, 3) or (B, 3, H, W), got {tuple(img.shape)}")
        if img.shape[-1] == 3 and img.shape[1] != 3:
            img = img.permute(0, 3, 1, 2)
        x = img.float()
        if img.dtype == th.uint8:
            x = x / 255.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear")
        return x - 0.5

    def _state(self, obs: dict[str, Any]) -> th.Tensor:
        parts = []
        for k in self.state_keys:
            if k not in obs:
                raise KeyError(f"SmallVLA needs the observation key {k!r}; got {sorted(obs)}")
            v = th.as_tensor(obs[k]).float()
            parts.append(v.reshape(v.shape[0], -1))
        s = th.cat(parts, dim=1)
        if s.shape[1] != self.state_dim:
            raise ValueError(
                f"state keys {self.state_keys} give {s.shape[1]} values, the model expects {self.state_dim}"
            )
        return (s - self.state_mean) / self.state_std

    def _text_ids(self, obs: dict[str, Any], n: int) -> th.Tensor:
        instructions = obs.get(self.instruction_key)
        if isinstance(instructions, th.Tensor):  # pre-computed ids (training)
            return instructions.long()
        if instructions is not None:
            ids = instruction_ids(list(instructions), n, self.vocab)
        elif "stage" in obs:  # no strings passed (e.g. module: without instruction_key): the stage names them
            ids = th.as_tensor(obs["stage"]).float().argmax(dim=-1)
        else:
            ids = th.full((n,), FALLBACK_ID, dtype=th.long)
        return ids.to(self.text.weight.device)

    # ------------------------------------------------------------------------------------------------ model
    def features(self, obs: dict[str, Any]) -> tuple[th.Tensor, th.Tensor]:
        """Return ``(embedding (B, D), joint_pos (B, 60))``."""
        img = self._image(obs).to(self.text.weight.device)
        state = self._state(obs).to(img.device)
        z = th.cat([self.encoder(img), self.text(self._text_ids(obs, img.shape[0])), state], dim=1)
        jpos = th.as_tensor(obs["joint_pos"]).float().to(img.device).reshape(img.shape[0], -1)[:, :JOINT_DIMS]
        return self.trunk(z), jpos

    def raw_chunk(self, obs: dict[str, Any]) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Raw outputs ``(normalised joint targets/offsets (B, H, 60), advance logits (B, H), joint_pos (B, 60))``."""
        emb, jpos = self.features(obs)
        out = self.head(emb).view(-1, self.horizon, self.action_dim)
        return out[..., : self.action_dim - 1], out[..., -1], jpos

    def predict_chunk(self, obs: dict[str, Any]) -> th.Tensor:
        """The full predicted chunk ``(B, H, A)`` in action units (joint targets in [-1, 1], advance in [0, 1])."""
        return self._chunk(*self.features(obs))

    def _chunk(self, emb: th.Tensor, jpos: th.Tensor) -> th.Tensor:
        out = self.head(emb).view(-1, self.horizon, self.action_dim)
        delta, logit = out[..., : self.action_dim - 1], out[..., -1]
        joints = delta * self.delta_std + self.delta_mean
        if self.relative:
            joints = joints + jpos.unsqueeze(1)
        joints = joints.clamp(-1.0, 1.0)
        if self.snap_on.item() > 0.5:
            for idx, values in zip(self.snap_index, self.snap_values):
                part = joints[..., idx]  # (B, H, D) -> the nearest allowed vector
                nearest = th.cdist(part.reshape(-1, len(idx)), values.to(part.dtype)).argmin(-1)
                joints = joints.index_copy(-1, idx, values.to(part.dtype)[nearest].view(part.shape))
        return th.cat([joints, th.sigmoid(logit).unsqueeze(-1)], dim=-1)

    def forward(self, obs: dict[str, Any]) -> th.Tensor:
        """The first ``exec_horizon`` actions of the chunk, ``(B, exec_horizon, A)``."""
        emb, jpos = self.features(obs)
        if not self.training and not th.is_grad_enabled():
            # a base calls forward(obs) then embed(obs) on the same dict: keep the features for embed
            self._last = (obs, emb)
        return self._chunk(emb, jpos)[:, : self.exec_horizon]

    def embed(self, obs: dict[str, Any]) -> th.Tensor:
        """The trunk output (the input of the linear action head), ``(B, embedding_dim)``."""
        last = getattr(self, "_last", None)
        self._last = None
        if last is not None and last[0] is obs and not self.training:
            return last[1]
        return self.features(obs)[0]

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Everything but the action head: the CNN, the instruction embedding and the trunk."""
        return [p for n, p in self.named_parameters() if not n.startswith("head.")]

    def config(self) -> dict[str, Any]:
        """The constructor arguments (saved next to the weights)."""
        enc = self.encoder
        return {
            "action_dim": self.action_dim,
            "horizon": self.horizon,
            "exec_horizon": self.exec_horizon,
            "image_key": self.image_key,
            "image_size": self.image_size,
            "state_keys": list(self.state_keys),
            "state_dim": self.state_dim,
            "instruction_key": self.instruction_key,
            "vocab": list(self.vocab),
            "channels": [enc[0].out_channels, enc[2].out_channels, enc[4].out_channels, enc[6].in_channels],
            "keypoints_2d": enc[6].out_channels,
            "text_dim": self.text.embedding_dim,
            "hidden": self.trunk[0].out_features,
            "embedding_dim": self.embedding_dim,
            "relative": self.relative,
            "snap_groups": [list(g) for g in self.snap_groups],
            "snap_count": self.snap_count,
        }

    def load_weights(self, state_dict: dict[str, th.Tensor]) -> None:
        """``load_state_dict``, accepting files written before the snap buffers existed (snapping stays as is)."""
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        if unexpected or set(missing) - {"snap_index", "snap_values", "snap_on"}:
            raise ValueError(f"state dict does not fit SmallVLA: missing {missing}, unexpected {unexpected}")


def save_small_vla(model: SmallVLA, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Save ``{"state_dict", "config", "meta"}`` with ``torch.save`` (loadable with ``weights_only=True``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    th.save({"state_dict": state, "config": model.config(), "meta": dict(meta or {})}, path)
    return path


def load_small_vla(path: str | Path, **overrides: Any) -> SmallVLA:
    """Build a :class:`SmallVLA` from a file written by :func:`save_small_vla` (config ``overrides`` win).

    Example::

        >>> from sb3_vla.models import SHIPPED
        >>> model = load_small_vla(SHIPPED["garment_fold"], exec_horizon=1).eval()  # sb3_vla/assets/garment_fold_vla.pt
        >>> model.horizon, model.exec_horizon
        (4, 1)
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"SmallVLA weights {str(path)!r} do not exist")
    ckpt = th.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a SmallVLA checkpoint (expected keys 'state_dict', 'config')")
    config = {"relative": True, **dict(ckpt.get("config") or {}), **overrides}  # older files: relative
    model = SmallVLA(**config)
    model.load_weights(ckpt["state_dict"])
    return model


def checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` dict saved with the weights (training data, success rate ...)."""
    ckpt = th.load(Path(path), map_location="cpu", weights_only=True)
    return dict(ckpt.get("meta") or {})


def count_parameters(model: nn.Module) -> int:
    """Number of parameters."""
    return int(sum(p.numel() for p in model.parameters()))
