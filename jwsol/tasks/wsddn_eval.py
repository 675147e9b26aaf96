"""WSDDN's and OICR's evaluator: detections of every eval batch scored as a detector (VOC AP,
CorLoc and how its top boxes fail, classification mAP, proposal recall), CorLoc of each stream
and on the training split, and the figures. The keys: docs/wsddn.md, docs/oicr.md."""

from __future__ import annotations

import numpy as np

from jwsol.data import augment
from jwsol.metrics import coco, multilabel
from jwsol.metrics import detection as det_metrics
from jwsol.training.task import Batch, Evaluator
from jwsol.viz.detections import ap_bar_chart, detections_figure


def original_boxes(batch: Batch, boxes: np.ndarray) -> np.ndarray:
    """boxes [B, ..., 4] in batch pixels -> original-image pixels (resize and flip undone)."""
    boxes = np.asarray(boxes)
    flat = boxes.reshape(len(boxes), -1, 4)
    flat = augment.boxes_to_original(flat, batch["scale_xy"], batch["image_size"], batch["flipped"])
    return flat.reshape(boxes.shape)


def batch_detections(
    batch: Batch,
    region_scores: np.ndarray,
    score_threshold: float,
    nms_iou: float,
    max_per_class: int,
    boxes: np.ndarray | None = None,
) -> tuple[np.ndarray, list[det_metrics.ImageDetections]]:
    """(proposals [B, R, 4] in original-image pixels, each image's detections among its valid
    proposals: per class score > threshold, then NMS, `metrics.detection.detect`). With `boxes`
    [B, R, C, 4] (box regression, batch pixels) the detections take each class's box."""
    proposals = original_boxes(batch, batch["proposals"])
    detected = proposals if boxes is None else original_boxes(batch, boxes)
    scores = np.asarray(region_scores, np.float64)
    found = []
    for i, valid in enumerate(batch["proposal_mask"]):
        found.append(
            det_metrics.detect(
                scores[i][valid], detected[i][valid], score_threshold, nms_iou, max_per_class
            )
        )
    return proposals, found


class WSDDNEvaluator(Evaluator):
    """Detection AP, CorLoc, classification mAP and proposal recall over one eval pass."""

    def __init__(self, task, first: bool):
        """task: the WSDDNTask (its config, class_names, num_classes, stream_names)."""
        self.task = task
        self.first = first
        e = task.config.eval
        self.score_threshold = float(e.score_threshold)
        self.nms_iou = float(e.nms_iou)
        self.max_per_class = int(e.max_per_class)
        self.num_figure_images = int(e.num_figure_images)
        self.detections: list[det_metrics.ImageDetections] = []
        self.truth: list[det_metrics.ImageGroundTruth] = []
        self.proposals: list[np.ndarray] = []
        self.image_scores, self.labels, self.label_weights = [], [], []
        self.shown: list[dict] = []
        self.image_ids: list[str] = []  # eval images in order, with their original (h, w)
        self.sizes: list[tuple[int, int]] = []
        self.stream_tops: list[list[det_metrics.ImageDetections]] = []  # [stream][image]
        self.stream_shown: list[dict] = []
        self.train_tops: list[det_metrics.ImageDetections] = []
        self.train_truth: list[det_metrics.ImageGroundTruth] = []
        self.proposal_tops: list[det_metrics.ImageDetections] = []  # with box regression

    @staticmethod
    def _truth(batch: Batch, i: int, gt_boxes: np.ndarray) -> det_metrics.ImageGroundTruth:
        gt = batch["gt_mask"][i]
        return det_metrics.ImageGroundTruth(
            gt_boxes[i][gt], batch["gt_classes"][i][gt], batch["gt_difficult"][i][gt]
        )

    def add(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        scores = np.asarray(outputs["region_scores"], np.float64)
        boxes = outputs.get("boxes")
        proposals, found = batch_detections(
            batch, scores, self.score_threshold, self.nms_iou, self.max_per_class, boxes
        )
        gt_boxes = original_boxes(batch, batch["gt_boxes"])
        for i, dets in enumerate(found):
            valid = batch["proposal_mask"][i]
            self.detections.append(dets)
            self.truth.append(self._truth(batch, i, gt_boxes))
            self.proposals.append(proposals[i][valid])
            if boxes is not None:  # CorLoc of the same scores on the unregressed proposals
                classes = np.nonzero(batch["labels"][i] > 0.5)[0]
                self.proposal_tops.append(
                    det_metrics.top_boxes(scores[i][valid], proposals[i][valid], classes)
                )
            if len(self.shown) < self.num_figure_images:
                shown = batch["proposals"][i] if boxes is None else boxes[i]
                self.shown.append(self._figure_entry(batch, i, scores[i], valid, shown))
            if "stream_scores" in outputs:
                regressed = None if boxes is None else (scores[i], boxes[i])
                self._add_streams(
                    batch, i, outputs["stream_scores"][i], proposals[i], valid, regressed
                )
        self.image_ids.extend(
            i.decode() if isinstance(i, bytes) else str(i) for i in batch["image_id"]
        )
        self.sizes.extend(tuple(int(v) for v in hw) for hw in batch["orig_size"])
        self.image_scores.append(np.asarray(outputs["image_scores"]))
        self.labels.append(batch["labels"])
        self.label_weights.append(batch["label_weights"])

    def _add_streams(self, batch, i, streams, proposals, valid, regressed=None) -> None:
        """Top box of each labelled class in every stream (MIL, refine1..K) of image i; with
        box regression, the picture adds the detector's (scores, boxes [R, C, 4]) `regressed`."""
        classes = np.nonzero(batch["labels"][i] > 0.5)[0]
        if not self.stream_tops:
            self.stream_tops = [[] for _ in streams]
        for s, scores in enumerate(streams):
            tops = det_metrics.top_boxes(scores[valid], proposals[valid], classes)
            self.stream_tops[s].append(tops)
        if len(self.stream_shown) < self.num_figure_images:
            for s, scores in enumerate(streams):
                entry = self._figure_entry(batch, i, scores, valid, batch["proposals"][i])
                entry["title"] = self.task.stream_names[s]
                self.stream_shown.append(entry)
            if regressed is not None:
                entry = self._figure_entry(batch, i, regressed[0], valid, regressed[1])
                entry["title"] = "regressed"
                self.stream_shown.append(entry)

    def add_train_batch(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        """Training-split images: only their top boxes, for CorLoc as the field reports it."""
        boxes = original_boxes(batch, outputs.get("boxes", batch["proposals"]))
        gt_boxes = original_boxes(batch, batch["gt_boxes"])
        scores = np.asarray(outputs["region_scores"], np.float64)
        for i in range(len(boxes)):
            valid = batch["proposal_mask"][i]
            classes = np.nonzero(batch["labels"][i] > 0.5)[0]
            tops = det_metrics.top_boxes(scores[i][valid], boxes[i][valid], classes)
            self.train_tops.append(tops)
            self.train_truth.append(self._truth(batch, i, gt_boxes))

    def _figure_entry(self, batch: Batch, i: int, scores, valid, boxes) -> dict:
        """What the detections picture needs of image i, in the batch's (resized) pixels: the
        top box of each class the image is labelled with (boxes [R, 4] or [R, C, 4])."""
        h, w = batch["image_size"][i]
        classes = np.nonzero(batch["labels"][i] > 0.5)[0]
        tops = det_metrics.top_boxes(scores[valid], np.asarray(boxes)[valid], classes)
        gt = batch["gt_mask"][i]
        return {
            "image": augment.denormalize(batch["image"][i][:h, :w]),
            "gt": batch["gt_boxes"][i][gt],
            "boxes": tops.boxes,
            "text": [
                f"{self.task.class_names[c]} {score:.3f}"
                for c, score in zip(tops.labels, tops.scores)
            ],
        }

    def result(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        names = self.task.class_names
        c = self.task.num_classes
        ap = det_metrics.mean_ap(
            self.detections, self.truth, c, names, use_07_metric=self.task.config.eval.voc07,
            plus_one=False,
        )  # fmt: skip
        loc = det_metrics.corloc(self.detections, self.truth, c, names, plus_one=False)
        weights = np.concatenate(self.label_weights) > 0
        cls_map, _ = multilabel.mean_average_precision(
            np.concatenate(self.image_scores), np.concatenate(self.labels), weights
        )
        recall = det_metrics.proposal_recall(
            self.proposals, [t.boxes[~t.difficult] for t in self.truth], plus_one=False
        )
        metrics = {
            "map": ap["map"],
            "corloc": loc["corloc"],
            "cls_map": cls_map,
            "proposal_recall": recall,
            "mean_proposals": float(np.mean([len(p) for p in self.proposals])),
            "num_images": float(len(self.detections)),
        }
        metrics.update({f"ap/{name}": value for name, value in ap["ap"].items()})
        metrics.update({f"corloc/{name}": value for name, value in loc["per_class"].items()})
        metrics.update({f"top_box/{k}": value for k, value in loc["outcomes"].items()})
        figures = {
            "detections": detections_figure(self.shown),
            "ap_per_class": ap_bar_chart(ap["ap"], ap["map"], loc["corloc"], recall),
        }
        if self.first:
            figures["detections_first"] = figures["detections"]
        if self.task.config.eval.get("coco_ap", False):
            metrics.update(coco.coco_ap(self.detections, self.truth, self.sizes, names))
        for name, tops in zip(self.task.stream_names, self.stream_tops):
            metrics[f"stream_corloc/{name}"] = det_metrics.corloc(
                tops, self.truth, c, names, plus_one=False
            )["corloc"]
        if self.stream_shown:
            columns = len(self.stream_tops) + (len(self.proposal_tops) > 0)  # + 'regressed'
            figures["streams"] = detections_figure(self.stream_shown, columns)
        if self.proposal_tops:
            metrics["corloc_proposals"] = det_metrics.corloc(
                self.proposal_tops, self.truth, c, names, plus_one=False
            )["corloc"]
        if self.train_tops:
            metrics["corloc_train"] = det_metrics.corloc(
                self.train_tops, self.train_truth, c, names, plus_one=False
            )["corloc"]
            metrics["num_train_images"] = float(len(self.train_tops))
        return metrics, figures

    def documents(self) -> dict:
        """The detections in COCO's results format and the true boxes as a COCO dataset (image
        i + 1 is the i-th eval image; file_name its id), for pycocotools and other tools."""
        numbers = range(1, len(self.detections) + 1)
        names = self.task.class_names
        return {
            "detections_coco.json": coco.results(self.detections, numbers),
            "ground_truth_coco.json": coco.ground_truth(
                self.truth, self.sizes, names, self.image_ids
            ),
        }
