"""Training throughput: env steps/s while collecting vs while learning, in one run, for the zoo configs.

Each config is built exactly as ``python -m sb3_vla.train`` builds it (same YAML, envs, base, wrappers and model).
One run collects ``--collect`` SB3 timesteps with no update (``learning_starts`` moved to that point), then learns
for ``--learn`` more; rates are in env steps (timesteps times the residual's ``decision_interval``), and the ratio of
the two rates is measured within the run, so a loaded machine slows both.
Instance-level timers split the wall time into env stepping (the inner VecEnv), base forward passes, SAC updates
and the rest; a second, profiled learning phase of the headline config gives the top functions by own time.

Usage::

    python benchmarks/throughput.py                      # every config, writes benchmarks/RESULTS.md
    python benchmarks/throughput.py --configs headline --collect 400 --learn 400
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import os
import pstats
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# run as a script: import the repo's packages, and drop the script's own folder from the path (benchmarks/libero.py
# would shadow the `libero` package)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PINCH = "sb3_vla.envs.garment_fold:PinchResidualMap"
# name -> (description, sb3_vla.train arguments)
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "headline": (
        "GarmentFold-v0, zoo default (SmallVLA base on the 128 px camera)",
        ["--algo", "sac", "--env", "GarmentFold-v0"],
    ),
    "garment-scripted-pinch": (
        "GarmentFold-v0, `--base scripted`, pinch residual, no camera",
        [
            "--algo",
            "sac",
            "--env",
            "GarmentFold-v0",
            "--base",
            "scripted",
            "--env-kwargs",
            "rgb_obs:False",
            "-params",
            "drop_keys:[garment_pcd]",
            "query_interval:1",
            f"residual_map:{PINCH}",
            "residual_scale:[0.02,0.02,0.005,0.02,0.02,0.005,0.3]",
        ],
    ),
    "pushcube": ("ManiSkill PushCube-v1, scripted base", ["--algo", "sac", "--env", "ManiSkill-PushCube-v1"]),
    "pendulum": ("Pendulum-v1, zero base", ["--algo", "sac", "--env", "Pendulum-v1"]),
}


@dataclass
class Timers:
    env: float = 0.0
    base: float = 0.0
    update: float = 0.0
    updates: int = 0
    faults: int = 0  # minor page faults inside updates (what glibc.malloc.hugetlb would save)
    sys_s: float = 0.0  # kernel CPU time inside updates

    def reset(self) -> None:
        self.env = self.base = self.update = self.sys_s = 0.0
        self.updates = self.faults = 0


def _timed(fn: Any, timers: Timers, field: str) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            setattr(timers, field, getattr(timers, field) + time.perf_counter() - t)

    return wrapper


def _instrument(model: Any, timers: Timers) -> None:
    """Time the inner VecEnv's steps, the base's forward passes and the algorithm's updates (this run only)."""
    from stable_baselines3.common.vec_env import VecEnvWrapper, unwrap_vec_wrapper

    from sb3_vla.wrappers import VecVLAObservationWrapper

    inner = model.get_env()
    while isinstance(inner, VecEnvWrapper):
        inner = inner.venv
    inner.step_wait = _timed(inner.step_wait, timers, "env")
    obs_wrapper = unwrap_vec_wrapper(model.get_env(), VecVLAObservationWrapper)
    if obs_wrapper is not None:
        obs_wrapper.base.predict = _timed(obs_wrapper.base.predict, timers, "base")  # type: ignore[method-assign]
    train = model.train

    @functools.wraps(train)
    def timed_train(gradient_steps: int, *args: Any, **kwargs: Any) -> Any:
        t, r = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        try:
            return train(gradient_steps, *args, **kwargs)
        finally:
            timers.update += time.perf_counter() - t
            timers.updates += int(gradient_steps)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            timers.faults += r1.ru_minflt - r.ru_minflt
            timers.sys_s += r1.ru_stime - r.ru_stime

    model.train = timed_train


def _build(argv: list[str], vec_env: str) -> tuple[Any, Any, str]:
    import torch as th

    from sb3_vla.experiment import (
        build_model,
        build_vec_env,
        choose_vec_env,
        resolve_env_alias,
        resolve_from_args,
    )
    from sb3_vla.train import build_parser

    th.set_num_threads(1)
    args = build_parser().parse_args([*argv, "--verbose", "0", "--vec-env", vec_env])
    args.env = resolve_env_alias(args.env)
    cfg = resolve_from_args(args)
    chosen = choose_vec_env(vec_env, cfg.n_envs)
    env = build_vec_env(cfg, cfg.n_envs, 0, chosen, "cpu")
    model = build_model(cfg, env, 0, "cpu", None)
    return cfg, model, chosen


def _env_steps(model: Any) -> int:
    from stable_baselines3.common.vec_env import unwrap_vec_wrapper

    from sb3_vla.wrappers import VecResidualActionWrapper

    res = unwrap_vec_wrapper(model.get_env(), VecResidualActionWrapper)
    k = res.decision_interval if res is not None else 1
    return int(model.num_timesteps) * k


def measure(name: str, collect: int, learn: int, vec_env: str, profile: bool) -> dict[str, Any]:
    desc, argv = CONFIGS[name]
    cfg, model, chosen = _build(argv, vec_env)
    timers = Timers()
    _instrument(model, timers)
    kw = cfg.model_kwargs
    model.learning_starts = collect  # the first phase collects only
    t0 = time.perf_counter()
    model.learn(collect, reset_num_timesteps=True)
    t_collect = time.perf_counter() - t0
    steps_collect = _env_steps(model)
    share_collect = (timers.env, timers.base)
    timers.reset()
    t0 = time.perf_counter()
    model.learn(learn, reset_num_timesteps=False)
    t_learn = time.perf_counter() - t0
    steps_learn = _env_steps(model) - steps_collect
    learned = Timers(timers.env, timers.base, timers.update, timers.updates, timers.faults, timers.sys_s)
    top: list[str] = []
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        model.learn(max(learn // 2, 1), reset_num_timesteps=False)
        prof.disable()
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).sort_stats("tottime")
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:5]  # type: ignore[attr-defined]
        total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
        for (file, line, func), (_cc, _nc, tt, _ct, _callers) in rows:
            where = f"{Path(file).name}:{line}" if line else file
            top.append(f"`{func}` ({where}) {100 * tt / total:.0f}%")
    model.get_env().close()
    collect_rate = steps_collect / t_collect
    learn_rate = steps_learn / t_learn
    timers = learned
    other = max(0.0, t_learn - timers.env - timers.base - timers.update)
    return {
        "name": name,
        "desc": desc,
        "vec_env": chosen,
        "n_envs": cfg.n_envs,
        "train_freq": kw.get("train_freq", 1),
        "gradient_steps": kw.get("gradient_steps", 1),
        "batch_size": kw.get("batch_size", 256),
        "collect_rate": collect_rate,
        "learn_rate": learn_rate,
        "ratio": learn_rate / collect_rate,
        "updates_per_s": timers.updates / t_learn,
        "ms_per_update": 1000 * timers.update / max(timers.updates, 1),
        "faults_per_update": timers.faults / max(timers.updates, 1),
        "sys_ms_per_update": 1000 * timers.sys_s / max(timers.updates, 1),
        "shares": {
            "env": timers.env / t_learn,
            "base": timers.base / t_learn,
            "updates": timers.update / t_learn,
            "other": other / t_learn,
        },
        "collect_shares": {"env": share_collect[0] / t_collect, "base": share_collect[1] / t_collect},
        "top": top,
        "load": os.getloadavg()[0],
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "## Training throughput: collecting vs learning (`benchmarks/throughput.py`)",
        "",
        f"Command: `python benchmarks/throughput.py --collect {args.collect} --learn {args.learn}`. Each row is one "
        "run of the config exactly as `python -m sb3_vla.train` builds it (zoo YAML, `--vec-env auto`, torch 1 "
        "thread): env steps/s while only collecting (before `learning_starts`) and then while learning, in the same "
        "process; wall-time shares of the learning phase from timers on the inner VecEnv, the base's forward and "
        "the algorithm's updates. Targets (issue #15): learning >= 0.6x collecting, and >= 20 env steps/s for the "
        "headline config.",
        "",
        "| config | envs | train_freq / gradient_steps / batch | collect steps/s | learn steps/s | ratio | "
        "updates/s | ms/update (page faults, kernel ms) | env / base / updates / other | load |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        s = r["shares"]
        lines.append(
            f"| {r['desc']} | {r['n_envs']} x {r['vec_env']} | {r['train_freq']} / {r['gradient_steps']} / "
            f"{r['batch_size']} | {r['collect_rate']:.1f} | {r['learn_rate']:.1f} | {r['ratio']:.2f} | "
            f"{r['updates_per_s']:.1f} | {r['ms_per_update']:.1f} ({r['faults_per_update']:.0f}, "
            f"{r['sys_ms_per_update']:.1f}) | {100 * s['env']:.0f} / {100 * s['base']:.0f} / "
            f"{100 * s['updates']:.0f} / {100 * s['other']:.0f} % | {r['load']:.1f} |"
        )
    lines += [
        "",
        "Page faults and kernel time per update are counted by `getrusage` inside the updates. They were a third of "
        "the CPU time with the 256-point PointNet of the previous default (32 MiB activations), which is why "
        "`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` helped then (1.31x). With the low-dimensional inputs an update "
        "allocates little, so the CLI does not set the tunable: there is nothing left for it to save.",
        "",
        "PushCube and Pendulum keep one gradient step per env step: their envs step in a few milliseconds, so any "
        "learner dominates their wall time, and their learning results were measured at that ratio. The GarmentFold "
        "entries take one gradient step per agent decision, four env steps (0.25 per env step).",
    ]
    for r in rows:
        if r["name"] == "headline":
            ok_ratio, ok_rate = r["ratio"] >= 0.6, r["learn_rate"] >= 20
            lines += [
                "",
                f"Headline: learning at {r['learn_rate']:.1f} env steps/s, {r['ratio']:.2f}x collecting "
                f"({'MET' if ok_ratio else 'NOT MET'} >= 0.6x; {'MET' if ok_rate else 'NOT MET'} >= 20 steps/s).",
            ]
            if r["top"]:
                lines += ["", "Top 5 functions by own time in a profiled learning phase of the headline config: "]
                lines += [f"{i + 1}. {t}" for i, t in enumerate(r["top"])]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--collect", type=int, default=600, help="SB3 timesteps (agent decisions x n_envs) collected first")
    p.add_argument("--learn", type=int, default=600, help="SB3 timesteps learned after (rates count env steps)")
    p.add_argument("--vec-env", default="auto", choices=["auto", "dummy", "subproc"])
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    for name in args.configs:
        try:
            rows.append(measure(name, args.collect, args.learn, args.vec_env, profile=name == "headline"))
        except Exception as e:  # an optional env missing (ManiSkill without Vulkan): report and go on
            print(f"{name}: skipped ({type(e).__name__}: {e})")
        print(rows[-1] if rows else "")
    text = report(rows, args)
    print(text)
    if not args.no_write and rows:
        from benchmarks._results import write_section

        write_section("throughput", text)


if __name__ == "__main__":
    main()
