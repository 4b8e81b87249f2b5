"""Scale-out on Ray: RayVecEnv against SubprocVecEnv, one batched base server, and latency hidden behind chunks.

Run::

    nice -n 10 python benchmarks/scaleout.py                # about 3-4 minutes on 2 cores
    python benchmarks/scaleout.py --rounds 3 --no-write     # more rounds, print only

Four measurements, each a ratio taken within this run, with the compared set-ups measured in alternating blocks
(so load from other processes hits both alike):

0. The transport's cost per step: one Pendulum-v1 env in ``SubprocVecEnv``, in ``RayVecEnv`` (calls over its
   direct channel) and in ``RayVecEnv(direct_steps=False)`` (Ray actor calls).
1. GarmentFold-v0 env steps/s (``--base scripted``, the whole residual stack, zero residual) with 1 and 2 workers:
   :class:`~sb3_vla.ray.RayVecEnv` against ``SubprocVecEnv`` (and with every call as a Ray actor call). Target:
   Ray within 10%.
2. A base with a fixed 100 ms latency per call whatever the batch size (a ``time.sleep``, the idealised GPU at
   small batch), one copy of it in one server, queried by 8 Ray env workers (Pendulum-v1, so that the env is not
   the bottleneck) through their own observation wrapper: the served base with dynamic batching (``max_batch=8``)
   against per-worker synchronous calls served one at a time (``max_batch=1``). Target: >= 5x.
3. The same 100 ms base with chunks of 8 actions, queried by the driver's wrapper over the 2 GarmentFold workers:
   env steps/s with ``prefetch=k`` (the next chunk asked ``k`` steps early) against ``prefetch=0``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sb3_vla.bases.base import BaseModel, VLABatch

LATENCY_S = 0.1
CHUNK = 8


class SleepBase(BaseModel):
    """A latency model of a large base: every ``predict`` sleeps ``latency_s`` whatever the batch size and returns
    zero actions (chunks of ``chunk_size``)."""

    def __init__(self, action_space: spaces.Box, latency_s: float = LATENCY_S, chunk_size: int = 1) -> None:
        self.action_space = action_space
        self.latency_s = float(latency_s)
        self.chunk_size = int(chunk_size)

    def predict(self, batch: VLABatch) -> tuple[np.ndarray, np.ndarray | None]:
        time.sleep(self.latency_s)
        shape = (len(batch), self.chunk_size, *self.action_space.shape)
        return np.zeros(shape, dtype=np.float32), None


def served_wrapper(env: Any, name: str) -> Any:
    """Per-env wrapper run inside each env worker: the base is the named server."""
    from sb3_vla.ray import RayServedBase
    from sb3_vla.wrappers import VLAObservationWrapper

    return VLAObservationWrapper(env, base=RayServedBase(name))


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def _steps_per_s(venv: Any, steps: int) -> tuple[int, float]:
    """Step ``venv`` ``steps`` times with zero actions; return ``(env steps, seconds)``."""
    action = np.zeros((venv.num_envs, *venv.action_space.shape), dtype=np.float32)
    t0 = time.perf_counter()
    for _ in range(steps):
        venv.step(action)
    return steps * venv.num_envs, time.perf_counter() - t0


def _alternate(venvs: dict[str, Any], steps: dict[str, int], rounds: int) -> dict[str, float]:
    """Env steps/s of each venv, measured in ``rounds`` alternating blocks of ``steps[name]`` vector steps."""
    done = dict.fromkeys(venvs, 0)
    took = dict.fromkeys(venvs, 0.0)
    for venv in venvs.values():
        venv.reset()
        _steps_per_s(venv, 2)  # warm-up
    for r in range(rounds):
        order = list(venvs) if r % 2 == 0 else list(venvs)[::-1]
        for name in order:
            n, s = _steps_per_s(venvs[name], steps[name])
            done[name] += n
            took[name] += s
    return {name: done[name] / took[name] for name in venvs}


def garment_stack(raw: Any) -> Any:
    from sb3_vla.wrappers import VecResidualActionWrapper, VecVLAObservationWrapper

    return VecResidualActionWrapper(VecVLAObservationWrapper(raw, "scripted"), residual_scale=0.1)  # zero residual


def vec_kinds() -> dict[str, dict[str, Any]]:
    """The compared VecEnvs as ``make_vec_env`` keyword arguments: SubprocVecEnv, RayVecEnv (calls over its direct
    channel) and RayVecEnv with Ray actor calls. Half a logical CPU per actor, so both Ray set-ups' actors fit the
    2-CPU local cluster at once."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from sb3_vla.ray import RayVecEnv

    return {
        "subproc": dict(vec_env_cls=SubprocVecEnv),
        "ray": dict(vec_env_cls=RayVecEnv, vec_env_kwargs=dict(num_cpus_per_env=0.5)),
        "ray calls": dict(vec_env_cls=RayVecEnv, vec_env_kwargs=dict(num_cpus_per_env=0.5, direct_steps=False)),
    }


def overhead_ms(rounds: int, steps: int = 500) -> dict[str, float]:
    """Part 0: ms per step of one Pendulum-v1 env (whose own step costs microseconds): the transport's cost."""
    from stable_baselines3.common.env_util import make_vec_env

    venvs = {k: make_vec_env("Pendulum-v1", n_envs=1, seed=0, **kw) for k, kw in vec_kinds().items()}
    rates = _alternate(venvs, dict.fromkeys(venvs, steps), rounds)
    for venv in venvs.values():
        venv.close()
    ms = {k: 1000.0 / v for k, v in rates.items()}
    print("  " + ", ".join(f"{k} {v:.2f} ms/step" for k, v in ms.items()), flush=True)
    return ms


def env_rates(rounds: int, steps: int) -> tuple[dict[int, dict[str, float]], Any]:
    """Part 1: GarmentFold-v0 steps/s, Ray vs Subproc, 1 and 2 workers; also returns the 2-worker raw RayVecEnv."""
    from stable_baselines3.common.env_util import make_vec_env

    rates: dict[int, dict[str, float]] = {}
    keep = None
    for n in (1, 2):
        raws = {k: make_vec_env("GarmentFold-v0", n_envs=n, seed=0, **kw) for k, kw in vec_kinds().items()}
        stacks = {k: garment_stack(v) for k, v in raws.items()}
        rates[n] = _alternate(stacks, dict.fromkeys(stacks, steps), rounds)
        print(f"  {n} worker(s): " + ", ".join(f"{k} {v:.1f} steps/s" for k, v in rates[n].items()), flush=True)
        raws["subproc"].close()
        raws["ray calls"].close()
        if n == 2:
            keep = raws["ray"]
        else:
            raws["ray"].close()
    return rates, keep


def served_rates(rounds: int, n_workers: int = 8) -> tuple[dict[str, float], dict[str, float]]:
    """Part 2: one 100 ms base server for ``n_workers`` Ray env workers, batched (max_batch=n) vs one call at once."""
    import ray
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_vla.ray import RayVecEnv, serve_base

    probe_space = spaces.Box(-2.0, 2.0, (1,), np.float32)  # Pendulum-v1's action space
    name = "scaleout-sleep-base"
    server = serve_base(functools.partial(SleepBase, probe_space), name=name, max_batch=1, max_wait_ms=20)
    venv = make_vec_env(
        "Pendulum-v1",
        n_envs=n_workers,
        seed=0,
        vec_env_cls=RayVecEnv,  # type: ignore[arg-type]
        vec_env_kwargs=dict(num_cpus_per_env=0.25),
        wrapper_class=functools.partial(served_wrapper, name=name),
    )
    venv.reset()
    done = {"per-call": 0, "batched": 0}
    took = {"per-call": 0.0, "batched": 0.0}
    rows: dict[str, list[int]] = {"per-call": [], "batched": []}
    steps = {"per-call": 3, "batched": 15}
    for r in range(rounds):
        for mode in ("per-call", "batched") if r % 2 == 0 else ("batched", "per-call"):
            ray.get(server.configure.remote(max_batch=1 if mode == "per-call" else n_workers))
            before = len(ray.get(server.stats.remote())["batch_rows"])
            n, s = _steps_per_s(venv, steps[mode])
            done[mode] += n
            took[mode] += s
            rows[mode] += ray.get(server.stats.remote())["batch_rows"][before:]
    venv.close()
    ray.kill(server)
    rates = {k: done[k] / took[k] for k in done}
    mean_rows = {k: float(np.mean(v)) for k, v in rows.items()}
    print(f"  {n_workers} workers: " + ", ".join(f"{k} {rates[k]:.1f} steps/s" for k in rates), flush=True)
    return rates, mean_rows


def prefetch_rates(raw: Any, rounds: int, steps: int, ks: tuple[int, ...]) -> tuple[dict[int, float], float]:
    """Part 3: a chunked 100 ms base over the GarmentFold workers, with ``prefetch`` 0 and each ``k``.

    :return: steps/s per ``k`` and the env-only steps/s of the same workers (no base), for reference.
    """
    import ray

    from sb3_vla.ray import RayServedBase, serve_base
    from sb3_vla.wrappers import VecVLAObservationWrapper

    server = serve_base(
        functools.partial(SleepBase, raw.action_space, chunk_size=CHUNK), name="scaleout-chunk-base", max_wait_ms=0
    )
    clients = {k: RayServedBase(server, prefetch=k) for k in (0, *ks)}
    stacks: dict[str, Any] = {
        f"k={k}": VecVLAObservationWrapper(raw, c, query_interval=CHUNK) for k, c in clients.items()
    }
    stacks["env only"] = raw
    # every stack starts a chunk boundary: a whole number of chunks per block
    rates = _alternate(stacks, dict.fromkeys(stacks, steps), rounds)
    ray.kill(server)
    print("  " + ", ".join(f"{k} {v:.1f} steps/s" for k, v in rates.items()), flush=True)
    return {k: rates[f"k={k}"] for k in clients}, rates["env only"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="alternating measurement blocks per set-up")
    p.add_argument("--steps", type=int, default=24, help="vector steps per block (GarmentFold parts)")
    p.add_argument("--prefetch", type=int, nargs="+", default=[1, 4], help="prefetch distances to measure")
    p.add_argument("--no-write", dest="write", action="store_false", help="print only, leave RESULTS.md alone")
    args = p.parse_args()

    import torch as th

    th.set_num_threads(1)
    import sb3_vla  # noqa: F401 - registers GarmentFold-v0
    from sb3_vla.ray import ensure_ray

    t0 = time.perf_counter()
    load0 = _load()
    ensure_ray(num_cpus=os.cpu_count() or 2, log_to_driver=False)
    print("transport cost: one Pendulum-v1 env", flush=True)
    overhead = overhead_ms(args.rounds)
    print("GarmentFold-v0 env steps/s (--base scripted, residual stack)", flush=True)
    env, raw2 = env_rates(args.rounds, args.steps)
    print("latency hiding: chunked 100 ms base over the 2 GarmentFold workers", flush=True)
    steps3 = max(CHUNK, args.steps // CHUNK * CHUNK)
    pre, env_only = prefetch_rates(raw2, args.rounds, steps3, tuple(args.prefetch))
    raw2.close()
    print("one 100 ms base server, 8 env workers", flush=True)
    served, rows = served_rates(args.rounds)
    load1 = _load()
    wall = time.perf_counter() - t0

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = [
        "## Scale-out on Ray (benchmarks/scaleout.py)",
        "",
        f"Command: `nice -n 10 python benchmarks/scaleout.py --rounds {args.rounds} --steps {args.steps}` "
        f"({wall:.0f} s). Ray {__import__('ray').__version__}, a local cluster on this machine. Load averages "
        f"(1, 5, 15 min) before / after: {load0} / {load1}; the machine is shared with other work, so absolute "
        "rates are low and noisy: compare the ratios, each measured within this run in alternating blocks.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
    ]
    for n, r in env.items():
        ratio = r["ray"] / r["subproc"]
        workers = f"{n} worker{'s' if n > 1 else ''}"
        lines.append(
            f"| GarmentFold-v0 env steps/s, {workers}: RayVecEnv / SubprocVecEnv | "
            f"{r['ray']:.1f} / {r['subproc']:.1f} = {ratio:.2f}x | >= 0.90x: {verdict(ratio >= 0.9)} |"
        )
        lines.append(
            f"| the same, {workers}, env calls as Ray actor calls (`direct_steps=False`) / SubprocVecEnv | "
            f"{r['ray calls']:.1f} / {r['subproc']:.1f} = {r['ray calls'] / r['subproc']:.2f}x |  |"
        )
    gain = served["batched"] / served["per-call"]
    lines += [
        f"| 100 ms base (a sleep), 8 Ray env workers (Pendulum-v1): env steps/s, served with batching "
        f"(max_batch=8, max_wait_ms=20) / per-worker synchronous calls (one model, one call at a time) | "
        f"{served['batched']:.1f} / {served['per-call']:.1f} = {gain:.1f}x (mean batch "
        f"{rows['batched']:.1f} vs {rows['per-call']:.1f} rows) | >= 5x: {verdict(gain >= 5)} |",
    ]
    for k in args.prefetch:
        lines.append(
            f"| 100 ms base with chunks of {CHUNK}, 2 GarmentFold workers: env steps/s with prefetch={k} / "
            f"prefetch=0 (first action of a chunk {k} step{'s' if k > 1 else ''} stale) | "
            f"{pre[k]:.1f} / {pre[0]:.1f} = {pre[k] / pre[0]:.2f}x |  |"
        )
    lines += [
        "",
        f"Same workers without a base: {env_only:.1f} env steps/s (the ceiling prefetching approaches when "
        f"`k` env steps outlast the base's {LATENCY_S * 1000:.0f} ms). The 100 ms latency model is a `time.sleep` "
        "that does not grow with the batch: it is the upper bound of what batching buys (a 7B VLA in bf16 is "
        "estimated at about 2.4x more samples/s at batch 8 than at batch 1).",
        "",
        "What a step costs beyond the env (one Pendulum-v1 env, whose own step takes microseconds): "
        f"{overhead['subproc']:.2f} ms per step in SubprocVecEnv, {overhead['ray']:.2f} ms in RayVecEnv, "
        f"{overhead['ray calls']:.2f} ms with `step` as a Ray actor call. A GarmentFold-v0 step with the scripted "
        "base makes two calls per env (`step`, and `env_method('scripted_action')` for the base), each a Ray "
        "actor call before; RayVecEnv now sends every env call over a direct TCP connection to each actor "
        "(`sb3_vla.ray.channel`: opened through Ray, authenticated with a random key before anything is "
        "unpickled, a closed socket reported as a dead worker). A Ray Compiled Graph for `step` (about 0.5 ms "
        "per call) was tried before and dropped: its workers poll their channels, about 85% of a core each while "
        "idle.",
    ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        from benchmarks._results import write_section

        write_section("scaleout", body)


if __name__ == "__main__":
    main()
