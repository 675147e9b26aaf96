"""Multi-label figures: each class's best and worst scored images, and the tail-accuracy curve."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from jwsol.viz.boxes import figure_to_array

FRAME_COLOURS = {1: (50, 205, 50), 0: (220, 30, 30), -1: (150, 150, 150)}


def ranked_images_figure(
    thumbs_top: np.ndarray,
    thumbs_bottom: np.ndarray,
    scores_top: np.ndarray,
    scores_bottom: np.ndarray,
    label_top: np.ndarray,
    label_bottom: np.ndarray,
    class_names,
) -> np.ndarray:
    """One row per class: its K best scored images, a gap, then its K worst. thumbs_* uint8
    [C, K, t, t, 3], scores_* [C, K], label_* [C, K] in {1 positive, 0 negative, -1 ignored,
    -2 no image}. Frames: green positive, red negative, grey ignored. Returns uint8 [H, W, 3].

    The grid is composed as one array and drawn with a single imshow (fast for 200 images).
    """
    num_classes, k, t = scores_top.shape[0], scores_top.shape[1], thumbs_top.shape[2]
    frame, gap, cell = 3, 12, t + 6 + 4  # 3 px frame each side, 4 px between images
    mosaic = np.full((num_classes * (cell + 10), 2 * k * cell + gap, 3), 255, np.uint8)
    texts = []
    for c in range(num_classes):
        y = c * (cell + 10) + 10  # 10 px above each row for the scores
        for j in range(2 * k):
            thumbs, scores, kinds = (
                (thumbs_top, scores_top, label_top) if j < k
                else (thumbs_bottom, scores_bottom, label_bottom)
            )  # fmt: skip
            kind = int(kinds[c, j % k])
            if kind == -2:
                continue
            x = j * cell + (gap if j >= k else 0)
            mosaic[y : y + t + 2 * frame, x : x + t + 2 * frame] = FRAME_COLOURS[kind]
            mosaic[y + frame : y + frame + t, x + frame : x + frame + t] = thumbs[c, j % k]
            texts.append((x + frame + t / 2, y - 2, f"{scores[c, j % k]:.2f}"))
    height, width = mosaic.shape[:2]
    fig, ax = plt.subplots(figsize=(width / 80 + 1.2, height / 80 + 0.4), dpi=100)
    ax.imshow(mosaic, interpolation="nearest")
    for x, y, text in texts:
        ax.text(x, y, text, fontsize=5, ha="center", va="bottom")
    ax.set_yticks([c * (cell + 10) + 10 + t / 2 + frame for c in range(num_classes)])
    ax.set_yticklabels(class_names, fontsize=7)
    ax.set_xticks([k * cell / 2, k * cell + gap + k * cell / 2])
    ax.set_xticklabels([f"{k} highest scores", f"{k} lowest scores"], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout(pad=0.3)
    return figure_to_array(fig)


def tail_curve_figure(thresholds: np.ndarray, curve: np.ndarray, mean: float) -> np.ndarray:
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(thresholds, curve, "o-", markersize=3)
    ax.set_xlabel("threshold t")
    ax.set_ylabel("tail accuracy (mean over classes)")
    ax.set_title(f"tail accuracy, mean {mean:.4f}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_array(fig)
