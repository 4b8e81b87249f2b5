"""The demonstrations in memory (per-step action-chunk targets) and the statistics a SmallVLA takes from them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from sb3_vla.envs.garment_fold.pretrain.rollouts import STATE_KEYS
from sb3_vla.models.small_vla import GARMENT_FOLD_HAND_DIMS, SmallVLA


class DemoData:
    """Demonstration steps in memory with per-step chunk targets (padded chunks are masked)."""

    def __init__(self, files: Sequence[Path], horizon: int) -> None:
        eps = [dict(np.load(f)) for f in files]
        if not eps:
            raise ValueError("no demonstrations to train on (all episodes failed? try --keep-failed or more --demos)")
        self.rgb = np.concatenate([e["rgb"] for e in eps])
        self.state = {k: np.concatenate([e[k] for e in eps]).astype(np.float32) for k in STATE_KEYS}
        self.instruction = np.concatenate([e["instruction"] for e in eps]).astype(np.int64)
        actions = np.concatenate([e["action"] for e in eps]).astype(np.float32)
        n = len(actions)
        # chunk index (n, H): step t + k of the same episode, clipped at its end (masked there)
        idx, mask = np.zeros((n, horizon), dtype=np.int64), np.zeros((n, horizon), dtype=np.float32)
        start = 0
        for e in eps:
            length = len(e["action"])
            t = np.arange(length)[:, None] + np.arange(horizon)[None, :]
            mask[start : start + length] = t < length
            idx[start : start + length] = start + np.minimum(t, length - 1)
            start += length
        self.targets = actions[idx]  # (n, H, A)
        self.mask = mask
        self.n_episodes = len(eps)

    def __len__(self) -> int:
        return len(self.instruction)

    def state_vector(self, keys: Sequence[str]) -> np.ndarray:
        return np.concatenate([self.state[k].reshape(len(self), -1) for k in keys], axis=1)

    def batch(self, ix: np.ndarray, model: SmallVLA, shift: int, rng: np.random.Generator) -> dict[str, Any]:
        rgb = th.as_tensor(self.rgb[ix]).permute(0, 3, 1, 2)
        if shift > 0:  # random-shift augmentation (DrQ): pad by replication, crop back at a random offset
            padded = th.nn.functional.pad(rgb.float(), (shift,) * 4, mode="replicate")
            h, w = rgb.shape[-2:]
            offs = rng.integers(0, 2 * shift + 1, size=(len(ix), 2))
            rgb = th.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offs)]).to(th.uint8)
        obs: dict[str, Any] = {model.image_key: rgb}
        for k in model.state_keys:
            obs[k] = th.as_tensor(self.state[k][ix])
        obs[model.instruction_key] = th.as_tensor(self.instruction[ix])
        return obs


def set_normalisation(model: SmallVLA, data: DemoData) -> None:
    """Set the model's state and joint-target (or offset) statistics from the demonstrations."""
    s = data.state_vector(model.state_keys)
    model.state_mean.copy_(th.as_tensor(s.mean(0)))
    model.state_std.copy_(th.as_tensor(np.maximum(s.std(0), 1e-2)))
    jd = model.action_dim - 1
    delta = data.targets[:, :, :jd] - (data.state["joint_pos"][:, None, :jd] if model.relative else 0.0)
    valid = data.mask.astype(bool)
    model.delta_mean.copy_(th.as_tensor(delta[valid].mean(0)))
    model.delta_std.copy_(th.as_tensor(np.maximum(delta[valid].std(0), 1e-2)))


def set_hand_snap(model: SmallVLA, data: DemoData) -> list[int]:
    """Snap each GarmentFold hand to the hand targets the demonstrations use (returns how many per hand).

    The scripted folder commands each 24-joint hand either open or pinched; regressing the 24 targets leaves the
    hand between the two (a weak pinch that loses the cloth), so the model outputs the nearest demonstrated posture.
    """
    valid = data.mask.astype(bool)
    if [tuple(g) for g in model.snap_groups] != list(GARMENT_FOLD_HAND_DIMS):
        raise ValueError(
            f"the model's snap groups {model.snap_groups} are not GarmentFold's hands; pass --no-snap-hands"
        )
    values = []
    for dims in GARMENT_FOLD_HAND_DIMS:
        vals = np.unique(data.targets[valid][:, list(dims)], axis=0)
        if len(vals) > model.snap_count:
            raise ValueError(
                f"the demonstrations use {len(vals)} distinct targets for the hand dims {dims[0]}..{dims[-1]} "
                f"(the model snaps to at most {model.snap_count}): not the folder's two postures; pass --no-snap-hands"
            )
        values.append(vals.tolist())
    model.set_snap(values)
    return [len(v) for v in values]
