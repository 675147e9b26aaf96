"""Localization accuracy from class heatmaps (host side, NumPy / SciPy): CorLoc, MaxBoxAcc,
MaxBoxAccV2 and box coverage, every cam threshold at once.

A sample is one (image, class) pair: a score map [h, w] computed on an S x S canvas whose
top-left (H, W) pixels hold the image, and the class's true boxes [M, 4] (x1, y1, x2, y2) in
pixel edges of that image (VOC's inclusive boxes need x2 + 1, y2 + 1; IoU without `+1`).
1. `heatmap_to_image` places the map on the image, bilinear between cell centres: each cell at
   its receptive-field centre (`geometry`), or spread over the canvas as `cv2.resize` would;
2. `normalize_heatmap` maps it to [0, 1] by min-max (Choe et al. 2020); a constant map is 0;
3. the mask at cam threshold t is `normalized >= t`; its 8-connected components give boxes
   (pixel edges: a component on columns 3..7 has x1 = 3, x2 = 8), the largest one being the
   most pixels (the first in row-major order on a tie).
A sample is a hit at (IoU threshold d, cam threshold t) when its box has IoU >= d with some
true box; no box is a miss.

`BoxAccumulator` pools samples into the metrics:
- corloc: hit rate at one cam threshold and d = 0.5, largest component, averaged per class then
  over classes;
- max_box_acc (Choe et al. 2020, "Evaluating Weakly Supervised Object Localization Methods
  Right"): the best pooled hit rate over cam thresholds at d = 0.5, largest component;
- max_box_acc_v2: the mean over d in {0.3, 0.5, 0.7} of the best pooled hit rate (each d its
  own threshold), with every component's box a candidate;
- box_coverage / mask_in_box: the mean fraction of true-box pixels inside the mask at the cam
  threshold, and of the mask inside the true boxes; _at_best: the same at MaxBoxAcc's
  threshold; box_coverage_at_in_box50: the coverage at the lowest threshold where half of the
  mask lies inside the boxes (coverage at equal precision, comparable between maps).
Cam thresholds are the grid 0, 1/T, ..., (T-1)/T. The rules above are the 'exact' convention;
'wsolevaluation' reads boxes off the map as clovaai/wsolevaluation does (`wsol_boxes`: a uint8
copy, contours with holes, inclusive corners and the `+1` IoU), for numbers comparable with
Choe et al.'s table.
"""

from __future__ import annotations

import functools

import numpy as np

from jwsol.ops.boxes_np import iou_matrix

V2_IOUS = (0.3, 0.5, 0.7)


# Heatmap placement ------------------------------------------------------------------------------


def interpolation_matrix(out_size: int, cells: int, first: float, step: float, scale: float):
    """Linear interpolation weights [out_size, cells] along one axis.

    Output pixel i has its centre at (i + 0.5) * scale input px; cell m sits at first + m * step.
    Outside the first/last cell centre the edge value is repeated (as cv2's bilinear resize).
    """
    centres = (np.arange(out_size) + 0.5) * scale
    u = np.clip((centres - first) / step, 0.0, cells - 1.0)
    low = np.floor(u).astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    frac = u - low
    weights = np.zeros((out_size, cells))
    rows = np.arange(out_size)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def heatmap_to_image(
    score_map: np.ndarray,
    canvas_size: int,
    image_size: tuple[int, int],
    out_size: tuple[int, int] | None = None,
    geometry: tuple[float, float] | None = None,
) -> np.ndarray:
    """One class's score map on the image it was computed from.

    score_map: [h, w] computed on an S x S input canvas (S = canvas_size) whose top-left
      (H, W) = image_size pixels hold the image (the rest is the pipeline's padding).
    out_size: (H', W') output resolution (default (H, W)): pixel (i, j) samples the image point
      ((j + 0.5) W / W', (i + 0.5) H / H').
    geometry: (centre of cell 0, distance between cells) in input pixels, the same along both
      axes (a receptive field); None spreads the map over the canvas (cell m at (m + 0.5) S / h).
    Returns float32 [H', W'], bilinear between cell centres.
    """
    score_map = np.asarray(score_map, np.float64)
    if score_map.ndim != 2:
        raise ValueError(f"score_map must be [h, w], got shape {score_map.shape}")
    height, width = (int(v) for v in image_size)
    out_h, out_w = (height, width) if out_size is None else (int(v) for v in out_size)
    rows, cols = score_map.shape
    if geometry is not None:
        (first_y, step_y), (first_x, step_x) = geometry, geometry
    else:
        step_y, step_x = canvas_size / rows, canvas_size / cols
        first_y, first_x = step_y / 2.0, step_x / 2.0
    along_y = interpolation_matrix(out_h, rows, first_y, step_y, height / out_h)
    along_x = interpolation_matrix(out_w, cols, first_x, step_x, width / out_w)
    return (along_y @ score_map @ along_x.T).astype(np.float32)


def sample_on_image(
    score_map: np.ndarray,
    canvas_size: int,
    image_size: tuple[int, int],
    true_boxes: np.ndarray,
    max_side: int = 0,
    geometry: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(normalised map [H', W'], true boxes [M, 4]) of one sample, ready for `BoxAccumulator`.

    At the image's resolution (H, W), or with its longer side shrunk to max_side when that is
    > 0 and smaller: the boxes are scaled alike, an approximation quantised to image/max_side px.
    """
    height, width = image_size
    scale = 1.0
    if max_side > 0 and max(height, width) > max_side:
        scale = max_side / max(height, width)
    out = (max(1, round(height * scale)), max(1, round(width * scale)))
    heat = heatmap_to_image(score_map, canvas_size, image_size, out, geometry)
    boxes = true_boxes * np.array([out[1] / width, out[0] / height] * 2)
    return normalize_heatmap(heat), boxes


def normalize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min) as float32 [H, W]; a constant map gives zeros."""
    heatmap = np.asarray(heatmap, np.float32)
    low, high = float(heatmap.min()), float(heatmap.max())
    if high <= low:
        return np.zeros_like(heatmap)
    return (heatmap - low) / (high - low)


# Boxes at every threshold -----------------------------------------------------------------------

CONVENTIONS = ("exact", "wsolevaluation")


def sweep_boxes(prepared: np.ndarray, thresholds: np.ndarray, convention: str = "exact"):
    """The candidate boxes of a normalised map [H, W] at every cam threshold [T].

    Returns (plane [K] threshold index, boxes float [K, 4], largest [T] index into boxes or -1).
    'exact': the 8-connected components of `prepared >= t`, pixel-edge boxes, the largest the
    most pixels (the first in row-major order on a tie), nothing where the mask is empty.
    'wsolevaluation': clovaai/wsolevaluation's `compute_bboxes_from_scoremaps` (`wsol_boxes`).
    """
    if convention == "exact":
        return exact_boxes(prepared, thresholds)
    if convention == "wsolevaluation":
        return wsol_boxes(prepared, thresholds)
    raise ValueError(f"box_convention={convention!r}; expected one of {CONVENTIONS}.")


def exact_boxes(prepared: np.ndarray, thresholds: np.ndarray):
    """`sweep_boxes` for 'exact', every threshold in one pass over the pixels.

    The components of `prepared >= t` nest as t falls, so they are the nodes of one component
    tree: pixels join a union-find from the highest level down, each root keeping its box,
    pixel count and first pixel, and after each threshold's pixels every root is a component.
    Compiled with numba (`_component_sweep`); about 50 ns a pixel whatever the thresholds.
    """
    prepared = np.ascontiguousarray(prepared, np.float32)
    if prepared.ndim != 2:
        raise ValueError(f"prepared must be a map [H, W], got shape {prepared.shape}")
    thresholds = np.asarray(thresholds, np.float32).reshape(-1)
    order = np.argsort(thresholds, kind="stable")  # the sweep wants them ascending
    plane, boxes, largest = _compiled_sweep()(
        prepared.reshape(-1), prepared.shape[1], np.ascontiguousarray(thresholds[order])
    )
    unsorted = np.full(len(thresholds), -1)
    unsorted[order] = largest
    return order[plane], boxes.astype(np.float64), unsorted


@functools.cache
def _compiled_sweep():
    """`_component_sweep` compiled (on first use, then from numba's on-disk cache)."""
    import numba

    return numba.njit(cache=True, nogil=True)(_component_sweep)


def _component_sweep(values: np.ndarray, width: int, thresholds: np.ndarray):
    """The 8-connected components of `values >= t` for every threshold t (plain Python that
    numba compiles; it runs uncompiled too, slowly).

    values: float32 [H * W] a map in row-major order; thresholds: float32 [T] ascending.
    Returns (plane int64 [K], boxes int64 [K, 4] pixel edges (x1, y1, x2, y2), largest int64 [T]:
    the row of plane t's component with the most pixels, the first in row-major order on a tie,
    or -1 for an empty mask).
    """
    n, t_count = values.shape[0], thresholds.shape[0]
    # level[p]: how many thresholds pixel p reaches; it is in the masks of planes < level[p]
    level = np.empty(n, np.int64)
    per_level = np.zeros(t_count + 1, np.int64)
    for p in range(n):
        v = values[p]
        low, high = 0, (0 if np.isnan(v) else t_count)  # NaN is in no mask
        while low < high:
            mid = (low + high) // 2
            if thresholds[mid] <= v:
                low = mid + 1
            else:
                high = mid
        level[p] = low
        per_level[low] += 1
    # pixels joining at plane t (level t + 1) are order[start[t]:...], the highest plane first
    start = np.zeros(t_count + 1, np.int64)
    for t in range(t_count - 2, -1, -1):
        start[t] = start[t + 1] + per_level[t + 2]
    order = np.empty(n, np.int64)
    fill = start.copy()
    for p in range(n):
        if level[p] > 0:
            order[fill[level[p] - 1]] = p
            fill[level[p] - 1] += 1
    # union-find over the pixels joined so far (-1: not yet); a root holds its component's
    # pixel count, box and first pixel; live[:live_count] are the roots, slot[r] r's place there
    parent = np.full(n, -1, np.int32)
    size = np.zeros(n, np.int32)
    x0, y0 = np.zeros(n, np.int32), np.zeros(n, np.int32)
    x1, y1 = np.zeros(n, np.int32), np.zeros(n, np.int32)
    first = np.zeros(n, np.int32)
    live, slot = np.empty(n, np.int32), np.empty(n, np.int32)
    live_count = 0
    capacity = 4 * t_count + 16
    out_plane = np.empty(capacity, np.int64)
    out_box = np.empty((capacity, 4), np.int64)
    found = 0
    largest = np.full(t_count, -1, np.int64)
    height = n // width
    for t in range(t_count - 1, -1, -1):
        for i in range(start[t], start[t] + per_level[t + 1]):
            p = np.int32(order[i])
            y = p // width
            x = p - y * width
            parent[p], size[p], first[p] = p, 1, p
            x0[p], y0[p], x1[p], y1[p] = x, y, x + 1, y + 1
            live[live_count], slot[p] = p, live_count
            live_count += 1
            a = p  # the root of p's component
            for ny in range(max(y - 1, 0), min(y + 2, height)):
                for nx in range(max(x - 1, 0), min(x + 2, width)):
                    b = ny * width + nx
                    if parent[b] < 0 or b == p:
                        continue
                    while parent[b] != b:  # find, halving the path
                        parent[b] = parent[parent[b]]
                        b = parent[b]
                    if a == b:
                        continue
                    if size[a] < size[b]:  # the larger tree takes the smaller one
                        a, b = b, a
                    parent[b] = a
                    size[a] += size[b]
                    x0[a], y0[a] = min(x0[a], x0[b]), min(y0[a], y0[b])
                    x1[a], y1[a] = max(x1[a], x1[b]), max(y1[a], y1[b])
                    first[a] = min(first[a], first[b])
                    moved = live[live_count - 1]
                    live[slot[b]], slot[moved] = moved, slot[b]
                    live_count -= 1
        if live_count == 0:
            continue
        if found + live_count > capacity:
            capacity = 2 * (found + live_count)
            grown_plane, grown_box = np.empty(capacity, np.int64), np.empty((capacity, 4), np.int64)
            grown_plane[:found], grown_box[:found] = out_plane[:found], out_box[:found]
            out_plane, out_box = grown_plane, grown_box
        best = live[0]
        for i in range(live_count):
            r = live[i]
            out_plane[found + i] = t
            out_box[found + i, 0], out_box[found + i, 1] = x0[r], y0[r]
            out_box[found + i, 2], out_box[found + i, 3] = x1[r], y1[r]
            if size[r] > size[best] or (size[r] == size[best] and first[r] < first[best]):
                best = r
        largest[t] = found + slot[best]
        found += live_count
    return out_plane[:found], out_box[:found], largest


def wsol_boxes(prepared: np.ndarray, thresholds: np.ndarray):
    """`sweep_boxes` by clovaai/wsolevaluation's rules (its `compute_bboxes_from_scoremaps`).

    The map is copied to uint8 (`int(255 x)`), thresholded with a strict `>` at
    `int(t x peak)`; every contour of `cv2.findContours(RETR_TREE)` (holes included) gives its
    bounding rectangle read as (x, y, x + w, y + h), clamped to W - 1 and H - 1 (an inclusive
    corner: IoU with `+1`); the largest is the first contour of the greatest `cv2.contourArea`;
    an empty mask gives the box (0, 0, 0, 0).
    """
    import cv2

    height, width = prepared.shape
    image = (np.asarray(prepared, np.float32) * 255).astype(np.uint8)
    peak = int(image.max())
    planes, boxes, found = [], [], 0
    largest = np.zeros(len(thresholds), np.int64)
    for t, threshold in enumerate(thresholds):
        mask = (image > int(float(threshold) * peak)).view(np.uint8)
        contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if not contours:
            rects, largest[t] = np.zeros((1, 4), np.int64), found
        else:
            rects = np.array([cv2.boundingRect(c) for c in contours], np.int64)
            largest[t] = found + int(np.argmax([cv2.contourArea(c) for c in contours]))
            rects[:, 2:] = np.minimum(rects[:, :2] + rects[:, 2:], [width - 1, height - 1])
        found += len(rects)
        boxes.append(rects)
        planes.append(np.full(len(rects), t))
    return np.concatenate(planes), np.concatenate(boxes).astype(np.float64), largest


def largest_box(prepared: np.ndarray, threshold: float) -> np.ndarray:
    """The box [K <= 1, 4] of the largest component of `prepared >= threshold`."""
    _, boxes, largest = exact_boxes(prepared, np.array([threshold]))
    return boxes[largest[largest >= 0]]


def threshold_hits(
    prepared: np.ndarray,
    true_boxes: np.ndarray,
    thresholds: np.ndarray,
    iou_thresholds=V2_IOUS,
    convention: str = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """Hits of one sample at every (IoU threshold d, cam threshold t): bool [D, T] twice.

    The first counts the largest component's box (MaxBoxAcc, CorLoc), the second any
    component's box (MaxBoxAccV2); a hit is IoU >= d with some true box (IoU without `+1` for
    'exact', with it for 'wsolevaluation', whose boxes are inclusive: `sweep_boxes`).
    """
    true_boxes = np.asarray(true_boxes, np.float64).reshape(-1, 4)
    if len(true_boxes) == 0:
        raise ValueError("threshold_hits needs at least one true box")
    ious = np.asarray(iou_thresholds, np.float64)[:, None]
    plane, boxes, pick = sweep_boxes(prepared, thresholds, convention)
    largest = np.zeros((len(ious), len(thresholds)), bool)
    any_box = np.zeros_like(largest)
    if len(plane) == 0:
        return largest, any_box
    plus_one = convention == "wsolevaluation"
    best = iou_matrix(boxes, true_boxes, plus_one=plus_one).max(axis=1)  # [K]
    has = pick >= 0
    largest[:, has] = best[pick[has]][None] >= ious
    for d, iou in enumerate(ious[:, 0]):
        any_box[d] = np.bincount(plane[best >= iou], minlength=len(thresholds)) > 0
    return largest, any_box


# Coverage ---------------------------------------------------------------------------------------


def box_pixels(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [H, W]: pixels whose centre lies inside some box [M, 4] (pixel edges)."""
    height, width = size
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
    inside = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        inside |= ((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]
    return inside


def coverage_curves(
    prepared: np.ndarray, inside: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How much of the true boxes the thresholded map covers, at every threshold: [T] twice.

    prepared: [H, W] normalised map; inside: bool [H, W] true-box pixels. coverage[t] is the
    fraction of `inside` with prepared >= t; in_box[t] the fraction of the mask inside (0 for an
    empty mask).
    """
    values = np.sort(prepared[inside])
    every = np.sort(prepared.ravel())
    above_in = len(values) - np.searchsorted(values, thresholds, side="left")
    above = len(every) - np.searchsorted(every, thresholds, side="left")
    coverage = above_in / max(len(values), 1)
    in_box = np.where(above > 0, above_in / np.maximum(above, 1), 0.0)
    return coverage, in_box


def coverage_at_precision(coverage: np.ndarray, in_box: np.ndarray, level: float) -> float:
    """The largest coverage [T] at a threshold whose in-box fraction [T] reaches `level`, NaN if
    none does: how much of the objects a map covers at an equal precision of its mask."""
    reach = np.asarray(in_box) >= level
    return float(np.max(np.asarray(coverage)[reach])) if reach.any() else float("nan")


def cam_threshold_grid(num: int, cam_threshold: float) -> tuple[np.ndarray, int]:
    """(thresholds 0, 1/num, ..., (num-1)/num, index of cam_threshold in them)."""
    if num < 1:
        raise ValueError(f"num_cam_thresholds={num}; must be >= 1.")
    index = cam_threshold * num
    if abs(index - round(index)) > 1e-6 or not 0 <= round(index) < num:
        raise ValueError(
            f"cam_threshold={cam_threshold} is not on the grid k / {num} "
            f"(num_cam_thresholds); pick a multiple of {1 / num:g} below 1."
        )
    return np.arange(num) / num, round(index)


# Pooling ----------------------------------------------------------------------------------------


class BoxAccumulator:
    """Pools the hits and coverage of (image, class) samples into the box metrics."""

    def __init__(
        self, num_classes: int, thresholds: np.ndarray, cam_index: int, convention: str = "exact"
    ):
        if convention not in CONVENTIONS:
            raise ValueError(f"box_convention={convention!r}; expected one of {CONVENTIONS}.")
        self.thresholds, self.cam_index, self.convention = thresholds, cam_index, convention
        t = len(thresholds)
        self.count = np.zeros(num_classes, np.int64)
        self.largest_hits = np.zeros((num_classes, len(V2_IOUS), t), np.int64)
        self.any_hits = np.zeros((num_classes, len(V2_IOUS), t), np.int64)
        self.coverage = np.zeros(t)  # summed over samples, per cam threshold
        self.in_box = np.zeros(t)

    def add(self, cls: int, prepared: np.ndarray, true_boxes: np.ndarray) -> None:
        """One sample: normalised map [H, W] of class `cls`, its true boxes [M, 4] on that map."""
        largest, any_box = threshold_hits(
            prepared, true_boxes, self.thresholds, convention=self.convention
        )
        self.count[cls] += 1
        self.largest_hits[cls] += largest
        self.any_hits[cls] += any_box
        inside = box_pixels(true_boxes, prepared.shape)
        coverage, in_box = coverage_curves(prepared, inside, self.thresholds)
        self.coverage += coverage
        self.in_box += in_box

    def result(self) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
        """(metrics, curves over the cam thresholds: None without samples).

        curves: 'largest' [T] MaxBoxAcc's hit rate, 'any' [D, T] V2's, 'coverage' and 'in_box' [T].
        """
        total = int(self.count.sum())
        if total == 0:
            nan = float("nan")
            empty = {"corloc": nan, "max_box_acc": nan, "max_box_acc_v2": nan}
            return {**empty, "num_loc_samples": 0.0}, None
        half = V2_IOUS.index(0.5)
        present = self.count > 0
        pooled_largest = self.largest_hits.sum(axis=0) / total  # [D, T]
        pooled_any = self.any_hits.sum(axis=0) / total
        coverage, in_box = self.coverage / total, self.in_box / total
        best = int(np.argmax(pooled_largest[half]))
        per_class = self.largest_hits[present, half, self.cam_index] / self.count[present]
        per_iou = pooled_any.max(axis=1)
        out = {
            "corloc": float(per_class.mean()),
            "max_box_acc": float(pooled_largest[half, best]),
            "max_box_acc_threshold": float(self.thresholds[best]),
            "max_box_acc_v2": float(per_iou.mean()),
            "box_coverage": float(coverage[self.cam_index]),
            "mask_in_box": float(in_box[self.cam_index]),
            "box_coverage_at_best": float(coverage[best]),
            "mask_in_box_at_best": float(in_box[best]),
            "box_coverage_at_in_box50": coverage_at_precision(coverage, in_box, 0.5),
            "num_loc_samples": float(total),
            "box_convention_wsolevaluation": float(self.convention == "wsolevaluation"),
        }
        for iou, value in zip(V2_IOUS, per_iou):
            out[f"max_box_acc_v2_iou{round(iou * 100)}"] = float(value)
        curves = {
            "largest": pooled_largest[half],
            "any": pooled_any,
            "coverage": coverage,
            "in_box": in_box,
        }
        return out, curves
