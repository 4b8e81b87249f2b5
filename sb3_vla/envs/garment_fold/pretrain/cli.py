"""``python -m sb3_vla.envs.garment_fold.pretrain``: the pretraining pipeline (see the package docstring)."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from sb3_vla.envs.garment_fold.pretrain.card import model_card, wilson
from sb3_vla.envs.garment_fold.pretrain.dataset import DemoData, set_hand_snap, set_normalisation
from sb3_vla.envs.garment_fold.pretrain.rollouts import (
    DAGGER_OFFSET,
    EVAL_OFFSET,
    SEED_STRIDE,
    VAL_OFFSET,
    collect_episode,
    dagger_episode,
    evaluate_episode,
    run_jobs,
)
from sb3_vla.envs.garment_fold.pretrain.training import fit
from sb3_vla.models.small_vla import SmallVLA, count_parameters, load_small_vla, save_small_vla

PROG = "python -m sb3_vla.envs.garment_fold.pretrain"
DESCRIPTION = "Train a SmallVLA by behaviour cloning on the env's scripted demonstrations."
#: DAgger defaults (the default command ships the model in sb3_vla/assets)
DAGGER_ROUNDS = 1
DAGGER_EPISODES = 40
DAGGER_EPOCHS = 10
DAGGER_LR = 5e-4
DAGGER_BETA = 0.5
DAGGER_EVAL_EPISODES = 20


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
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
    run_jobs(collect_episode, todo, args.workers, log)
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
        for r in run_jobs(evaluate_episode, vjobs, args.workers, log):
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
        run_jobs(dagger_episode, jobs, args.workers, log)
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
        "command": f"{PROG} " + " ".join(sys.argv[1:] if argv is None else list(argv)),
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
    for r in run_jobs(evaluate_episode, jobs, args.workers, log):
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
