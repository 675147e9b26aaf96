"""Detections in the COCO formats the rest of the field reads, and COCO-style AP.

Results (`results`): a list of `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`,
what `pycocotools.coco.COCO.loadRes` takes. Category ids are the class index + 1 (COCO keeps 0
free). Boxes are our edge convention (`jwsol.data.proposals`), which is COCO's: w = x2 - x1.

COCO AP (`coco_ap`, through pycocotools, an optional dependency): AP averaged over IoU 0.50:0.95,
AP50 and AP75, 101-point interpolation, up to 100 detections per image. VOC `difficult` objects
become COCO crowd regions (`iscrowd=1`): a detection on one neither counts nor penalises,
as in the VOC devkit (crowd IoU divides by the detection's area).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

from jwsol.errors import ConfigError
from jwsol.metrics.detection import ImageDetections, ImageGroundTruth


def categories(class_names: Sequence[str]) -> list[dict]:
    """`[{"id": c + 1, "name": name}]` in class order."""
    return [{"id": c + 1, "name": str(name)} for c, name in enumerate(class_names)]


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """float64 [K, 4] (x1, y1, x2, y2) -> (x, y, w, h)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """float64 [K, 4] (x, y, w, h) -> (x1, y1, x2, y2)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def image_results(dets: ImageDetections, image_id: int, decimals: int = 2) -> list[dict]:
    """One image's detections as COCO result dicts, by descending score; boxes rounded to
    `decimals` pixels (sub-pixel digits are noise in a file people read)."""
    order = np.argsort(-np.asarray(dets.scores), kind="stable")
    xywh = np.round(xyxy_to_xywh(dets.boxes), decimals)
    return [
        {
            "image_id": int(image_id),
            "category_id": int(dets.labels[k]) + 1,
            "bbox": [float(v) for v in xywh[k]],
            "score": float(dets.scores[k]),
        }
        for k in order
    ]


def results(detections: Sequence[ImageDetections], image_ids: Sequence[int]) -> list[dict]:
    """The detections of every image (image_ids[i] for detections[i]) as one results list."""
    out = []
    for dets, image_id in zip(detections, image_ids, strict=True):
        out.extend(image_results(dets, image_id, decimals=6))
    return out


def ground_truth(
    truth: Sequence[ImageGroundTruth],
    sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str],
    file_names: Sequence[str] | None = None,
) -> dict:
    """A COCO annotation dataset (images, annotations, categories) of the true boxes; image i
    gets id i + 1 and size sizes[i] = (height, width); difficult boxes are crowd regions."""
    images, annotations = [], []
    for i, (gt, (h, w)) in enumerate(zip(truth, sizes, strict=True)):
        name = file_names[i] if file_names is not None else f"{i + 1}"
        images.append({"id": i + 1, "file_name": name, "height": int(h), "width": int(w)})
        for box, label, difficult in zip(xyxy_to_xywh(gt.boxes), gt.labels, gt.difficult):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label) + 1,
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": int(bool(difficult)),
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories(class_names)}


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ConfigError(
            "eval.coco_ap=True needs pycocotools: pip install pycocotools (or "
            "pip install -e '.[dev]'), or set --config.eval.coco_ap=False."
        ) from e
    return COCO, COCOeval


def coco_ap(
    detections: Sequence[ImageDetections],
    truth: Sequence[ImageGroundTruth],
    sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str],
) -> dict[str, float]:
    """COCO AP, AP50 and AP75 of the detections against the true boxes (pycocotools), as
    `coco/ap`, `coco/ap50`, `coco/ap75`; -1 where no true box exists (pycocotools' value)."""
    COCO, COCOeval = _pycocotools()
    found = results(detections, [i + 1 for i in range(len(detections))])
    if not found:  # pycocotools cannot load an empty results list
        value = 0.0 if any(len(t.boxes) for t in truth) else -1.0
        return {"coco/ap": value, "coco/ap50": value, "coco/ap75": value}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = ground_truth(truth, sizes, class_names)
        gt.createIndex()
        dt = gt.loadRes(found)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"coco/ap": float(stats[0]), "coco/ap50": float(stats[1]), "coco/ap75": float(stats[2])}
