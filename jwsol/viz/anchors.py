"""Pictures for k-means anchor boxes (`jwsol.anchors`): the elbow curve and the cluster scatter.

Drawn on `matplotlib.figure.Figure` objects (Agg canvas, no pyplot state), saved as PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def cluster_colors(k: int) -> np.ndarray:
    """k distinct RGBA colours [k, 4]: tab10 up to 10 clusters, tab20 up to 20, then hsv."""
    name = "tab10" if k <= 10 else "tab20" if k <= 20 else "hsv"
    cmap = colormaps[name]
    if name == "hsv":
        return cmap(np.linspace(0.0, 1.0, k, endpoint=False))
    return cmap(np.arange(k))


def plot_elbow(
    ks: Sequence[int],
    costs: Sequence[float],
    mean_ious: Sequence[float],
    chosen_k: int | None,
    path: str,
    *,
    title: str | None = None,
) -> None:
    """Within-cluster cost (left axis) and mean IoU (right axis) against k; the chosen k marked."""
    ks, costs, mean_ious = np.asarray(ks), np.asarray(costs), np.asarray(mean_ious)
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.add_subplot()
    cost_line = ax.plot(ks, costs, "o-", color="tab:blue", label="cost = sum(1 - IoU)")
    ax.set_xlabel("k (number of anchors)")
    ax.set_ylabel("within-cluster cost", color="tab:blue")
    ax.set_xticks(ks)
    ax2 = ax.twinx()
    iou_line = ax2.plot(ks, mean_ious, "s-", color="tab:orange", label="mean IoU to nearest anchor")
    ax2.set_ylabel("mean IoU", color="tab:orange")
    lines = cost_line + iou_line
    if chosen_k is not None:
        i = int(np.flatnonzero(ks == chosen_k)[0])
        lines += [ax.axvline(chosen_k, color="gray", linestyle="--", label=f"elbow k = {chosen_k}")]
        ax2.annotate(
            f"{mean_ious[i]:.3f}", (chosen_k, mean_ious[i]), textcoords="offset points",
            xytext=(6, -12), color="tab:orange",
        )  # fmt: skip
    ax.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=8)
    ax.set_title(title or "k-means anchors: cost and mean IoU against k")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def plot_clusters(
    wh: np.ndarray,
    assignment: np.ndarray,
    anchors: np.ndarray,
    path: str,
    *,
    units: str = "relative",
    max_points: int = 20000,
    seed: int = 0,
    title: str | None = None,
) -> None:
    """Height against width of the boxes, coloured by cluster, with the anchors drawn.

    wh: [N, 2] (width, height); assignment: int [N] in [0, K); anchors: [K, 2]. Each anchor is a
    star, and its box is outlined from the origin (boxes and anchors aligned at a corner, as in
    the IoU used for clustering). At most `max_points` boxes are drawn (a fixed random subset).
    """
    wh, assignment, anchors = np.asarray(wh), np.asarray(assignment), np.asarray(anchors)
    if wh.shape[0] > max_points:
        keep = np.random.default_rng(seed).choice(wh.shape[0], max_points, replace=False)
        wh, assignment = wh[keep], assignment[keep]
    colors = cluster_colors(anchors.shape[0])
    fig = Figure(figsize=(6.0, 6.0), dpi=110)
    ax = fig.add_subplot()
    size = 4 if wh.shape[0] > 2000 else 10
    ax.scatter(wh[:, 0], wh[:, 1], s=size, c=colors[assignment], alpha=0.5, linewidths=0)
    for j, (aw, ah) in enumerate(anchors):
        ax.add_patch(Rectangle((0, 0), aw, ah, fill=False, edgecolor=colors[j], linewidth=1.2))
    ax.scatter(
        anchors[:, 0], anchors[:, 1], s=160, marker="*", c=colors, edgecolors="black",
        linewidths=0.8, zorder=3, label="anchors",
    )  # fmt: skip
    unit = "relative to the image" if units == "relative" else units
    ax.set_xlabel(f"box width ({unit})")
    ax.set_ylabel(f"box height ({unit})")
    top = float(max(wh.max(initial=0.0), anchors.max())) * 1.05
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or f"box sizes and k = {anchors.shape[0]} anchors", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Figure, path: str) -> None:
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path)
