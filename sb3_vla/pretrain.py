"""Train a :class:`~sb3_vla.models.small_vla.SmallVLA` by behaviour cloning on the env's scripted demonstrations.

Usage::

    python -m sb3_vla.pretrain --env GarmentFold-v0 --demos 200 --out DIR [--epochs E] [--seed S] [--eval-episodes K]
        [--dagger-rounds R] [--dagger-episodes M] [--dagger-beta B]
    python -m sb3_vla.pretrain --env GarmentFold-v0 --demos 20 --out DIR --freeze-encoder --init CKPT  # Strategy 2

Steps: (1) collect ``--demos`` episodes of the env's privileged scripted controller (``env.unwrapped.
scripted_action()``, perception noise ``--noise`` m) with the rendered 128x128 RGB, the instruction and the
proprioception, keeping only successful episodes unless ``--keep-failed``; (2) train by behaviour cloning (MSE on
the normalised joint targets of an action chunk, BCE on the stage-advance dim); (2b) DAgger: ``--dagger-rounds``
rounds, each rolling out the current model closed loop (with probability ``beta`` per step the folder's action
instead, beta decaying per round) on ``--dagger-episodes`` seeded episodes, labelling every visited state with
the folder's action, adding them to the data and fine-tuning on the aggregate; (3) evaluate the model
closed loop (its own actions) on ``--eval-episodes`` seeded episodes; (4) write ``DIR/NAME.pt`` (state dict +
config + metadata, loadable with ``torch.load(weights_only=True)``) and the model card ``DIR/NAME.md``.

Demonstrations, DAgger episodes, the training states (saved every epoch) and per-episode evaluation results go
to ``--work-dir`` (default ``DIR/NAME_work``); re-running the same command resumes from them. Demo collection,
DAgger rollouts and evaluation run in ``--workers`` subprocesses. With ``--snap-hands`` (default) each GarmentFold
hand outputs the nearest hand posture the demonstrations use (see :func:`set_hand_snap`).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from sb3_vla.models.small_vla import (
    GARMENT_FOLD_HAND_DIMS,
    GARMENT_FOLD_INSTRUCTIONS,
    JOINT_DIMS,
    SmallVLA,
    count_parameters,
    load_small_vla,
    save_small_vla,
)

#: seed offsets: demos use ``seed * SEED_STRIDE + i``, evaluation ``seed * SEED_STRIDE + EVAL_OFFSET + i``
SEED_STRIDE = 100_000
EVAL_OFFSET = 50_000
#: DAgger round r rolls out seeds ``seed * SEED_STRIDE + DAGGER_OFFSET + 1000 * r + i``
DAGGER_OFFSET = 20_000
#: the model after each DAgger round (and the BC model) is validated on ``seed * SEED_STRIDE + VAL_OFFSET + i``
VAL_OFFSET = 60_000
#: DAgger defaults (the default command ships the model in sb3_vla/assets)
DAGGER_ROUNDS = 1
DAGGER_EPISODES = 40
DAGGER_EPOCHS = 10
DAGGER_LR = 5e-4
DAGGER_BETA = 0.5
DAGGER_EVAL_EPISODES = 20
DART_RHO = 0.8  # autocorrelation of the demo action noise per step
STATE_KEYS = ("joint_pos", "joint_vel", "held", "stage", "keypoints")

_WORKER: dict[tuple[Any, ...], Any] = {}


# ---------------------------------------------------------------------------------------------------- envs
def make_env(env_id: str, noise: float, image_size: int = 128, max_episode_steps: int | None = None) -> Any:
    """The env with the RGB observation (GarmentFold-v0 kwargs: ``rgb_obs``, ``image_size``, ``scripted_noise``)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    import sb3_vla  # noqa: F401 - registers the envs

    # the folder labels states other policies visited (DAgger): judge its progress from where the hands really are
    kwargs: dict[str, Any] = {
        "rgb_obs": True,
        "image_size": image_size,
        "scripted_noise": noise,
        "scripted_command_frame": False,
    }
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    return gym.make(env_id, **kwargs)


def _worker_env(env_id: str, noise: float, image_size: int, max_steps: int | None) -> Any:
    key = ("env", env_id, noise, image_size, max_steps)
    if key not in _WORKER:
        th.set_num_threads(1)
        _WORKER[key] = make_env(env_id, noise, image_size, max_steps)
    return _WORKER[key]


def _worker_model(weights: str, exec_horizon: int | None = None) -> SmallVLA:
    """The SmallVLA at ``weights`` (reloaded when the file changes), cached per worker process."""
    key = ("model", weights, os.path.getmtime(weights), exec_horizon)
    if key not in _WORKER:
        overrides = {} if exec_horizon is None else {"exec_horizon": exec_horizon}
        _WORKER[key] = load_small_vla(weights, **overrides).eval()
    return _WORKER[key]


def _query_chunk(model: SmallVLA, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
    """The model's action chunk ``(exec_horizon, 61)`` for one observation."""
    batch: dict[str, Any] = {k: th.as_tensor(obs[k][None]) for k in ("rgb", *model.state_keys)}
    batch[model.instruction_key] = [info["instruction"]]
    with th.inference_mode():
        return model(batch)[0].numpy()


def _record_obs(rec: dict[str, list[Any]], obs: dict[str, Any], info: dict[str, Any]) -> None:
    rec["rgb"].append(obs["rgb"])
    for k in STATE_KEYS:
        rec[k].append(obs[k])
    rec["instruction"].append(GARMENT_FOLD_INSTRUCTIONS.index(info["instruction"]))


def _save_episode(path: str, rec: dict[str, list[Any]], **scalars: Any) -> dict[str, np.ndarray]:
    """Stack ``rec`` and write it with ``scalars`` to ``path`` (npz) atomically; return the arrays."""
    arrays = {k: np.stack(v) for k, v in rec.items()}
    arrays.update({k: np.array(v) for k, v in scalars.items()})
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return arrays


def collect_episode(
    env_id: str,
    seed: int,
    noise: float,
    path: str,
    image_size: int = 128,
    max_steps: int | None = None,
    action_noise: float = 0.0,
) -> dict[str, Any]:
    """Run one scripted episode and save it as ``path`` (npz: rgb, state keys, instruction ids, actions).

    With ``action_noise`` > 0 the executed joint targets get Gaussian noise (normalised units) while the recorded
    label stays the scripted action (DART): the closed-loop folder shows how to recover from the states a
    slightly-off policy visits.
    """
    env = _worker_env(env_id, noise, image_size, max_steps)
    obs, info = env.reset(seed=seed)
    act_rng = np.random.default_rng(seed + 7919)
    drift = np.zeros(JOINT_DIMS)
    rec: dict[str, list[Any]] = {k: [] for k in ("rgb", *STATE_KEYS, "instruction", "action")}
    ret, success, done = 0.0, False, False
    while not done:
        action = np.asarray(env.unwrapped.scripted_action(), dtype=np.float32)
        _record_obs(rec, obs, info)
        rec["action"].append(action)
        executed = action.copy()
        if action_noise > 0:  # AR(1) noise (stationary std action_noise): slow drifts, not just jitter
            drift = DART_RHO * drift + math.sqrt(1 - DART_RHO**2) * act_rng.normal(0.0, action_noise, JOINT_DIMS)
            executed[:JOINT_DIMS] += drift.astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(executed)
        ret += float(reward)
        success = success or bool(info.get("is_success", False))
        done = terminated or truncated
    _save_episode(path, rec, success=success, ret=ret)
    return {"seed": seed, "success": success, "steps": len(rec["action"]), "return": ret}


def evaluate_episode(
    env_id: str,
    seed: int,
    weights: str,
    image_size: int = 128,
    max_steps: int | None = None,
    exec_horizon: int | None = None,
) -> dict[str, Any]:
    """Run the model closed loop for one seeded episode (executing ``exec_horizon`` actions per query)."""
    env = _worker_env(env_id, 0.0, image_size, max_steps)
    model = _worker_model(weights, exec_horizon)
    obs, info = env.reset(seed=seed)
    ret, steps, success, done = 0.0, 0, False, False
    stages = 0
    while not done:
        for action in _query_chunk(model, obs, info):
            obs, reward, terminated, truncated, info = env.step(action)
            ret += float(reward)
            steps += 1
            success = success or bool(info.get("is_success", False))
            stages = max(stages, int(np.sum(info.get("stage_complete", 0))))
            done = terminated or truncated
            if done:
                break
    return {"seed": seed, "success": success, "steps": steps, "return": ret, "stages_complete": stages}


def dagger_episode(
    env_id: str,
    seed: int,
    weights: str,
    path: str,
    noise: float,
    beta: float,
    image_size: int = 128,
    max_steps: int | None = None,
    sync: bool = True,
) -> dict[str, Any]:
    """Roll out the model at ``weights`` closed loop and save the scripted folder's label of every visited state.

    Each step executes the model's action (its chunk re-queried every ``exec_horizon`` steps) or, with
    probability ``beta``, the folder's action (a DAgger mixture policy); the recorded ``action`` is always the
    folder's (``env.unwrapped.scripted_action()``, perception noise ``noise`` m), queried at every step so its
    state machine follows the visited states: its phase transitions read the simulator (hand positions, which hand
    holds the cloth), not the commands it issued, and with ``sync`` :meth:`ScriptedFolder.follow` moves its phase on to
    what the executed actions already achieved. Saved like a demonstration (npz at ``path``) plus ``executed``
    (the actions run) and ``expert_executed`` (per step, whether the folder's action was run).
    """
    env = _worker_env(env_id, noise, image_size, max_steps)
    model = _worker_model(weights)
    obs, info = env.reset(seed=seed)
    mix_rng = np.random.default_rng(seed + 104729)
    rec: dict[str, list[Any]] = {k: [] for k in ("rgb", *STATE_KEYS, "instruction", "action", "executed")}
    rec["expert_executed"] = []
    chunk: list[np.ndarray] = []
    ret, success, done, stages = 0.0, False, False, 0
    while not done:
        if sync:
            env.unwrapped.folder.follow(info.get("stage_complete"))
        label = np.asarray(env.unwrapped.scripted_action(), dtype=np.float32)
        if not chunk:
            chunk = list(_query_chunk(model, obs, info))
        learner = chunk.pop(0)
        expert = bool(beta > 0 and mix_rng.random() < beta)
        executed = label if expert else learner.astype(np.float32)
        _record_obs(rec, obs, info)
        rec["action"].append(label)
        rec["executed"].append(executed)
        rec["expert_executed"].append(expert)
        obs, reward, terminated, truncated, info = env.step(executed)
        ret += float(reward)
        success = success or bool(info.get("is_success", False))
        stages = max(stages, int(np.sum(info.get("stage_complete", 0))))
        done = terminated or truncated
    arrays = _save_episode(path, rec, success=success, ret=ret, beta=beta)
    n_expert = int(arrays["expert_executed"].sum())
    return {
        "seed": seed,
        "success": success,
        "steps": len(rec["action"]),
        "return": ret,
        "stages_complete": stages,
        "expert_steps": n_expert,
    }


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


def _run_jobs(fn: Any, jobs: list[tuple[Any, ...]], workers: int, log: Any) -> list[dict[str, Any]]:
    if not jobs:
        return []
    results = []
    if workers <= 1:
        for i, job in enumerate(jobs):
            results.append(fn(*job))
            log(f"  {i + 1}/{len(jobs)}: {results[-1]}")
        return results
    with _pool(workers) as pool:
        for i, r in enumerate(pool.map(fn, *zip(*jobs))):
            results.append(r)
            log(f"  {i + 1}/{len(jobs)}: {r}")
    return results


# ---------------------------------------------------------------------------------------------------- data
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


# ---------------------------------------------------------------------------------------------------- main
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sb3_vla.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="GarmentFold-v0", help="env id with env.unwrapped.scripted_action()")
    p.add_argument("--demos", type=int, default=200, help="demonstration episodes to collect")
    p.add_argument("--out", required=True, help="output directory for NAME.pt and NAME.md")
    p.add_argument("--name", default="small_vla", help="file stem of the weights and the model card")
    p.add_argument("--work-dir", default=None, help="demos, training state, eval results (default OUT/NAME_work)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0, help="demos use seeds S*1e5+i, evaluation S*1e5+5e4+i")
    p.add_argument("--noise", type=float, default=0.01, help="scripted folder's perception noise (m) for demos")
    p.add_argument(
        "--action-noise", type=float, default=0.0, help="DART: Gaussian noise on the executed demo joint targets"
    )
    p.add_argument("--keep-failed", action="store_true", help="also train on episodes the scripted folder failed")
    p.add_argument("--eval-episodes", type=int, default=50, help="closed-loop evaluation episodes (0: skip)")
    p.add_argument("--freeze-encoder", action="store_true", help="train only the action head (needs --init)")
    p.add_argument("--init", default=None, help="initial weights (a .pt written by this command)")
    p.add_argument("--horizon", type=int, default=4, help="action chunk length H")
    p.add_argument("--exec-horizon", type=int, default=2, help="actions of each chunk executed per query")
    p.add_argument("--absolute", action="store_true", help="predict absolute joint targets, not offsets from joint_pos")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--shift", type=int, default=4, help="random-shift image augmentation (pixels)")
    p.add_argument("--pos-weight", type=float, default=5.0, help="BCE weight of stage-advance positives")
    p.add_argument("--max-episode-steps", type=int, default=None, help="episode cap (default: the env's)")
    p.add_argument("--workers", type=int, default=2, help="subprocesses for demo collection and evaluation")
    p.add_argument(
        "--snap-hands",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="output the nearest demonstrated hand posture for each GarmentFold hand (default: on)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (1 is fastest on a busy CPU)")
    p.add_argument(
        "--dagger-rounds", type=int, default=DAGGER_ROUNDS, help="DAgger rounds after the BC fit (0: BC only)"
    )
    p.add_argument("--dagger-episodes", type=int, default=DAGGER_EPISODES, help="rollout episodes per DAgger round")
    p.add_argument(
        "--dagger-epochs", type=int, default=DAGGER_EPOCHS, help="fine-tuning epochs on the aggregate per round"
    )
    p.add_argument("--dagger-lr", type=float, default=DAGGER_LR, help="peak learning rate of each DAgger fine-tune")
    p.add_argument(
        "--dagger-beta", type=float, default=DAGGER_BETA, help="round 1 probability of executing the folder's action"
    )
    p.add_argument("--dagger-beta-decay", type=float, default=0.5, help="beta of round r: beta * decay**(r-1)")
    p.add_argument(
        "--dagger-eval-episodes",
        type=int,
        default=DAGGER_EVAL_EPISODES,
        help="closed-loop validation episodes of the BC model and of the model after each DAgger round (0: none)",
    )
    args = p.parse_args(argv)
    if args.freeze_encoder and not args.init:
        p.error("--freeze-encoder fine-tunes the action head of an existing model: pass --init CKPT")
    if args.demos < 1:
        p.error("--demos must be >= 1")
    if args.dagger_rounds < 0 or not 1 <= args.dagger_episodes <= 1000 or args.dagger_epochs < 1:
        p.error("need --dagger-rounds >= 0, 1 <= --dagger-episodes <= 1000, --dagger-epochs >= 1")
    if not 0.0 <= args.dagger_beta <= 1.0:
        p.error("--dagger-beta must be in [0, 1]")
    return args


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate ``k / n``."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the pipeline; returns the metadata saved with the weights."""
    args = parse_args(argv)
    out = Path(args.out)
    work = Path(args.work_dir) if args.work_dir else out / f"{args.name}_work"
    (work / "demos").mkdir(parents=True, exist_ok=True)
    (work / "eval").mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    log_path = work / "log.txt"

    def log(msg: str) -> None:
        line = f"[{datetime.datetime.now():%H:%M:%S}] {msg}"
        print(line, flush=True)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    th.set_num_threads(max(1, args.threads))
    th.manual_seed(args.seed)

    # (1) demonstrations (resumable: one file per episode)
    t0 = time.perf_counter()
    demo_seeds = [args.seed * SEED_STRIDE + i for i in range(args.demos)]
    tag = f"n{args.noise:g}" + (f"_a{args.action_noise:g}" if args.action_noise > 0 else "")
    files = {s: work / "demos" / f"ep_{tag}_{s}.npz" for s in demo_seeds}
    todo = [
        (args.env, s, args.noise, str(files[s]), 128, args.max_episode_steps, args.action_noise) for s in demo_seeds
    ]
    todo = [j for j in todo if not files[j[1]].exists()]
    log(f"collecting {len(todo)} of {args.demos} demos (noise {args.noise} m) with {args.workers} workers")
    _run_jobs(collect_episode, todo, args.workers, log)
    n_collected = len(todo)
    collect_s = time.perf_counter() - t0
    succ = {s: bool(np.load(files[s])["success"]) for s in demo_seeds}
    kept = [s for s in demo_seeds if succ[s] or args.keep_failed]
    n_succ = sum(succ.values())
    log(f"scripted success {n_succ}/{args.demos}; training on {len(kept)} episodes")
    data = DemoData([files[s] for s in kept], args.horizon)
    log(f"{len(data)} steps in memory ({data.rgb.nbytes / 1e6:.0f} MB of images)")

    # (2) behaviour cloning (resumable: the training state is saved every epoch)
    if args.init:
        model = load_small_vla(args.init, horizon=args.horizon, exec_horizon=args.exec_horizon)
    else:
        model = SmallVLA(horizon=args.horizon, exec_horizon=args.exec_horizon, relative=not args.absolute)
        set_normalisation(model, data)
    if args.freeze_encoder:
        for p in model.encoder_parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    fingerprint: list[Any] = [args.demos, args.noise, args.seed, args.horizon, args.epochs, args.freeze_encoder]
    fingerprint += [args.init] + ([args.action_noise] if args.action_noise > 0 else [])
    fingerprint += ["absolute"] if args.absolute else []
    train_s, history = fit(model, data, args, args.epochs, args.lr, work / "train_state.pt", fingerprint, log, 0)
    snap: list[Any] = []
    if args.snap_hands:  # inference only: the training above regresses the hand targets as usual
        snap = ["snap_hands", *set_hand_snap(model, data)]
        log(f"hands snap to the demonstrated postures ({snap[1:]} per hand)")

    # (2b) DAgger (resumable: one file per rollout episode, the training state of each round saved every epoch)
    dagger_rounds: list[dict[str, Any]] = []
    dagger_files: list[Path] = []
    (work / "dagger").mkdir(exist_ok=True)
    dfp = [*fingerprint, "dagger", args.dagger_episodes, args.dagger_epochs, args.dagger_lr, args.dagger_beta]
    dfp += [args.dagger_beta_decay, args.exec_horizon, "sync_folder_v2", *snap]
    n_demo_steps, dagger_s = len(data), 0.0
    val_seeds = [args.seed * SEED_STRIDE + VAL_OFFSET + i for i in range(args.dagger_eval_episodes)]

    def validate(rnd: int, tag: str) -> int | None:
        """Closed-loop successes of the current model on the validation seeds (cached per episode)."""
        if not val_seeds or not args.dagger_rounds:
            return None
        path = work / "dagger" / f"model_{tag}_r{rnd}.pt"
        vfiles = {s: work / "dagger" / f"val_{tag}_r{rnd}_{s}.json" for s in val_seeds}
        vjobs = [(args.env, s, str(path), 128, args.max_episode_steps) for s in val_seeds if not vfiles[s].exists()]
        if vjobs:
            save_small_vla(model.eval(), path)
            log(f"validating the model after DAgger round {rnd} on {len(vjobs)} of {len(val_seeds)} episodes")
        for r in _run_jobs(evaluate_episode, vjobs, args.workers, log):
            vfiles[r["seed"]].write_text(json.dumps(r))
        return sum(bool(json.loads(vfiles[s].read_text())["success"]) for s in val_seeds)

    val_bc = validate(0, hashlib.sha1(repr([*fingerprint, args.exec_horizon, *snap]).encode()).hexdigest()[:8])
    for rnd in range(1, args.dagger_rounds + 1):
        t3 = time.perf_counter()
        beta = args.dagger_beta * args.dagger_beta_decay ** (rnd - 1)
        rtag = hashlib.sha1(repr([*dfp, rnd]).encode()).hexdigest()[:8]
        policy = work / "dagger" / f"policy_{rtag}_r{rnd}.pt"
        save_small_vla(model, policy)  # the policy this round rolls out (workers load it from disk)
        seeds = [args.seed * SEED_STRIDE + DAGGER_OFFSET + 1000 * rnd + i for i in range(args.dagger_episodes)]
        dfiles = {s: work / "dagger" / f"ep_{rtag}_r{rnd}_{s}.npz" for s in seeds}
        jobs: list[tuple[Any, ...]] = [
            (args.env, s, str(policy), str(dfiles[s]), args.noise, beta, 128, args.max_episode_steps, True)
            for s in seeds
            if not dfiles[s].exists()
        ]
        log(f"DAgger round {rnd}/{args.dagger_rounds}: rolling out {len(jobs)} of {len(seeds)} episodes, beta {beta:g}")
        _run_jobs(dagger_episode, jobs, args.workers, log)
        # rollout time summed over the invocations that collected this round's episodes
        times = work / "dagger" / f"rollout_s_{rtag}_r{rnd}.json"
        rollout_s = json.loads(times.read_text()) if times.exists() else 0.0
        if jobs:
            rollout_s += time.perf_counter() - t3
            times.write_text(json.dumps(rollout_s))
        dagger_s += rollout_s
        succ_r = [bool(np.load(dfiles[s])["success"]) for s in seeds]
        dagger_files += [dfiles[s] for s in seeds]
        del data
        data = DemoData([files[s] for s in kept] + dagger_files, args.horizon)
        log(f"DAgger round {rnd}: rollout success {sum(succ_r)}/{len(seeds)}; aggregate {len(data)} steps")
        r_s, r_hist = fit(
            model,
            data,
            args,
            args.dagger_epochs,
            args.dagger_lr,
            work / "dagger" / f"train_{rtag}_r{rnd}.pt",
            [*dfp, rnd],
            log,
            rnd,
        )
        train_s += r_s
        history += [{"round": rnd, **h} for h in r_hist]
        dagger_rounds.append(
            {
                "round": rnd,
                "beta": beta,
                "rollout_seeds": [seeds[0], seeds[-1]],
                "rollout_episodes": len(seeds),
                "rollout_successes": int(sum(succ_r)),
                "rollout_s": round(rollout_s, 1),
                "aggregate_steps": len(data),
                "train_s": round(r_s, 1),
                "final_loss": r_hist[-1] if r_hist else None,
                "val_successes": validate(rnd, rtag),
            }
        )
    model.eval()

    weights = out / f"{args.name}.pt"
    meta: dict[str, Any] = {
        "env": args.env,
        "command": "python -m sb3_vla.pretrain " + " ".join(sys.argv[1:] if argv is None else list(argv)),
        "demos": args.demos,
        "demo_seeds": [demo_seeds[0], demo_seeds[-1]],
        "demo_noise_m": args.noise,
        "demo_action_noise": args.action_noise,
        "demos_collected_now": n_collected,
        "scripted_success": n_succ,
        "episodes_trained": len(kept),
        "steps_trained": n_demo_steps,
        "keep_failed": bool(args.keep_failed),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "freeze_encoder": bool(args.freeze_encoder),
        "init": args.init,
        "collect_s": round(collect_s, 1),
        "train_s": round(train_s, 1),
        "final_loss": history[-1] if history else None,
        "parameters": count_parameters(model),
        "trainable_parameters": int(sum(p.numel() for p in params)),
        "torch_threads": args.threads,
        "snap_hands": bool(args.snap_hands),
        "dagger": {
            "rounds": args.dagger_rounds,
            "episodes_per_round": args.dagger_episodes,
            "epochs_per_round": args.dagger_epochs,
            "lr": args.dagger_lr,
            "beta": args.dagger_beta,
            "beta_decay": args.dagger_beta_decay,
            "label_noise_m": args.noise,
            "steps": len(data) - n_demo_steps,
            "aggregate_steps": len(data),
            "rollout_s": round(dagger_s, 1),
            "val_episodes": len(val_seeds),
            "val_seeds": [val_seeds[0], val_seeds[-1]] if val_seeds else [],
            "val_successes_bc": val_bc,
            "per_round": dagger_rounds,
        },
    }
    save_small_vla(model, weights, meta)

    # (3) closed-loop evaluation (resumable: one result file per episode)
    eval_seeds = [args.seed * SEED_STRIDE + EVAL_OFFSET + i for i in range(args.eval_episodes)]
    # results belong to this training run and execution horizon
    efp = [*fingerprint, args.exec_horizon, *snap] + ([*dfp, args.dagger_rounds] if args.dagger_rounds else [])
    etag = hashlib.sha1(repr(efp).encode()).hexdigest()[:8]
    efiles = {s: work / "eval" / f"ep_{etag}_{s}.json" for s in eval_seeds}
    jobs = [(args.env, s, str(weights), 128, args.max_episode_steps) for s in eval_seeds if not efiles[s].exists()]
    t2 = time.perf_counter()
    log(f"evaluating {len(jobs)} of {len(eval_seeds)} episodes closed loop")
    for r in _run_jobs(evaluate_episode, jobs, args.workers, log):
        efiles[r["seed"]].write_text(json.dumps(r))
    results = [json.loads(efiles[s].read_text()) for s in eval_seeds]
    k = sum(r["success"] for r in results)
    n = len(results)
    meta.update(
        {
            "eval_s": round(time.perf_counter() - t2, 1),
            "eval_episodes": n,
            "eval_seeds": [eval_seeds[0], eval_seeds[-1]] if eval_seeds else [],
            "eval_successes": int(k),
            "success_rate": k / n if n else None,
            "success_ci95": list(wilson(k, n)),
            "mean_stages_complete": float(np.mean([r["stages_complete"] for r in results])) if n else None,
            "mean_episode_steps": float(np.mean([r["steps"] for r in results])) if n else None,
            "mean_return": float(np.mean([r["return"] for r in results])) if n else None,
        }
    )
    save_small_vla(model, weights, meta)
    card = out / f"{args.name}.md"
    card.write_text(model_card(model, meta, history, weights))
    log(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) and {card}; success {k}/{n}")
    return meta


def model_card(model: SmallVLA, meta: dict[str, Any], history: list[dict[str, Any]], weights: Path) -> str:
    """The markdown model card."""
    cfg = model.config()
    n, k = meta["eval_episodes"], meta["eval_successes"]
    if n:
        lo, hi = meta["success_ci95"]
        s0, s1 = meta["eval_seeds"]
        success = (
            f"**{k}/{n} = {100 * k / n:.0f}%** episode success (95% Wilson CI {100 * lo:.0f}-{100 * hi:.0f}%) over "
            f"the seeded episodes `{s0}..{s1}` (`env.reset(seed=s)`), closed loop on the model's own actions "
            f"({cfg['exec_horizon']} of each {cfg['horizon']}-step chunk executed per query); mean stages "
            f"complete {meta['mean_stages_complete']:.2f} / 3, mean episode length {meta['mean_episode_steps']:.0f} "
            f"steps, mean return {meta['mean_return']:.2f}."
        )
    else:
        success = "not evaluated (`--eval-episodes 0`)."
    d = meta
    loss = history[-1] if history else {}
    dart = (
        f", executed joint targets perturbed by AR(1) noise (std {d['demo_action_noise']}, rho {DART_RHO}; "
        "DART: the labels are the scripted actions)"
        if d.get("demo_action_noise")
        else ""
    )
    rel_pos, rel_off = (" + current `joint_pos`", " (offsets)") if cfg["relative"] else ("", "")
    dagger = dagger_card(meta)
    snap = (
        "\n- Hands: each hand's 24 predicted joint targets are replaced by the nearest (L2) of the hand targets the "
        "demonstrations use (the folder's open and pinch postures; `--snap-hands`, buffers `snap_values`; inference "
        "only, training regresses them as usual)."
        if model.snap_on.item() > 0.5
        else ""
    )
    frozen = f" Encoder frozen (action head only), initialised from `{d['init']}`." if d["freeze_encoder"] else ""
    return f"""# SmallVLA for {d["env"]}

Generated by `{d["command"]}` on {datetime.date.today().isoformat()}; never edited by hand.
Weights: `{weights.name}` ({weights.stat().st_size / 1e6:.2f} MB, `torch.load(weights_only=True)`: keys
`state_dict`, `config`, `meta`).
Load: `--base small-vla:{weights}` (shipped: `small-vla:garment_fold`) or
`--base module:sb3_vla.models.small_vla.SmallVLA@{weights}?instruction_key=instruction`.

## Architecture
- Image: 128x128 RGB (`{cfg["image_key"]}`) -> 4 conv layers {cfg["channels"]} (8x8/4, 4x4/2, 3x3/2, 3x3/1, ReLU)
  -> spatial softmax over {cfg["keypoints_2d"]} maps ({2 * cfg["keypoints_2d"]} feature-point coordinates).
- Language: learned token embedding ({cfg["text_dim"]}-D) of the stage instruction; the {len(cfg["vocab"])}
  GarmentFold instructions have ids 0-{len(cfg["vocab"]) - 1}, any other string the fallback id
  {len(cfg["vocab"])}; without instruction strings the `stage` one-hot names the instruction.
- Proprioception/state: {", ".join(f"`{k}`" for k in cfg["state_keys"])} ({cfg["state_dim"]} values, normalised
  with the demonstrations' mean/std). Note: `keypoints` (8 cloth keypoints, xyz) is part of GarmentFold's
  observation; the model reads it next to the image.
- Trunk MLP {cfg["hidden"]}-{cfg["hidden"]}-{cfg["embedding_dim"]} (LayerNorm) -> the {cfg["embedding_dim"]}-D
  embedding (`embed(obs)`, the base's `vla_embedding`) -> linear action head -> chunk of
  {cfg["horizon"]} x {cfg["action_dim"]}: joint targets = de-normalised output{rel_pos} (clipped to
  [-1, 1]), stage advance = sigmoid. `forward` returns the first {cfg["exec_horizon"]} actions.{snap}
- {d["parameters"]:,} parameters ({d["trainable_parameters"]:,} trained in this run).

## Data
- {d["demos"]} episodes of the scripted privileged folder (`env.unwrapped.scripted_action()`), perception noise
  {100 * d["demo_noise_m"]:.1f} cm{dart}, seeds `{d["demo_seeds"][0]}..{d["demo_seeds"][1]}`; it succeeded in
  {d["scripted_success"]}/{d["demos"]}. Trained on {d["episodes_trained"]} episodes
  ({"all" if d["keep_failed"] else "successful only"}), {d["steps_trained"]} steps.
- Collection took {d["collect_s"] / 60:.1f} min in the invocation that wrote this card
  ({d["demos_collected_now"]} episodes collected then; demos already in the work directory are reused).

## Training
- Behaviour cloning: MSE on the normalised joint targets{rel_off} of every chunk step, BCE (positive weight) on
  the stage-advance dim, masked past the episode end; AdamW lr {d["lr"]}, one-cycle, batch {d["batch_size"]},
  {d["epochs"]} epochs, random-shift image augmentation.{frozen}
- Training time {d["train_s"] / 60:.1f} min on {d["torch_threads"]} CPU threads (shared 2-core machine).
  Final epoch loss: {loss}.
{dagger}
## Evaluation
{success}
Evaluation took {d["eval_s"] / 60:.1f} min.
"""


def dagger_card(meta: dict[str, Any]) -> str:
    """The model card's DAgger section (empty without DAgger rounds)."""
    dg = meta.get("dagger") or {}
    if not dg.get("rounds"):
        return ""
    beta = (
        f"beta-mixture: each step runs the folder's action with probability beta = {dg['beta']:g} * "
        f"{dg['beta_decay']:g}^(round - 1)"
        if dg["beta"] > 0
        else "the model's own actions only, beta = 0"
    )
    nv = dg.get("val_episodes") or 0

    def val(k: int | None) -> str:
        return f"{k}/{nv} = {k / nv:.0%}" if nv and k is not None else "-"

    rows = f"| 0 (BC) | - | - | - | {val(dg.get('val_successes_bc'))} | - | - | - |\n" + "\n".join(
        f"| {r['round']} | {r['beta']:g} | `{r['rollout_seeds'][0]}..{r['rollout_seeds'][1]}` | "
        f"{r['rollout_successes']}/{r['rollout_episodes']} = {r['rollout_successes'] / r['rollout_episodes']:.0%}"
        f" | {val(r.get('val_successes'))} | {r['aggregate_steps']} | {r['rollout_s'] / 60:.1f} | "
        f"{r['train_s'] / 60:.1f} |"
        for r in dg["per_round"]
    )
    vs = dg.get("val_seeds") or [0, 0]
    return f"""
## DAgger
- After the BC fit, {dg["rounds"]} rounds (`--dagger-rounds`). Each rolls out the current model closed loop on
  {dg["episodes_per_round"]} new seeded episodes (`--dagger-episodes`;
  {beta}), labels every visited state with the scripted folder's action (`scripted_action()`, perception noise
  {100 * dg["label_noise_m"]:.1f} cm; its state machine reads the simulator every step, so it labels states it did
  not steer into), adds these episodes (failed ones too) to the training set and fine-tunes the current weights on
  the aggregate for {dg["epochs_per_round"]} epochs (AdamW, one-cycle to lr {dg["lr"]:g}; the normalisation
  statistics stay those of the demonstrations).
- {dg["steps"]} DAgger steps; {dg["aggregate_steps"]} steps in the final aggregate. Rollouts took
  {dg["rollout_s"] / 60:.1f} min (summed over the invocations that ran them); fine-tuning time is part of the
  training time above.
- Rollout success: the policy that collected the round's data (the model entering the round, mixed with the
  folder when beta > 0). Validation success: the model after the round, closed loop on its own actions, on the
  {nv} validation seeds `{vs[0]}..{vs[1]}` (`--dagger-eval-episodes`; round 0 is the BC model).

| round | beta | rollout seeds | rollout success | validation success | aggregate steps | rollout min | fine-tune min |
|---:|---:|---|---|---|---:|---:|---:|
{rows}
"""


if __name__ == "__main__":
    main()
