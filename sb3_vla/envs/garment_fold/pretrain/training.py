"""Behaviour cloning of a SmallVLA: the chunk loss and the resumable training loop."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from sb3_vla.envs.garment_fold.pretrain.dataset import DemoData
from sb3_vla.models.small_vla import SmallVLA


def bc_loss(
    model: SmallVLA, obs: dict[str, Any], target: th.Tensor, mask: th.Tensor, pos_weight: float
) -> tuple[th.Tensor, dict[str, float]]:
    """MSE on the normalised joint targets (or offsets) + BCE on the stage-advance logit, masked past episode ends."""
    delta, logit, jpos = model.raw_chunk(obs)
    jd = model.action_dim - 1
    ref = jpos.unsqueeze(1) if model.relative else 0.0
    want = (target[..., :jd] - ref - model.delta_mean) / model.delta_std
    mse = ((delta - want) ** 2).mean(-1)
    bce = th.nn.functional.binary_cross_entropy_with_logits(
        logit, target[..., jd], pos_weight=th.tensor(pos_weight), reduction="none"
    )
    denom = mask.sum().clamp(min=1.0)
    mse_m, bce_m = (mse * mask).sum() / denom, (bce * mask).sum() / denom
    return mse_m + 0.5 * bce_m, {"mse": mse_m.item(), "bce": bce_m.item()}


def fit(
    model: SmallVLA,
    data: DemoData,
    args: argparse.Namespace,
    epochs: int,
    lr: float,
    state_path: Path,
    fingerprint: list[Any],
    log: Any,
    seed_offset: int,
) -> tuple[float, list[dict[str, Any]]]:
    """Train ``model`` on ``data`` for ``epochs`` (AdamW, one-cycle to ``lr``), saving the state every epoch.

    A state at ``state_path`` with the same ``fingerprint`` is resumed (and a finished one only re-loaded). Returns
    the training seconds (summed over resumed invocations) and the per-epoch loss history.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = th.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps_per_epoch = max(1, math.ceil(len(data) / args.batch_size))
    sched = th.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch), pct_start=0.1
    )
    start_epoch, train_s, history = 0, 0.0, []
    rng = np.random.default_rng(args.seed + 7_000_003 * seed_offset)
    if state_path.exists():
        st = th.load(state_path, map_location="cpu", weights_only=False)
        if st.get("fingerprint") == fingerprint:
            model.load_weights(st["model"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            start_epoch, train_s, history = st["epoch"], st["train_s"], st["history"]
            rng = np.random.default_rng(args.seed + 1000 * start_epoch + 7_000_003 * seed_offset)
            log(f"resuming training at epoch {start_epoch} of {epochs} ({state_path.name})")
    for epoch in range(start_epoch, epochs):
        t1 = time.perf_counter()
        model.train()
        if args.freeze_encoder:
            model.encoder.eval()
        perm = rng.permutation(len(data))
        sums = {"loss": 0.0, "mse": 0.0, "bce": 0.0}
        for b in range(steps_per_epoch):
            ix = np.sort(perm[b * args.batch_size : (b + 1) * args.batch_size])
            if len(ix) == 0:
                continue
            obs = data.batch(ix, model, args.shift, rng)
            loss, parts = bc_loss(
                model, obs, th.as_tensor(data.targets[ix]), th.as_tensor(data.mask[ix]), args.pos_weight
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            th.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            sums["loss"] += loss.item()
            sums["mse"] += parts["mse"]
            sums["bce"] += parts["bce"]
        train_s += time.perf_counter() - t1
        row = {k: round(v / steps_per_epoch, 5) for k, v in sums.items()}
        history.append({"epoch": epoch + 1, **row})
        log(f"epoch {epoch + 1}/{epochs}: {row} ({time.perf_counter() - t1:.0f} s)")
        tmp = state_path.with_suffix(".tmp")
        th.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "epoch": epoch + 1,
                "train_s": train_s,
                "history": history,
                "fingerprint": fingerprint,
            },
            tmp,
        )
        os.replace(tmp, state_path)
    return train_s, history
