"""``chargen plot``: the loss curves of one or more runs, from their ``metrics.jsonl``.

With ``--out`` it writes a PNG, SVG or PDF with matplotlib (the optional ``plot`` extra, imported
only here); without, it draws the curves in the terminal with braille characters (``charts.py``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import BEST_NAME, LAST_NAME, read_metadata
from ..errors import ChargenError
from ..fileio import atomic_write_bytes
from ..training.rundir import METRICS_NAME, read_metrics
from .charts import LineChart

X_AXES = {"step": "step", "tokens": "tokens seen", "time": "time (s)"}
FORMATS = (".png", ".svg", ".pdf")
HEIGHTS = (4, 200)  # terminal chart rows
# One colour per run, in the terminal and in files (matplotlib's default cycle).
TERMINAL_STYLES = ["cyan", "magenta", "green", "yellow", "blue", "red"]
MISSING_MATPLOTLIB = "--out needs matplotlib to write files: pip install 'chargen[plot]' (or drop --out to draw in the terminal)"


def add_plot_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (or their metrics.jsonl)")
    parser.add_argument("--x", choices=sorted(X_AXES), default="step", help="the x axis (default: step)")
    parser.add_argument("--log-y", action="store_true", help="logarithmic loss axis")
    parser.add_argument("--out", help="write this file (.png, .svg or .pdf) instead of drawing in the terminal")
    parser.add_argument("--height", type=int, default=16,
                        help=f"terminal chart height in rows, {HEIGHTS[0]} to {HEIGHTS[1]} (default: 16)")


@dataclass
class RunCurves:
    """One run's losses: (step, seconds, nats/char) per logged training step and per evaluation."""

    name: str
    path: Path
    train: list[tuple[int, float, float]]
    val: list[tuple[int, float, float]]
    tokens_per_step: int | None

    def points(self, which: str, x: str) -> list[tuple[float, float]]:
        rows = self.train if which == "train" else self.val
        if x == "tokens":
            if not self.tokens_per_step:
                raise ChargenError(f"--x tokens: {self.path} has no checkpoint to read the batch size and "
                                   "sequence length from; use --x step or --x time")
            return [(step * self.tokens_per_step, loss) for step, _, loss in rows]
        return [(step if x == "step" else seconds, loss) for step, seconds, loss in rows]

    def best(self, x: str) -> tuple[float, float] | None:
        val = self.points("val", x)
        return min(val, key=lambda p: p[1]) if val else None


def metrics_path(run: str) -> Path:
    path = Path(run)
    if path.is_file():
        return path
    if not path.exists():
        raise ChargenError(f"{run}: no such run directory; give one that chargen train wrote (it holds {METRICS_NAME})")
    if not (path / METRICS_NAME).is_file():
        raise ChargenError(f"{run}: no {METRICS_NAME} in this directory; give a run directory that chargen train wrote")
    return path / METRICS_NAME


def tokens_per_step(run_dir: Path) -> int | None:
    """batch size x sequence length, from the run's checkpoint (the values auto chose, if it did)."""
    for name in (LAST_NAME, BEST_NAME):
        try:
            config = read_metadata(run_dir / name)["summary"]["train_config"]
            return int(config["batch_size"]) * int(config["seq_len"])
        except (ChargenError, OSError, KeyError, TypeError, ValueError):
            continue
    return None


def load_run(run: str) -> RunCurves:
    """A run's curves, read up to its last whole record. A log whose steps go back (two runs
    appended to one file) is refused: its curves would zigzag between them."""
    path = metrics_path(run)
    records = read_metrics(path)
    train, val = [], []
    for record in records:
        step, seconds = record.get("step"), record.get("time")
        if not isinstance(step, (int, float)) or not isinstance(seconds, (int, float)):
            continue
        for key, rows in (("train_loss", train), ("val_loss", val)):
            if isinstance(record.get(key), (int, float)):
                if rows and step < rows[-1][0]:
                    raise ChargenError(f"{path}: mixes runs (step {step} after step {rows[-1][0]}); give each run "
                                       "its own directory")
                rows.append((int(step), float(seconds), float(record[key])))
    if not train and not val:
        what = ("is empty" if path.stat().st_size == 0 else
                "holds no whole record (cut short, or not a chargen metrics log)" if not records else
                "holds no losses yet")
        raise ChargenError(f"{path}: {what}; plot a run that has trained for a few steps")
    name = path.parent.name if path.name == METRICS_NAME else path.stem
    return RunCurves(name, path, train, val, tokens_per_step(path.parent))


def load_runs(runs: list[str]) -> list[RunCurves]:
    loaded = [load_run(run) for run in runs]
    names = [r.name for r in loaded]
    if len(set(names)) < len(names):  # same directory names in different places: show the paths
        for r in loaded:
            r.name = str(r.path.parent)
    return loaded


def terminal_chart(runs: list[RunCurves], x: str, log_y: bool, height: int) -> LineChart:
    """Train (dim) and validation curves of every run, each run in its own colour, best val marked."""
    curves, styles, names = [], [], []
    for n, run in enumerate(runs):
        style = TERMINAL_STYLES[n % len(TERMINAL_STYLES)]
        solo = len(runs) == 1
        curves += [run.points("train", x), run.points("val", x)]
        styles += ["cyan" if solo else f"dim {style}", "magenta" if solo else f"bold {style}"]
        names += ["train", "val"] if solo else [f"{run.name} train", f"{run.name} val"]
    marks = [b for b in (run.best(x) for run in runs) if b]
    return LineChart(curves, styles, names, height=height, log_y=log_y, x_label=X_AXES[x], marks=marks)


def figure_bytes(runs: list[RunCurves], x: str, log_y: bool, fmt: str) -> bytes:
    """The chart as a matplotlib figure in ``fmt`` (png, svg, pdf)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ChargenError(MISSING_MATPLOTLIB) from None
    fig = Figure(figsize=(8, 4.5), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for n, run in enumerate(runs):
        colour = f"C{n % 10}"
        label = "" if len(runs) == 1 else f"{run.name} "
        train = run.points("train", x)
        if train:
            ax.plot(*zip(*train), color=colour, alpha=0.35, linewidth=0.8, label=f"{label}train")
        val = run.points("val", x)
        if val:
            ax.plot(*zip(*val), color=colour, marker="o", markersize=3, linewidth=1.6, label=f"{label}val")
        best = run.best(x)
        if best:
            ax.plot(*best, marker="*", markersize=13, color="gold", markeredgecolor="black", zorder=5)
            ax.annotate(f"best {best[1]:.4f}", best, xytext=(6, -14), textcoords="offset points", fontsize=8)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel("loss (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(", ".join(r.name for r in runs), fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    return buffer.getvalue()


def plot(args) -> int:
    if args.out and Path(args.out).suffix.lower() not in FORMATS:
        raise ChargenError(f"--out {args.out}: the file name must end in {', '.join(FORMATS)}")
    if not HEIGHTS[0] <= args.height <= HEIGHTS[1]:
        raise ChargenError(f"--height {args.height}: must be between {HEIGHTS[0]} and {HEIGHTS[1]} rows")
    runs = load_runs(args.runs)
    if args.out:
        out = Path(args.out)
        atomic_write_bytes(out, figure_bytes(runs, args.x, args.log_y, out.suffix.lower()[1:]), "plot")
        print(f"wrote {out}")
        return 0
    from rich.console import Console

    for run in runs:  # fails before anything is drawn if an axis is missing
        run.points("train", args.x)
    Console().print(terminal_chart(runs, args.x, args.log_y, args.height))
    return 0
