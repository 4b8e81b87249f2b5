"""Train a :class:`~sb3_vla.models.small_vla.SmallVLA` by behaviour cloning on the env's scripted demonstrations.

Usage::

    python -m sb3_vla.pretrain --env GarmentFold-v0 --demos 200 --out DIR [--epochs E] [--seed S] [--eval-episodes K]
    python -m sb3_vla.pretrain --env GarmentFold-v0 --demos 20 --out DIR --freeze-encoder --init CKPT  # Strategy 2

Steps: (1) collect ``--demos`` episodes of the env's privileged scripted controller (``env.unwrapped.
scripted_action()``, perception noise ``--noise`` m) with the rendered 128x128 RGB, the instruction and the
proprioception, keeping only successful episodes unless ``--keep-failed``; (2) train by behaviour cloning (MSE on
the normalised joint targets of an action chunk, BCE on the stage-advance dim); (3) evaluate the model
closed loop (its own actions) on ``--eval-episodes`` seeded episodes; (4) write ``DIR/NAME.pt`` (state dict +
config + metadata, loadable with ``torch.load(weights_only=True)``) and the model card ``DIR/NAME.md``.

Demonstrations, the training state (saved every epoch) and per-episode evaluation results go to ``--work-dir``
(default ``DIR/NAME_work``); re-running the same command resumes from them. Demo collection and evaluation run in
``--workers`` subprocesses.
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
DART_RHO = 0.8  # autocorrelation of the demo action noise per step
STATE_KEYS = ("joint_pos", "joint_vel", "held", "stage", "keypoints")

_WORKER: dict[tuple[Any, ...], Any] = {}


# ---------------------------------------------------------------------------------------------------- envs
def make_env(env_id: str, noise: float, image_size: int = 128, max_episode_steps: int | None = None) -> Any:
    """The env with the RGB observation (GarmentFold-v0 kwargs: ``rgb_obs``, ``image_size``, ``scripted_noise``)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    import sb3_vla  # noqa: F401 - registers the envs

    kwargs: dict[str, Any] = {"rgb_obs": True, "image_size": image_size, "scripted_noise": noise}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    return gym.make(env_id, **kwargs)


def _worker_env(env_id: str, noise: float, image_size: int, max_steps: int | None) -> Any:
    key = ("env", env_id, noise, image_size, max_steps)
    if key not in _WORKER:
        th.set_num_threads(1)
        _WORKER[key] = make_env(env_id, noise, image_size, max_steps)
    return _WORKER[key]


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
        rec["rgb"].append(obs["rgb"])
        for k in STATE_KEYS:
            rec[k].append(obs[k])
        rec["instruction"].append(GARMENT_FOLD_INSTRUCTIONS.index(info["instruction"]))
        rec["action"].append(action)
        executed = action.copy()
        if action_noise > 0:  # AR(1) noise (stationary std action_noise): slow drifts, not just jitter
            drift = DART_RHO * drift + math.sqrt(1 - DART_RHO**2) * act_rng.normal(0.0, action_noise, JOINT_DIMS)
            executed[:JOINT_DIMS] += drift.astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(executed)
        ret += float(reward)
        success = success or bool(info.get("is_success", False))
        done = terminated or truncated
    arrays = {k: np.stack(v) for k, v in rec.items()}
    tmp = path + ".tmp.npz"
    arrays["success"], arrays["ret"] = np.array(success), np.array(ret)
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
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
    key = ("model", weights, os.path.getmtime(weights), exec_horizon)
    if key not in _WORKER:
        overrides = {} if exec_horizon is None else {"exec_horizon": exec_horizon}
        _WORKER[key] = load_small_vla(weights, **overrides).eval()
    model: SmallVLA = _WORKER[key]
    obs, info = env.reset(seed=seed)
    ret, steps, success, done = 0.0, 0, False, False
    stages = 0
    while not done:
        batch: dict[str, Any] = {k: th.as_tensor(obs[k][None]) for k in ("rgb", *model.state_keys)}
        batch[model.instruction_key] = [info["instruction"]]
        with th.inference_mode():
            chunk = model(batch)[0].numpy()
        for action in chunk:
            obs, reward, terminated, truncated, info = env.step(action)
            ret += float(reward)
            steps += 1
            success = success or bool(info.get("is_success", False))
            stages = max(stages, int(np.sum(info.get("stage_complete", 0))))
            done = terminated or truncated
            if done:
                break
    return {"seed": seed, "success": success, "steps": steps, "return": ret, "stages_complete": stages}


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
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (1 is fastest on a busy CPU)")
    args = p.parse_args(argv)
    if args.freeze_encoder and not args.init:
        p.error("--freeze-encoder fine-tunes the action head of an existing model: pass --init CKPT")
    if args.demos < 1:
        p.error("--demos must be >= 1")
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
    rng = np.random.default_rng(args.seed)
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
    opt = th.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = max(1, math.ceil(len(data) / args.batch_size))
    sched = th.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=max(1, args.epochs * steps_per_epoch), pct_start=0.1
    )
    state_path = work / "train_state.pt"
    start_epoch, train_s, history = 0, 0.0, []
    fingerprint: list[Any] = [args.demos, args.noise, args.seed, args.horizon, args.epochs, args.freeze_encoder]
    fingerprint += [args.init] + ([args.action_noise] if args.action_noise > 0 else [])
    fingerprint += ["absolute"] if args.absolute else []
    if state_path.exists():
        st = th.load(state_path, map_location="cpu", weights_only=False)
        if st.get("fingerprint") == fingerprint:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            start_epoch, train_s, history = st["epoch"], st["train_s"], st["history"]
            rng = np.random.default_rng(args.seed + 1000 * start_epoch)
            log(f"resuming training at epoch {start_epoch}")
    for epoch in range(start_epoch, args.epochs):
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
        log(f"epoch {epoch + 1}/{args.epochs}: {row} ({time.perf_counter() - t1:.0f} s)")
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
        "steps_trained": len(data),
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
    }
    save_small_vla(model, weights, meta)

    # (3) closed-loop evaluation (resumable: one result file per episode)
    eval_seeds = [args.seed * SEED_STRIDE + EVAL_OFFSET + i for i in range(args.eval_episodes)]
    # results belong to this training run and execution horizon
    etag = hashlib.sha1(repr([*fingerprint, args.exec_horizon]).encode()).hexdigest()[:8]
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
  [-1, 1]), stage advance = sigmoid. `forward` returns the first {cfg["exec_horizon"]} actions.
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

## Evaluation
{success}
Evaluation took {d["eval_s"] / 60:.1f} min.
"""


if __name__ == "__main__":
    main()
