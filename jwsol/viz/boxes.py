"""Boxes on images: single panels and grids, as matplotlib figures or uint8 arrays."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def draw_boxes(
    ax, boxes: np.ndarray, color: str, labels: Sequence[str] | None = None, linewidth: float = 1.5
) -> None:
    """Draws boxes [K, 4] (x1, y1, x2, y2 in pixel edges) on `ax`, with optional text labels."""
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float32).reshape(-1, 4)):
        # imshow puts pixel centres at integers, so pixel edges sit at -0.5 offsets.
        ax.add_patch(
            plt.Rectangle(
                (x1 - 0.5, y1 - 0.5),
                x2 - x1,
                y2 - y1,
                fill=False,
                edgecolor=color,
                linewidth=linewidth,
            )
        )
        if labels is not None and k < len(labels):
            ax.text(
                x1 - 0.5,
                y1 - 1.5,
                labels[k],
                color="white",
                fontsize=6,
                bbox={"facecolor": color, "alpha": 0.7, "pad": 0.5, "linewidth": 0},
            )


def figure_to_array(fig) -> np.ndarray:
    """Renders a figure to uint8 [H, W, 3] and closes it."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def box_grid(
    images: np.ndarray,
    true_boxes: np.ndarray,
    pred_boxes: np.ndarray,
    titles: Sequence[str],
    ncols: int = 6,
    panel_inches: float = 1.8,
) -> np.ndarray:
    """A grid of images [K, H, W(, 1 or 3)] with true boxes green and predicted boxes red.

    Returns the rendered grid as uint8 [H, W, 3].
    """
    k = len(images)
    nrows = max(1, -(-k // ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * panel_inches, nrows * panel_inches * 1.1)
    )
    for idx, ax in enumerate(np.asarray(axes).ravel()):
        ax.axis("off")
        if idx >= k:
            continue
        image = np.asarray(images[idx])
        ax.imshow(
            image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image,
            cmap="gray",
            vmin=0,
            vmax=1 if image.dtype.kind == "f" else 255,
        )
        draw_boxes(ax, true_boxes[idx], "lime")
        draw_boxes(ax, pred_boxes[idx], "red")
        ax.set_title(titles[idx], fontsize=7)
    fig.tight_layout()
    return figure_to_array(fig)
