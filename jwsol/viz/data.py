"""Pictures of detection data: true boxes with class names, and the top proposals.

Matplotlib (Agg) only. Boxes are (x1, y1, x2, y2) in the pixels of the image drawn, edge
convention (a box [0, 0, w, h] outlines the whole image).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

_PROPOSAL_COLORS = plt.get_cmap("tab10").colors


def _draw(ax, boxes: np.ndarray, colors, labels: Sequence[str] | None = None) -> None:
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float32).reshape(-1, 4)):
        color = colors[k % len(colors)]
        # NOTE: matplotlib's imshow puts pixel i's centre at i, so pixel edges sit at -0.5.
        ax.add_patch(
            plt.Rectangle(
                (x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.5
            )
        )
        if labels is not None:
            ax.text(
                x1 - 0.5,
                y1 - 0.5,
                labels[k],
                color="white",
                fontsize=7,
                va="bottom",
                bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "linewidth": 0},
            )


def draw_example(
    image: np.ndarray,
    gt_boxes: np.ndarray,
    gt_names: Sequence[str],
    proposals: np.ndarray,
    *,
    top_n: int = 10,
    title: str = "",
) -> plt.Figure:
    """Two panels: the true boxes with their class names, and the first `top_n` proposals.

    Args:
      image: uint8 [H, W, 3] (or [H, W]).
      gt_boxes: [G, 4]; gt_names: G names ('(difficult)' may be appended by the caller).
      proposals: [P, 4], best first (by score, or in the source's ranking).
    Returns the figure (the caller saves and closes it).
    """
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 5.2))
    cmap = "gray" if np.asarray(image).ndim == 2 else None
    for ax in (left, right):
        ax.imshow(image, cmap=cmap)
        ax.set_axis_off()
    _draw(left, gt_boxes, [(0.1, 0.8, 0.1)], labels=list(gt_names))
    left.set_title(f"true boxes ({len(gt_boxes)})", fontsize=9)
    top = np.asarray(proposals).reshape(-1, 4)[:top_n]
    _draw(right, top, _PROPOSAL_COLORS, labels=[str(k + 1) for k in range(len(top))])
    right.set_title(f"top {len(top)} proposals", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def save_example(path: str, *args, **kwargs) -> None:
    """`draw_example(*args, **kwargs)` saved to a PNG at `path`."""
    figure = draw_example(*args, **kwargs)
    figure.savefig(path, dpi=110)
    plt.close(figure)
