"""rl-zoo's own CLI with ``--gym-packages sb3_vla``: wall time of a short SAC run with sb3_vla's one-thread
default against torch's default of one thread per core (what rl-zoo does without us).

Run::

    python benchmarks/zoo_threads.py            # about 3 minutes on 2 cores; writes section zoo_threads

Both runs are ``python -m rl_zoo3.train --algo sac --env Pendulum-v1 -n 2000 --gym-packages sb3_vla``; the second
adds ``--num-threads N`` (N = the machine's cores), which rl-zoo applies after importing ``sb3_vla`` and so
restores torch's default. They run one after the other, alternating, ``--rounds`` times each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEPS = 2000


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_zoo(extra: list[str], steps: int, timeout_s: float) -> float:
    """Seconds of one rl-zoo training run (process start to exit); ``inf`` past ``timeout_s``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as log_folder:
        cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "sac", "--env", "Pendulum-v1", "-n", str(steps)]
        cmd += ["--gym-packages", "sb3_vla", "--log-folder", log_folder, "--seed", "0", "--eval-freq", "-1", *extra]
        t0 = time.perf_counter()
        try:
            subprocess.run(
                cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            return float("inf")
        return time.perf_counter() - t0


def _secs(s: float, timeout_s: float) -> str:
    return f"> {timeout_s:.0f} (stopped)" if s == float("inf") else f"{s:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a run may take before it is stopped")
    p.add_argument("--no-write", dest="write", action="store_false")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    arms = {"sb3_vla default (1 thread)": [], f"--num-threads {cores} (torch's default)": [f"--num-threads={cores}"]}
    times: dict[str, list[float]] = {k: [] for k in arms}
    load0 = _load()
    for r in range(args.rounds):
        for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
            times[name].append(run_zoo(arms[name], args.steps, args.timeout))
            print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    load1 = _load()
    one, many = (min(v) for v in times.values())
    lines = [
        "## rl-zoo CLI thread count (benchmarks/zoo_threads.py)",
        "",
        f"Command: `python benchmarks/zoo_threads.py --rounds {args.rounds} --steps {args.steps}`: "
        f"`python -m rl_zoo3.train --algo sac --env Pendulum-v1 -n {args.steps} --gym-packages sb3_vla` "
        f"(whole process, best of {args.rounds}), {cores} cores, load averages before / after: {load0} / {load1}.",
        "",
        "| torch threads | wall s |",
        "|---|---:|",
        *(f"| {name} | {_secs(min(v), args.timeout)} |" for name, v in times.items()),
        "",
        f"One thread is {'more than ' if many == float('inf') else ''}"
        f"{min(many, args.timeout) / one:.1f}x faster here.",
    ]
    body = "\n".join(lines)
    print(body)
    if args.write:
        from benchmarks._results import write_section

        write_section("zoo_threads", body)


if __name__ == "__main__":
    main()
