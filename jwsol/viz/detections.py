"""Detection figures: images with their top boxes, and AP per class."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from jwsol.viz.boxes import draw_boxes, figure_to_array


def detections_figure(shown: list[dict], ncols: int = 4, inches: float = 2.6) -> np.ndarray:
    """Images with true boxes (green) and the top box of each labelled class (red, with the
    class name and score), titled by an entry's optional "title"; each panel `inches` wide.
    uint8 [H, W, 3]."""
    k = max(len(shown), 1)
    ncols = min(ncols, k)
    nrows = -(-k // ncols)
    size = (inches * ncols, inches * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, entry in zip(axes.ravel(), shown):
        ax.imshow(entry["image"])
        draw_boxes(ax, entry["gt"], "lime", linewidth=1.0)
        draw_boxes(ax, entry["boxes"], "red", labels=entry["text"])
        if entry.get("title"):
            ax.set_title(entry["title"], fontsize=8)
    fig.tight_layout()
    return figure_to_array(fig)


def ap_bar_chart(ap: dict[str, float], mean: float, corloc: float, recall: float) -> np.ndarray:
    """Detection AP per class as bars, with mAP, CorLoc and proposal recall in the title."""
    names = list(ap)
    values = [0.0 if np.isnan(ap[n]) else ap[n] for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(names) + 1.5), 3.2))
    ax.bar(range(len(names)), values, color="tab:blue")
    ax.axhline(mean, color="tab:red", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AP (IoU 0.5)")
    ax.set_title(f"mAP {mean:.3f}  CorLoc {corloc:.3f}  proposal recall {recall:.3f}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_to_array(fig)
