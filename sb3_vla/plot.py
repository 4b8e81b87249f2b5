"""Plot learning curves of ``sb3_vla.train`` runs: success rate (or return) against env steps, the base as a line.

Usage::

    python -m sb3_vla.plot logs/sac/GarmentFold-v0_1 [RUN_DIR ...] --out curve.png [--y success|return]
        [--labels A B ...] [--title T] [--figsize 6.4 4] [--dpi 100]

Each run's ``evaluations.npz`` (written by :class:`~sb3_vla.evaluation.FixedSeedEvalCallback`) gives one curve: the
mean over the evaluation episodes at each evaluation. The base's score on the same episodes (``base_results`` /
``base_successes``, evaluated at step 0) is a dashed line in the run's colour. Runs whose ``config.yml`` (and algo,
env) are identical, i.e. seeds of one config, are drawn as one mean curve with a +-1 standard deviation band over
the seeds.

rl-zoo's own plotting (``rl_zoo3.plots.all_plots`` / ``plot_from_file``) reads ``evaluations.npz`` too, but from
``<exp-folder>/<algo>/<env>*`` folder trees matched by env-name substring rather than from given run folders, shows
figures instead of writing a file (``all_plots``), has no base line, and needs seaborn and pytablewriter, which the
zoo does not install; so this module draws the figure itself with matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_Y_LABELS = {"success": "success rate (%)", "return": "mean episode return"}


@dataclass
class RunCurve:
    """One run's evaluations: ``steps (E,)``, ``values (E,)`` (success in % or mean return) and the base's value."""

    run_dir: Path
    steps: np.ndarray
    values: np.ndarray
    base: float | None
    group: str
    label: str


@dataclass
class CurveGroup:
    """Runs of one config (seeds): their curves on common steps."""

    label: str
    runs: list[RunCurve] = field(default_factory=list)

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """``(steps (E,), values (S, E))`` on the first run's steps up to the shortest run's last evaluation
        (linear interpolation where runs evaluated at other steps)."""
        end = min(float(r.steps[-1]) for r in self.runs)
        steps = self.runs[0].steps[self.runs[0].steps <= end]
        values = np.stack([np.interp(steps, r.steps, r.values) for r in self.runs])
        return steps, values

    @property
    def base(self) -> float | None:
        bases = [r.base for r in self.runs if r.base is not None]
        return float(np.mean(bases)) if bases else None


def _config_key(run_dir: Path) -> str:
    """Algo, env and the resolved config: equal for the seeds of one config."""
    found = sorted(run_dir.glob("*/config.yml"))
    if not found:
        return str(run_dir)
    import yaml

    args_path = found[0].parent / "args.yml"
    args = yaml.safe_load(args_path.read_text()) if args_path.is_file() else {}
    return f"{args.get('algo')}|{args.get('env')}|{found[0].read_text()}"


def load_curve(run_dir: str | Path, y: str = "auto") -> RunCurve:
    """Read a run folder's ``evaluations.npz``.

    :param y: ``"success"`` (percent of episodes with ``is_success``), ``"return"`` or ``"auto"`` (success when
        the run recorded it).
    """
    run = Path(run_dir)
    path = run / "evaluations.npz"
    if not path.is_file():
        raise ValueError(
            f"{str(path)!r} does not exist; plot folders of runs trained with evaluations (sb3_vla.train "
            "--eval-freq N > 0)"
        )
    with np.load(path) as data:
        files = set(data.files)
        if y == "auto":
            y = "success" if "successes" in files else "return"
        if y == "success" and "successes" not in files:
            raise ValueError(f"{str(path)!r} has no success record (the env reports no is_success); use --y return")
        if y not in _Y_LABELS:
            raise ValueError(f"y must be 'success', 'return' or 'auto', got {y!r}")
        steps = np.asarray(data["timesteps"], dtype=np.float64)
        if y == "success":
            values = 100.0 * np.asarray(data["successes"], dtype=np.float64).reshape(len(steps), -1).mean(axis=1)
            base = 100.0 * float(np.mean(data["base_successes"])) if "base_successes" in files else None
        else:
            values = np.asarray(data["results"], dtype=np.float64).reshape(len(steps), -1).mean(axis=1)
            base = float(np.mean(data["base_results"])) if "base_results" in files else None
    if len(steps) == 0:
        raise ValueError(f"{str(path)!r} holds no evaluation yet")
    label = f"{run.parent.name}/{run.name}" if run.parent.name else run.name
    return RunCurve(run, steps, values, base, _config_key(run), label)


def group_runs(curves: list[RunCurve], labels: list[str] | None = None) -> list[CurveGroup]:
    """Group curves by config (seeds of one config together), in the order given; ``labels`` name the groups."""
    groups: dict[str, CurveGroup] = {}
    for c in curves:
        groups.setdefault(c.group, CurveGroup(c.label)).runs.append(c)
    out = list(groups.values())
    for g in out:
        if len(g.runs) > 1:
            g.label = f"{g.runs[0].label.rsplit('_', 1)[0]} ({len(g.runs)} seeds)"
    if labels is not None:
        if len(labels) != len(out):
            raise ValueError(f"--labels gives {len(labels)} names for {len(out)} curves (seeds of one config: one)")
        for g, name in zip(out, labels):
            g.label = name
    return out


def plot_runs(
    run_dirs: list[str | Path],
    out: str | Path,
    y: str = "auto",
    labels: list[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 4.0),
    dpi: int = 100,
) -> Path:
    """Draw the runs' curves into ``out`` (any format matplotlib writes: ``.png``, ``.svg``, ``.pdf``).

    Example (``evaluations.npz`` as :class:`~sb3_vla.evaluation.FixedSeedEvalCallback` writes it)::

        >>> import tempfile
        >>> from pathlib import Path
        >>> run = Path(tempfile.mkdtemp()) / "Pendulum-v1_1"
        >>> run.mkdir()
        >>> np.savez(run / "evaluations.npz", timesteps=[1000, 2000], results=[[-700.0, -650.0], [-300.0, -250.0]],
        ...          base_results=[-900.0, -850.0])
        >>> load_curve(run).values.tolist()  # mean return per evaluation
        [-675.0, -275.0]
        >>> plot_runs([run], run.parent / "curve.png").is_file()
        True
        >>> import shutil; shutil.rmtree(run.parent)
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    if not run_dirs:
        raise ValueError("give at least one run folder")
    if y == "auto":  # every curve of one figure shows the same quantity
        y = "success" if all(_has_success(Path(r)) for r in run_dirs) else "return"
    curves = [load_curve(r, y) for r in run_dirs]
    kind = y
    groups = group_runs(curves, labels)
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, g in enumerate(groups):
        colour = colours[i % len(colours)]
        steps, values = g.stacked()
        mean = values.mean(axis=0)
        ax.plot(steps, mean, color=colour, marker="o", markersize=3, label=g.label)
        if len(g.runs) > 1:
            std = values.std(axis=0)
            ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        if g.base is not None:
            name = "base" if len(groups) == 1 else f"base ({g.label})"
            ax.axhline(g.base, color=colour, linestyle="--", linewidth=1.2, label=name)
    ax.set_xlabel("env steps")
    ax.set_ylabel(_Y_LABELS[kind])
    if kind == "success":
        ax.set_ylim(-2, 102)
    ax.set_title(title or ", ".join(dict.fromkeys(c.run_dir.name.rsplit("_", 1)[0] for c in curves)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _has_success(run_dir: Path) -> bool:
    path = run_dir / "evaluations.npz"
    if not path.is_file():
        return False  # load_curve names the missing file
    with np.load(path) as data:
        return "successes" in data.files


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sb3_vla.plot", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", "-o", default="curve.png", help="output image (.png, .svg, .pdf)")
    p.add_argument("--y", choices=["auto", "success", "return"], default="auto")
    p.add_argument("--labels", nargs="+", default=None, help="one name per curve (seeds of a config: one curve)")
    p.add_argument("--title", default=None)
    p.add_argument("--figsize", type=float, nargs=2, default=[6.4, 4.0], metavar=("W", "H"), help="inches")
    p.add_argument("--dpi", type=int, default=100)
    args = p.parse_args(argv)
    try:
        path = plot_runs(args.run_dirs, args.out, args.y, args.labels, args.title, tuple(args.figsize), args.dpi)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
