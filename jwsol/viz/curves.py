"""Training curves from a run's metrics.jsonl, as a PNG (any job, any keys).

    python -m jwsol.viz.curves WORKDIR [--keys loss,top1] [--out PATH]

writes WORKDIR/figures/curves.png (or PATH). The loop logs training metrics as `NAME` (means
over the steps since the last log) and evaluations as `eval/NAME`; one panel per NAME shows
both against the step. By default the panels are the names logged both ways (e.g. loss and
top1 for classification: train and test loss and accuracy); if there are none, every name.
A panel named `PREFIX*` (e.g. `ap/*`) draws every evaluated `eval/PREFIX...` series in one panel,
one line each (WSDDN's per-class AP against the step). A task picks its panels with
`Task.curve_panels`.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jwsol import errors
from jwsol.errors import DataError
from jwsol.viz.boxes import figure_to_array

EVAL_PREFIX = "eval/"


def read_metrics(path: str) -> list[dict]:
    """The rows of a metrics.jsonl (one JSON object a line, each with 'step')."""
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist: train first (it is written at every log step).")
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {number}: not JSON ({e}).") from e
            if not isinstance(row, dict) or "step" not in row:
                raise DataError(f"{path} line {number}: expected an object with 'step'.")
            rows.append(row)
    return rows


def series(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` over the rows that have a finite number for it; a step logged
    twice (e.g. a resumed run) keeps its last value."""
    points: dict[int, float] = {}
    for row in rows:
        value = row.get(key)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and math.isfinite(value):
            points[int(row["step"])] = float(value)
    steps = np.array(sorted(points), np.int64)
    return steps, np.array([points[s] for s in steps], np.float64)


def default_panels(rows: Sequence[dict]) -> list[str]:
    """Names logged both for training (NAME) and evaluation (eval/NAME); else every name."""
    keys = {k for row in rows for k in row if k != "step"}
    paired = sorted(k for k in keys if not k.startswith(EVAL_PREFIX) and EVAL_PREFIX + k in keys)
    if paired:
        return paired
    return sorted({k.removeprefix(EVAL_PREFIX) for k in keys})


def curve_data(
    rows: Sequence[dict], panels: Sequence[str] | None = None
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{panel name: {'train': (steps, values), 'test': (steps, values)}}, each present only if
    logged. `panels` default: `default_panels`, leaving out names that never had a finite value
    (e.g. the AP of a class without positives); so are requested names logged only as NaN. A
    requested name never logged is a DataError."""
    requested = bool(panels)
    panels = list(panels) if panels else default_panels(rows)
    if not panels:
        raise DataError("metrics.jsonl holds no metrics to plot.")
    data = {}
    keys = sorted({k for row in rows for k in row})
    for name in panels:
        lines = {}
        if name.endswith("*"):
            prefix = EVAL_PREFIX + name[:-1]
            pairs = [(k, k[len(prefix) :]) for k in keys if k.startswith(prefix)]
        else:
            pairs = [(name, "train"), (EVAL_PREFIX + name, "test")]
        for key, label in pairs:
            steps, values = series(rows, key)
            if len(steps):
                lines[label] = (steps, values)
        # A name logged only as NaN (e.g. map of a data set without true boxes) is left out;
        # one never logged is a misspelt panel.
        if not lines and requested and not any(key in keys for key, _ in pairs):
            raise DataError(f"no values of {name!r} or {EVAL_PREFIX + name!r} in metrics.jsonl.")
        if lines:
            data[name] = lines
    if not data:
        raise DataError("metrics.jsonl holds no finite values to plot.")
    return data


def plot_curves(
    rows: Sequence[dict], panels: Sequence[str] | None = None, ncols: int = 3
) -> np.ndarray:
    """One panel per name of `curve_data`: train and test against the step. Returns uint8
    [H, W, 3]."""
    data = curve_data(rows, panels)
    ncols = min(ncols, len(data))
    nrows = -(-len(data) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.ravel()[len(data) :]:
        ax.axis("off")
    for ax, (name, lines) in zip(axes.ravel(), data.items()):
        group = name.endswith("*")
        for number, (label, (steps, values)) in enumerate(lines.items()):
            colour = f"C{number % 10}" if group else ("C0" if label == "train" else "C1")
            style = "-" if label == "train" else ("o-" if number < 10 or not group else "s--")
            ax.plot(steps, values, style, color=colour, label=label, markersize=3)
        ax.set_title(f"eval/{name}" if group else name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6 if group else 8, ncol=2 if len(lines) > 6 else 1)
    fig.tight_layout()
    return figure_to_array(fig)


def write_curves(workdir: str, panels: Sequence[str] | None = None, out: str = "") -> str:
    """Plots WORKDIR/metrics.jsonl into `out` (default WORKDIR/figures/curves.png); returns the
    path."""
    from PIL import Image

    image = plot_curves(read_metrics(os.path.join(workdir, "metrics.jsonl")), panels)
    out = out or os.path.join(workdir, "figures", "curves.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    Image.fromarray(image).save(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = errors.ArgumentParser(
        prog="python -m jwsol.viz.curves", description="Plot a run's metrics.jsonl to a PNG."
    )
    parser.add_argument("workdir", help="run directory holding metrics.jsonl")
    parser.add_argument("--keys", default="", help="comma-separated names (default: see module)")
    parser.add_argument("--out", default="", help="PNG path (default WORKDIR/figures/curves.png)")
    args = parser.parse_args(argv)
    panels = [k.strip() for k in args.keys.split(",") if k.strip()] or None
    return errors.run_main(
        lambda: print(f"wrote {write_curves(args.workdir, panels, args.out)}"), args.verbose
    )


if __name__ == "__main__":
    sys.exit(main())
