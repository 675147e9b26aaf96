"""Detection metrics on the host (NumPy): VOC average precision, CorLoc, proposal recall, and
`detect` (per-class threshold + NMS) that turns region scores into detections.

Boxes are (x1, y1, x2, y2) pixel coordinates. By default IoU uses the VOC devkit's
inclusive-pixel convention: a box covers pixels x1..x2, so widths are x2 - x1 + 1 (pass
`plus_one=False` for continuous coordinates where widths are x2 - x1).

`evaluate_class` is py-faster-rcnn's `voc_eval` rule for rule:
- detections of all images are visited in descending score order;
- a detection's best-overlap ground truth box is the argmax of IoU over *all* of the image's
  boxes of that class (difficult and already matched ones included);
- best IoU > `iou_threshold` (strictly): if that box is difficult the detection is ignored
  (neither TP nor FP); else TP if the box is still unmatched (and it becomes matched),
  FP if it was matched already (a duplicate); best IoU <= threshold: FP;
- recall = cum TP / number of non-difficult boxes, precision = cum TP / max(cum TP + cum FP,
  eps); AP by `voc_ap` (11-point for VOC2007, `use_07_metric=True`, our default).
NOTE: ties in score are visited in input order (image order, then order within the image):
a stable sort. voc_eval's `np.argsort(-confidence)` is not stable beyond 16 detections, so
with exactly tied scores its AP can differ from ours (and from run to run of its input order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jwsol.ops.boxes_np import areas, intersections, iou_matrix, nms_numpy


class ImageDetections(NamedTuple):
    """One image's detections (plain tuples in this order work too)."""

    boxes: np.ndarray  # [K, 4] (x1, y1, x2, y2)
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K] int class index


class ImageGroundTruth(NamedTuple):
    """One image's annotated objects (plain tuples in this order work too)."""

    boxes: np.ndarray  # [M, 4] (x1, y1, x2, y2)
    labels: np.ndarray  # [M] int class index
    difficult: np.ndarray  # [M] bool


# NOTE: the devkit's thresholds come from np.arange(0, 1.1, 0.1), whose entries are not the
# decimal tenths (0.30000000000000004, 0.6000000000000001, 0.7000000000000001): a recall of
# exactly 0.3 does *not* reach the 0.3 point. We use the same floats to get the same AP.
_VOC07_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """Area under a precision/recall curve, the VOC way.

    `recall`, `precision`: [D] values after each detection in score order.
    use_07_metric: VOC2007's 11-point AP: the mean over t in {0, 0.1, ..., 1} of the best
      precision at recall >= t (0 if recall never reaches t). Otherwise the VOC2010+ area under
      the monotone precision envelope, summed where recall changes.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if use_07_metric:
        total = 0.0
        for point in _VOC07_RECALL_POINTS:
            reached = recall >= point
            total += (precision[reached].max() if reached.any() else 0.0) / 11.0
        return float(total)
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _match_image(
    det_boxes: np.ndarray,
    gt_boxes: np.ndarray,
    difficult: np.ndarray,
    iou_threshold: float,
    plus_one: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """TP / FP flags [K] of one image's detections, given in descending score order."""
    count = len(det_boxes)
    tp = np.zeros(count)
    fp = np.zeros(count)
    if len(gt_boxes) == 0:
        fp[:] = 1.0
        return tp, fp
    overlaps = iou_matrix(det_boxes, gt_boxes, plus_one)  # [K, M]
    best = overlaps.argmax(axis=1)
    hit = overlaps[np.arange(count), best] > iou_threshold
    matched = np.zeros(len(gt_boxes), bool)
    # Sequential only in the matched flags: earlier (higher-scoring) detections claim first.
    for k in range(count):
        if not hit[k]:
            fp[k] = 1.0
        elif difficult[best[k]]:
            continue
        elif matched[best[k]]:
            fp[k] = 1.0
        else:
            tp[k] = 1.0
            matched[best[k]] = True
    return tp, fp


def evaluate_class(
    detections: Sequence[tuple[np.ndarray, np.ndarray]],
    ground_truth: Sequence[tuple[np.ndarray, np.ndarray]],
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    plus_one: bool = True,
) -> dict:
    """VOC AP of one class.

    Args:
      detections: per image, (boxes [K, 4], scores [K]) of this class.
      ground_truth: per image (same order and length), (boxes [M, 4], difficult [M] bool) of
        this class.

    Returns:
      dict with `ap` (NaN when the class has no non-difficult box), `recall` [D],
      `precision` [D] (after each detection in score order, as voc_eval), `num_positives`.
    """
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"detections cover {len(detections)} images, ground_truth {len(ground_truth)}"
        )
    scores, tps, fps = [], [], []
    num_positives = 0
    for image, ((det_boxes, det_scores), (gt_boxes, difficult)) in enumerate(
        zip(detections, ground_truth)
    ):
        det_boxes = _boxes(det_boxes, f"detections[{image}] boxes")
        det_scores = np.asarray(det_scores, np.float64).reshape(-1)
        gt_boxes = _boxes(gt_boxes, f"ground_truth[{image}] boxes")
        difficult = np.asarray(difficult, bool).reshape(-1)
        if len(det_scores) != len(det_boxes) or len(difficult) != len(gt_boxes):
            raise ValueError(f"image {image}: boxes and scores/difficult differ in length")
        num_positives += int(np.sum(~difficult))
        order = np.argsort(-det_scores, kind="stable")
        tp, fp = _match_image(det_boxes[order], gt_boxes, difficult, iou_threshold, plus_one)
        scores.append(det_scores[order])
        tps.append(tp)
        fps.append(fp)
    scores = np.concatenate(scores) if scores else np.zeros(0)
    # Stable: ties keep image order, and within an image the order used for matching.
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(np.concatenate(tps)[order]) if tps else np.zeros(0)
    fp = np.cumsum(np.concatenate(fps)[order]) if fps else np.zeros(0)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if num_positives == 0:
        recall = np.full(tp.shape, np.nan)
        ap = float("nan")
    else:
        recall = tp / num_positives
        ap = voc_ap(recall, precision, use_07_metric)
    return {"ap": ap, "recall": recall, "precision": precision, "num_positives": num_positives}


def mean_ap(
    detections: Sequence[ImageDetections],
    ground_truth: Sequence[ImageGroundTruth],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    plus_one: bool = True,
) -> dict:
    """VOC mAP over classes.

    Args:
      detections: per image, `ImageDetections(boxes [K, 4], scores [K], labels [K])`.
      ground_truth: per image, `ImageGroundTruth(boxes [M, 4], labels [M], difficult [M])`.
      num_classes: classes are 0 .. num_classes - 1.
      class_names: names used as keys of `ap` (default: "0", "1", ...).

    Returns:
      dict with `map` (mean over classes that have a non-difficult box; NaN if none do),
      `ap` {name: AP or NaN}, `num_positives` {name: count}.
    """
    names = _class_names(num_classes, class_names)
    per_class = _split_by_class(detections, ground_truth, num_classes)
    aps, positives = {}, {}
    for label, name in enumerate(names):
        dets, gts = per_class[label]
        result = evaluate_class(dets, gts, iou_threshold, use_07_metric, plus_one)
        aps[name] = result["ap"]
        positives[name] = result["num_positives"]
    values = np.array([ap for ap in aps.values() if not np.isnan(ap)])
    return {
        "map": float(values.mean()) if len(values) else float("nan"),
        "ap": aps,
        "num_positives": positives,
    }


def corloc(
    detections: Sequence[ImageDetections],
    ground_truth: Sequence[ImageGroundTruth],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    plus_one: bool = True,
    cover: float = 0.8,
) -> dict:
    """Correct localization (Deselaers et al. 2012, as used by WSDDN).

    Definition: for every (image, class) where the image holds a non-difficult box of the
    class (the image is a positive of the class), take the class's highest-scoring detection
    in that image; it is a hit when its IoU with some box of that class (difficult ones
    included) is >= `iou_threshold`. No detection of the class there is a miss. CorLoc of a
    class is its hit rate over its positive images; `corloc` is the mean over classes that
    have positive images (NaN if none).

    Every (image, positive class) pair is also sorted into one outcome of its top box, so a
    user can see how the misses fail (WSDDN's known failure is boxes on parts):
      hit        IoU >= iou_threshold with a true box of the class;
      part       a miss lying mostly inside a true box of the class (>= `cover` of the top box's
                 area): too small, on a discriminative part;
      too_large  a miss covering most of a true box (>= `cover` of its area): a box around
                 several objects or with much background;
      elsewhere  any other miss (off the objects, or on an object of another class);
      none       no detection of the class in that image (score threshold).

    Returns:
      dict with `corloc`, `per_class` {name: rate or NaN} and `outcomes` {outcome: share of
      all positive (image, class) pairs}, the five shares summing to 1.
    """
    names = _class_names(num_classes, class_names)
    hits = np.zeros(num_classes)
    positives = np.zeros(num_classes)
    outcomes = dict.fromkeys(CORLOC_OUTCOMES, 0)
    for image, (det, gt) in enumerate(zip(detections, ground_truth, strict=True)):
        det_boxes, det_scores, det_labels = _detections(det, image, num_classes)
        gt_boxes, gt_labels, difficult = _ground_truth(gt, image, num_classes)
        for label in np.unique(gt_labels[~difficult]):
            positives[label] += 1
            mine = np.nonzero(det_labels == label)[0]
            if len(mine) == 0:
                outcomes["none"] += 1
                continue
            top = det_boxes[mine[np.argmax(det_scores[mine])]][None]
            outcome = _top_box_outcome(
                top, gt_boxes[gt_labels == label], iou_threshold, cover, plus_one
            )
            outcomes[outcome] += 1
            hits[label] += outcome == "hit"
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(positives > 0, hits / np.maximum(positives, 1), np.nan)
    valid = rates[~np.isnan(rates)]
    return {
        "corloc": float(valid.mean()) if len(valid) else float("nan"),
        "per_class": dict(zip(names, map(float, rates))),
        "outcomes": {k: v / max(1, int(positives.sum())) for k, v in outcomes.items()},
    }


CORLOC_OUTCOMES = ("hit", "part", "too_large", "elsewhere", "none")


def _top_box_outcome(
    top: np.ndarray, truth: np.ndarray, iou_threshold: float, cover: float, plus_one: bool
) -> str:
    """One of CORLOC_OUTCOMES except 'none' for a top box [1, 4] against the class's boxes [T, 4]."""
    if iou_matrix(top, truth, plus_one).max() >= iou_threshold:
        return "hit"
    inter = intersections(top[:, None], truth[None], plus_one)
    if np.max(inter / np.maximum(areas(top, plus_one)[:, None], 1e-12)) >= cover:
        return "part"
    if np.max(inter / np.maximum(areas(truth, plus_one)[None, :], 1e-12)) >= cover:
        return "too_large"
    return "elsewhere"


def detect(
    region_scores: np.ndarray,
    boxes: np.ndarray,
    score_threshold: float,
    nms_iou: float,
    max_per_class: int = 0,
) -> ImageDetections:
    """One image's detections: per class, scores > threshold, then NMS.

    region_scores: [R, C] of the valid proposals, boxes: [R, 4], or [R, C, 4] with a box per
    class (box regression). max_per_class > 0 keeps the
    best that many per class after NMS. Returns ImageDetections(boxes [K, 4], scores [K],
    labels [K]), classes in order, each by descending score.
    """
    out_boxes, out_scores, out_labels = [], [], []
    for c in range(region_scores.shape[1]):
        keep = np.nonzero(region_scores[:, c] > score_threshold)[0]
        if not len(keep):
            continue
        class_boxes = boxes[:, c] if boxes.ndim == 3 else boxes
        kept = keep[nms_numpy(class_boxes[keep], region_scores[keep, c], nms_iou)]
        if max_per_class > 0:
            kept = kept[:max_per_class]
        out_boxes.append(class_boxes[kept])
        out_scores.append(region_scores[kept, c])
        out_labels.append(np.full(len(kept), c, np.int64))
    if not out_boxes:
        return ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    return ImageDetections(
        np.concatenate(out_boxes), np.concatenate(out_scores), np.concatenate(out_labels)
    )


def top_boxes(region_scores: np.ndarray, boxes: np.ndarray, classes) -> ImageDetections:
    """The top-scoring box of each class in `classes` (what CorLoc scores), no threshold/NMS.

    region_scores: [R, C] of the valid proposals, boxes: [R, 4] (or [R, C, 4], a box per
    class); no proposal: no detection.
    """
    classes = np.asarray(classes, np.int64)
    if not len(boxes) or not len(classes):
        return ImageDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    top = np.argmax(region_scores[:, classes], axis=0)
    picked = boxes[top, classes] if boxes.ndim == 3 else boxes[top]
    return ImageDetections(picked, region_scores[top, classes], classes)


def proposal_recall(
    proposals: Sequence[np.ndarray],
    ground_truth_boxes: Sequence[np.ndarray],
    iou_threshold: float = 0.5,
    plus_one: bool = True,
) -> float:
    """Fraction of ground-truth boxes covered by some proposal with IoU >= `iou_threshold`.

    `proposals`: per image [P, 4]; `ground_truth_boxes`: per image [M, 4] (filter difficult
    boxes out first if they should not count). NaN if there is no ground-truth box.
    """
    covered = total = 0
    for image, (props, truth) in enumerate(zip(proposals, ground_truth_boxes, strict=True)):
        truth = _boxes(truth, f"ground_truth_boxes[{image}]")
        props = _boxes(props, f"proposals[{image}]")
        total += len(truth)
        if len(truth) and len(props):
            covered += int(np.sum(iou_matrix(truth, props, plus_one).max(axis=1) >= iou_threshold))
    return covered / total if total else float("nan")


def _split_by_class(detections, ground_truth, num_classes):
    """Per class: (list of (boxes, scores) per image, list of (boxes, difficult) per image)."""
    if len(detections) != len(ground_truth):
        raise ValueError(
            f"detections cover {len(detections)} images, ground_truth {len(ground_truth)}"
        )
    per_class = [([], []) for _ in range(num_classes)]
    for image, (det, gt) in enumerate(zip(detections, ground_truth)):
        det_boxes, det_scores, det_labels = _detections(det, image, num_classes)
        gt_boxes, gt_labels, difficult = _ground_truth(gt, image, num_classes)
        for label in range(num_classes):
            d = det_labels == label
            g = gt_labels == label
            per_class[label][0].append((det_boxes[d], det_scores[d]))
            per_class[label][1].append((gt_boxes[g], difficult[g]))
    return per_class


def _boxes(boxes, name: str) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must be [K, 4] (x1, y1, x2, y2), got shape {boxes.shape}")
    return boxes


def _check_labels(labels: np.ndarray, name: str, num_classes: int) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} has labels outside [0, {num_classes}): {np.unique(labels)}")


def _detections(det, image: int, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, scores, labels = det
    boxes = _boxes(boxes, f"detections[{image}].boxes")
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"detections[{image}]: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
        )
    _check_labels(labels, f"detections[{image}]", num_classes)
    return boxes, scores, labels


def _ground_truth(gt, image: int, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, labels, difficult = gt
    boxes = _boxes(boxes, f"ground_truth[{image}].boxes")
    labels = np.asarray(labels, np.int64).reshape(-1)
    difficult = np.asarray(difficult, bool).reshape(-1)
    if not len(boxes) == len(labels) == len(difficult):
        raise ValueError(
            f"ground_truth[{image}]: {len(boxes)} boxes, {len(labels)} labels, "
            f"{len(difficult)} difficult flags"
        )
    _check_labels(labels, f"ground_truth[{image}]", num_classes)
    return boxes, labels, difficult


def _class_names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(k) for k in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names, num_classes={num_classes}")
    return list(class_names)
