"""Localization accuracy from heatmaps (host side): CorLoc, MaxBoxAcc, MaxBoxAccV2.

Inputs are per sample (one image, or one (image, class) pair for multi-class images):
`heatmaps`: [h, w] each; `gt_boxes`: [M, 4] each, (x1, y1, x2, y2) in image pixels,
continuous coordinates (pixel edges: VOC's inclusive boxes need x2 + 1, y2 + 1);
`image_sizes`: (H, W) each, to resize the heatmap to (None: heatmaps are at image size).
Heatmaps become boxes as in `jwsol.ops.heatmaps` (resize, min-max normalize, threshold,
connected components, bounding rectangles).

A sample is a hit at (cam threshold t, IoU threshold d) when some estimated box has IoU >= d
with some ground-truth box; no estimated box is a miss.

- `box_accuracy_curve`: the hit rate for every (d, t) pair.
- `max_box_acc` (Choe et al. 2020, "Evaluating Weakly Supervised Object Localization Methods
  Right", their MaxBoxAcc): the best hit rate over the cam thresholds at d = 0.5, with the
  largest component only.
- `max_box_acc_v2` (their MaxBoxAccV2): the mean over d in {0.3, 0.5, 0.7} of the best hit
  rate over cam thresholds (each d picks its own t), with every component's box a candidate.
- `corloc_from_heatmaps`: the hit rate at one fixed cam threshold (default 0.2: Zhou et al.'s
  CAM boxes at 20 % of the max) and d = 0.5, averaged per class then over classes when
  `classes` is given.
Cam thresholds default to 0, 0.01, ..., 0.99 (Choe et al.'s grid). Our threshold test is
`normalized >= t` on float maps; Choe et al. threshold a uint8 copy, so their boxes can differ
by one quantization step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jwsol.metrics.detection import iou_matrix
from jwsol.ops import heatmaps as hm

DEFAULT_CAM_THRESHOLDS = np.round(np.arange(0, 100) * 0.01, 2)


def box_accuracy_curve(
    heatmaps: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    cam_thresholds: Sequence[float] = DEFAULT_CAM_THRESHOLDS,
    iou_thresholds: Sequence[float] = (0.5,),
    all_components: bool = False,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Hit rate `[len(iou_thresholds), len(cam_thresholds)]` over the samples."""
    hits = _hits(
        heatmaps,
        gt_boxes,
        image_sizes,
        cam_thresholds,
        iou_thresholds,
        all_components,
        interpolation,
    )
    return hits.mean(axis=0)


def max_box_acc(
    heatmaps: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    iou_threshold: float = 0.5,
    cam_thresholds: Sequence[float] = DEFAULT_CAM_THRESHOLDS,
    all_components: bool = False,
    interpolation: str = "bilinear",
) -> dict:
    """MaxBoxAcc: {'max_box_acc': best hit rate, 'best_threshold': its cam threshold (the
    lowest on a tie), 'curve': [T] hit rate per cam threshold}."""
    curve = box_accuracy_curve(
        heatmaps,
        gt_boxes,
        image_sizes,
        cam_thresholds,
        (iou_threshold,),
        all_components,
        interpolation,
    )[0]
    best = int(np.argmax(curve))
    return {
        "max_box_acc": float(curve[best]),
        "best_threshold": float(np.asarray(cam_thresholds)[best]),
        "curve": curve,
    }


def max_box_acc_v2(
    heatmaps: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    cam_thresholds: Sequence[float] = DEFAULT_CAM_THRESHOLDS,
    all_components: bool = True,
    interpolation: str = "bilinear",
) -> dict:
    """MaxBoxAccV2: {'max_box_acc_v2': mean over IoU thresholds of the best hit rate,
    'per_iou': {d: best hit rate}, 'best_thresholds': {d: cam threshold}, 'curve': [D, T]}."""
    curve = box_accuracy_curve(
        heatmaps,
        gt_boxes,
        image_sizes,
        cam_thresholds,
        iou_thresholds,
        all_components,
        interpolation,
    )
    best = np.argmax(curve, axis=1)
    thresholds = np.asarray(cam_thresholds)
    per_iou = {float(d): float(curve[i, best[i]]) for i, d in enumerate(iou_thresholds)}
    return {
        "max_box_acc_v2": float(np.mean(list(per_iou.values()))),
        "per_iou": per_iou,
        "best_thresholds": {
            float(d): float(thresholds[best[i]]) for i, d in enumerate(iou_thresholds)
        },
        "curve": curve,
    }


def corloc_from_heatmaps(
    heatmaps: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    cam_threshold: float = 0.2,
    iou_threshold: float = 0.5,
    classes: Sequence[int] | None = None,
    all_components: bool = False,
    interpolation: str = "bilinear",
) -> dict:
    """CorLoc at one cam threshold: {'corloc': float, 'per_class': {class: rate}}.

    With `classes` ([S] class of each sample) the rate is averaged per class, then over
    classes; without, over samples (`per_class` is then empty).
    """
    hits = _hits(
        heatmaps,
        gt_boxes,
        image_sizes,
        (cam_threshold,),
        (iou_threshold,),
        all_components,
        interpolation,
    )[:, 0, 0]
    if classes is None:
        return {"corloc": float(hits.mean()) if len(hits) else float("nan"), "per_class": {}}
    classes = np.asarray(classes).reshape(-1)
    if len(classes) != len(hits):
        raise ValueError(f"classes has {len(classes)} entries for {len(hits)} heatmaps")
    per_class = {int(c): float(hits[classes == c].mean()) for c in np.unique(classes)}
    rates = list(per_class.values())
    return {"corloc": float(np.mean(rates)) if rates else float("nan"), "per_class": per_class}


def _hits(
    heatmaps, gt_boxes, image_sizes, cam_thresholds, iou_thresholds, all_components, interpolation
) -> np.ndarray:
    """[S, D, T] bool: sample s is a hit at IoU threshold d and cam threshold t."""
    if len(heatmaps) != len(gt_boxes):
        raise ValueError(f"{len(heatmaps)} heatmaps but {len(gt_boxes)} ground-truth box sets")
    if image_sizes is not None and len(image_sizes) != len(heatmaps):
        raise ValueError(f"{len(image_sizes)} image sizes for {len(heatmaps)} heatmaps")
    iou_thresholds = np.asarray(iou_thresholds, np.float64)
    hits = np.zeros((len(heatmaps), len(iou_thresholds), len(cam_thresholds)), bool)
    for s, (heatmap, truth) in enumerate(zip(heatmaps, gt_boxes)):
        truth = np.asarray(truth, np.float64).reshape(-1, 4)
        if len(truth) == 0:
            raise ValueError(f"gt_boxes[{s}] is empty: every sample needs a ground-truth box")
        size = None if image_sizes is None else image_sizes[s]
        prepared = hm.prepare_heatmap(heatmap, size, interpolation)
        for t, boxes in enumerate(hm.boxes_at_thresholds(prepared, cam_thresholds, all_components)):
            if len(boxes):
                best = iou_matrix(boxes, truth, plus_one=False).max()
                hits[s, :, t] = best >= iou_thresholds
    return hits
