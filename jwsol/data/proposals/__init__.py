"""Region proposals: cleaning here; Fast R-CNN style `.mat` files in `proposals.mat`, selective
search, the box grid and their disk cache in `proposals.search`.

Everything here is host-side NumPy (no TensorFlow, no JAX), so worker processes stay light.

Box convention used throughout `jwsol.data`: float32 `[N, 4]` as `(x1, y1, x2, y2)` in
continuous pixel-edge coordinates of the original image: a box covering the 0-based pixel
columns `a..b` (inclusive) has `x1 = a, x2 = b + 1`, so its width is `x2 - x1` and resizing
the image by `s` maps the box to `s * box` exactly (for half-pixel-centre resizing, which is
what `tf.image.resize` and `cv2.resize` do). 1-based inclusive files (VOC XML, the `.mat`
proposal files) convert as `x1 - 1, y1 - 1, x2, y2`.
"""

from __future__ import annotations

import numpy as np

from jwsol.ops.boxes_np import clip_boxes


def valid_box_mask(boxes: np.ndarray, min_size: float = 0.0) -> np.ndarray:
    """bool [N]: finite boxes whose width and height are > 0 and >= `min_size`."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    finite = np.all(np.isfinite(boxes), axis=1)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    with np.errstate(invalid="ignore"):
        return finite & (widths > 0) & (heights > 0) & (widths >= min_size) & (heights >= min_size)


def unique_boxes(boxes: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the first occurrence of each distinct box in `boxes [N, 4]`."""
    boxes = np.ascontiguousarray(np.asarray(boxes, np.float32).reshape(-1, 4))
    if len(boxes) == 0:
        return np.zeros([0], np.int64)
    _, first = np.unique(boxes, axis=0, return_index=True)
    return np.sort(first)


def clean_proposals(
    boxes: np.ndarray,
    scores: np.ndarray | None,
    height: float,
    width: float,
    *,
    min_size: float,
    top_k: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Clips to the image, drops boxes under `min_size` or empty, drops duplicates, ranks.

    Args:
      boxes: float [P, 4] (x1, y1, x2, y2) original-image pixels (edge convention).
      scores: float [P] or None.
      height, width: the original image size.
      min_size: smallest width and height kept, in original pixels.
      top_k: when scores exist, keep the `top_k` best (0 keeps all). Without scores the order
        is the source's (selective search's own ranking) and nothing is cut here.
    Returns:
      boxes float32 [P', 4] and scores float32 [P'] (None when the input had none); with scores
      the boxes are sorted by descending score (stable, so ties keep the source order).
    """
    boxes = clip_boxes(boxes, height, width)
    keep = valid_box_mask(boxes, min_size)
    boxes = boxes[keep]
    if scores is not None:
        scores = np.asarray(scores, np.float32).reshape(-1)[keep]
    first = unique_boxes(boxes)
    boxes = boxes[first]
    if scores is None:
        return boxes, None
    scores = scores[first]
    order = np.argsort(-scores, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    return boxes[order], scores[order]
