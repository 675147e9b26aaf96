"""NumPy twins of `jwsol.ops.boxes`, importable without JAX (data/, metrics/ and evaluators).

Boxes are float arrays `[..., 4]` holding (x1, y1, x2, y2). `plus_one=False` (the default) is
the continuous convention of `jwsol.ops.boxes`: a box covering pixels 0..9 is (0, 0, 10, 10)
with area 100. `plus_one=True` is the VOC devkit's inclusive-pixel convention: the same pixels
are (0, 0, 9, 9) and widths are x2 - x1 + 1. Float inputs keep their dtype; integer inputs
become float64.
"""

from __future__ import annotations

import numpy as np


def _floats(boxes) -> np.ndarray:
    boxes = np.asarray(boxes)
    return boxes if boxes.dtype.kind == "f" else boxes.astype(np.float64)


def areas(boxes: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """Areas `[...]` of `boxes: [..., 4]` (not clamped: malformed boxes give odd areas)."""
    boxes = _floats(boxes)
    one = 1.0 if plus_one else 0.0
    return (boxes[..., 2] - boxes[..., 0] + one) * (boxes[..., 3] - boxes[..., 1] + one)


def intersections(a: np.ndarray, b: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """Intersection areas of broadcastable `a: [..., 4]` and `b: [..., 4]` -> `[...]`."""
    a, b = _floats(a), _floats(b)
    one = 1.0 if plus_one else 0.0
    width = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return np.maximum(width + one, 0.0) * np.maximum(height + one, 0.0)


def iou(a: np.ndarray, b: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """IoU of broadcastable `a: [..., 4]` and `b: [..., 4]` -> `[...]` (0 where the union is 0).

    Row-wise for two `[N, 4]` arrays; `iou_matrix` gives every pair.
    """
    inter = intersections(a, b, plus_one)
    union = areas(a, plus_one) + areas(b, plus_one) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray, plus_one: bool = False) -> np.ndarray:
    """IoU of every box in `a: [N, 4]` with every box in `b: [M, 4]` -> `[N, M]`."""
    a, b = _floats(a).reshape(-1, 4), _floats(b).reshape(-1, 4)
    return iou(a[:, None, :], b[None, :, :], plus_one)


def clip_boxes(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    """`boxes: [..., 4]` clamped to the image (x to [0, width], y to [0, height]) -> float32
    [N, 4]."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    limits = np.array([width, height, width, height], np.float32)
    return np.clip(boxes, 0.0, limits)


def nms_numpy(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_output: int | None = None
) -> np.ndarray:
    """Host twin of `jwsol.ops.boxes.nms` (same rules, same tie-breaking): kept indices `[K]`
    int64, boxes `[N, 4]`, scores `[N]`."""
    boxes = np.asarray(boxes)
    scores = np.asarray(scores)
    check_nms_inputs(boxes.shape, scores.shape)
    order = np.argsort(-scores, kind="stable")
    box_areas = areas(boxes)
    keep = []
    limit = len(order) if max_output is None else max_output
    while order.size > 0 and len(keep) < limit:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        inter = intersections(boxes[i], boxes[rest])
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = inter / (box_areas[i] + box_areas[rest] - inter)
        # NaN (0/0 for degenerate pairs) compares False: such boxes survive, as in torchvision.
        order = rest[~(overlap > iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def check_nms_inputs(boxes_shape: tuple[int, ...], scores_shape: tuple[int, ...]) -> None:
    if len(boxes_shape) != 2 or boxes_shape[1] != 4:
        raise ValueError(f"boxes must be [N, 4], got shape {boxes_shape}")
    if scores_shape != boxes_shape[:1]:
        raise ValueError(f"scores must be [N] = {boxes_shape[:1]}, got shape {scores_shape}")
