"""Pictures of detection data: true boxes with class names, and the top proposals.

Matplotlib (Agg); boxes are drawn with `jwsol.viz.boxes.draw_boxes`, as (x1, y1, x2, y2) in the
pixels of the image drawn, edge convention (a box [0, 0, w, h] outlines the whole image).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from jwsol.viz.boxes import draw_boxes

_PROPOSAL_COLORS = [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab10").colors]
_TRUE_COLOR = "#1acc1a"


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
    draw_boxes(left, gt_boxes, _TRUE_COLOR, labels=list(gt_names))
    left.set_title(f"true boxes ({len(gt_boxes)})", fontsize=9)
    top = np.asarray(proposals).reshape(-1, 4)[:top_n]
    for k, box in enumerate(top):
        draw_boxes(
            right, box[None], _PROPOSAL_COLORS[k % len(_PROPOSAL_COLORS)], labels=[str(k + 1)]
        )
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
