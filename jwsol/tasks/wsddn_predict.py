"""WSDDN's and OICR's predictions on new images: detections through the evaluator's scoring
(per class: region score > threshold, then NMS at eval.nms_iou: `metrics.detection.detect`),
boxes in original pixels, written in the COCO results format (`jwsol.metrics.coco`)."""

from __future__ import annotations

import numpy as np

from jwsol.metrics import coco
from jwsol.metrics import detection as det_metrics
from jwsol.tasks.image_label_predict import unlabelled_batches
from jwsol.tasks.wsddn_eval import batch_detections
from jwsol.training.task import Batch, PredictOptions, Predictor
from jwsol.viz.detections import detections_figure

PICTURE_BOXES = 20  # the picture shows the best few; the JSON keeps --max-per-image
# ... of those scoring at least this: the JSON keeps the low scores AP needs, a person wants the
# confident boxes only.
PICTURE_MIN_SCORE = 0.3


def best_detections(dets: det_metrics.ImageDetections, limit: int) -> det_metrics.ImageDetections:
    """The `limit` highest-scoring detections of all classes (all of them when limit <= 0)."""
    order = np.argsort(-np.asarray(dets.scores), kind="stable")
    if limit > 0:
        order = order[:limit]
    return det_metrics.ImageDetections(dets.boxes[order], dets.scores[order], dets.labels[order])


class DetectionPredictor(Predictor):
    """Detections per image: `{"detections": [COCO result dicts], "image_scores": {class: p}}`."""

    def __init__(self, task, options: PredictOptions):
        """task: the WSDDNTask (config, class_names)."""
        self.task = task
        e = task.config.eval
        threshold = options.score_threshold
        self.score_threshold = float(e.score_threshold if threshold is None else threshold)
        self.nms_iou = float(e.nms_iou)
        self.max_per_class = int(e.max_per_class)
        self.max_per_image = int(options.max_per_image)

    def batches(self, images_: list[np.ndarray], files: list[str], batch_size: int):
        return unlabelled_batches(self.task, images_, files, batch_size)

    def records(self, batch: Batch, outputs: dict[str, np.ndarray]) -> list[dict]:
        _, found_per_image = batch_detections(
            batch, outputs["region_scores"], self.score_threshold, self.nms_iou,
            self.max_per_class, outputs.get("boxes"),
        )  # fmt: skip
        image_scores = np.asarray(outputs["image_scores"], np.float64)
        out = []
        for i, dets in enumerate(found_per_image):
            valid = batch["proposal_mask"][i]
            found = coco.image_results(best_detections(dets, self.max_per_image), image_id=0)
            for d in found:
                del d["image_id"]  # the caller numbers the images
            names = self.task.class_names
            out.append(
                {
                    "detections": found,
                    "image_scores": {n: round(float(p), 6) for n, p in zip(names, image_scores[i])},
                    "num_proposals": int(np.sum(valid)),
                }
            )
        return out

    def picture(self, image: np.ndarray, record: dict) -> np.ndarray:
        found = [d for d in record["detections"][:PICTURE_BOXES] if d["score"] >= PICTURE_MIN_SCORE]
        names = self.task.class_names
        entry = {
            "image": image,
            "gt": np.zeros([0, 4]),
            "boxes": coco.xywh_to_xyxy([d["bbox"] for d in found]),
            "text": [f"{names[d['category_id'] - 1]} {d['score']:.3f}" for d in found],
        }
        return detections_figure([entry], ncols=1, inches=6.0)

    def document(self, records: list[dict]) -> dict:
        """COCO: `categories` and the flat `detections` results list (`loadRes` reads it)."""
        flat = [dict(d, image_id=r["image_id"]) for r in records for d in r["detections"]]
        return {
            "categories": coco.categories(self.task.class_names),
            "detections": flat,
            "predictions": [{k: v for k, v in r.items() if k != "detections"} for r in records],
        }
