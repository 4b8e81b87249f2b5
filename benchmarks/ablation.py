"""Ablation of the residual recipe: the full recipe, then each piece removed in turn, on one env.

Every variant is a ``benchmarks/learning.py`` run (base and residual arms, same seeds, same evaluation episodes)
with its own ``--tag``, so each is resumable and keeps its CSV; this script then tabulates the residual arm of
every variant against the base.

Run::

    python benchmarks/ablation.py --env Pendulum-v1 --seeds 3 --steps 5000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the full recipe per env, as learning.py --recipe items; each ablation sets one piece back to "off"
FULL: dict[str, dict[str, object]] = {
    "Pendulum-v1": {
        "decision_interval": 2,
        "explore_ramp": 2000,
        "warmup_gain": 0.1,
        "n_step": 3,
        "critic_layer_norm": True,
        "actor_warmup": 1000,
    },
    "GarmentFold-v0": {
        "decision_interval": 4,
        "explore_ramp": 10000,
        "warmup_gain": 0.1,
        "n_step": 3,
        "critic_layer_norm": True,
        "actor_warmup": 5000,
    },
}
OFF: dict[str, dict[str, object]] = {
    "progressive exploration": {"explore_ramp": 0, "warmup_gain": 1.0},
    "chunk-level residual": {"decision_interval": 1},
    "critic burn-in": {"actor_warmup": 0},
    "n-step returns": {"n_step": 1},
    "layer-normed critic": {"critic_layer_norm": False},
}


def variants(env_id: str) -> dict[str, dict[str, object]]:
    """``name -> recipe`` for the full recipe and each piece removed."""
    full = dict(FULL[env_id])
    out = {"full recipe": full}
    for name, off in OFF.items():
        out[f"without {name}"] = {**full, **off}
    return out


def _tag(name: str) -> str:
    return "ablation_" + name.replace("without ", "no_").replace(" ", "_").replace("-", "_")


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Pendulum-v1", choices=sorted(FULL))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--only", nargs="*", default=None, help="variant names to run (default all)")
    p.add_argument("--no-run", action="store_true", help="tabulate the CSVs that exist")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--results-md", type=Path, default=None)
    args = p.parse_args(argv)
    from benchmarks import learning
    from benchmarks._results import RESULTS, write_section

    rows = []
    for name, recipe in variants(args.env).items():
        if args.only is not None and name not in args.only:
            continue
        items = [f"{k}:{v}" for k, v in recipe.items()]
        cli = [
            "--env",
            args.env,
            "--seeds",
            str(args.seeds),
            "--steps",
            str(args.steps),
            "--eval-episodes",
            str(args.eval_episodes),
            "--arms",
            "base,residual",
            "--tag",
            _tag(name),
            "--out",
            str(args.out),
            "--recipe",
            *items,
        ]
        if args.eval_every:
            cli += ["--eval-every", str(args.eval_every)]
        if args.results_md:
            cli += ["--results-md", str(args.results_md)]
        if args.no_run:
            cli.append("--no-run")
        summary = learning.main(cli)
        rows.append((name, summary))
    unit = "points" if args.env != "Pendulum-v1" else "return"
    lines = [
        f"## Residual recipe ablation on {args.env} (`benchmarks/ablation.py`)",
        "",
        f"Command: `python benchmarks/ablation.py --env {args.env} --seeds {args.seeds} --steps {args.steps} "
        f"--eval-episodes {args.eval_episodes}`. Each row is a `benchmarks/learning.py` run (base and residual arms "
        "on the same seeds and evaluation episodes) with the full recipe or one piece removed; its own section "
        "`learning_<env>_sac_ablation_*` has the curves. Full recipe: "
        + ", ".join(f"`{k}={v}`" for k, v in FULL[args.env].items())
        + ".",
        "",
        f"| variant | seeds | final residual (IQM) | gain vs base ({unit}) | env steps to base + margin (median) | "
        "worst dip below base, seed / mean |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, summary in rows:
        r = summary.get("residual")
        if r is None:
            lines.append(f"| {name} | 0 | - | - | - | - |")
            continue
        reach = f"{r['reach_median']:.0f}" if r["reach_median"] is not None else f"{r['reached']}/{r['seeds']} seeds"
        lines.append(
            f"| {name} | {r['seeds']} | {r['final']:.1f} | {r['gain']:+.1f} | {reach} | "
            f"{r['dip_seed']:.0f} / {r['dip_mean']:.0f} |"
        )
    md = "\n".join(lines)
    write_section(f"ablation_{args.env}", md, args.results_md or RESULTS)
    print(md)
    return md


if __name__ == "__main__":
    main()
