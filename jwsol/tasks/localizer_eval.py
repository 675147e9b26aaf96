"""The localizers' evaluator: multi-label metrics of every eval batch, the box metrics of
`metrics.localization` over one sample per (image, class with a non-difficult true box), and
the heatmap figures (`viz.heatmaps`). The keys: docs/localizer.md."""

from __future__ import annotations

import ml_collections
import numpy as np

from jwsol import losses
from jwsol.data import augment
from jwsol.errors import ConfigError
from jwsol.metrics import coco, localization, multilabel
from jwsol.metrics.detection import ImageDetections, ImageGroundTruth
from jwsol.models.localizer import score_map_geometry
from jwsol.training.task import Batch, Evaluator
from jwsol.viz.heatmaps import ImageMaps, heatmap_grid, image_maps, localization_curves

ALIGNMENTS = ("receptive_field", "stretch")


def cam_threshold_grid(config: ml_collections.ConfigDict) -> tuple[np.ndarray, int]:
    """The cam thresholds of eval.num_cam_thresholds and the index of eval.cam_threshold."""
    try:
        return localization.cam_threshold_grid(
            int(config.eval.num_cam_thresholds), float(config.eval.cam_threshold)
        )
    except ValueError as error:
        raise ConfigError(f"eval.{error}") from None


def heatmap_geometry(config: ml_collections.ConfigDict) -> tuple[float, float] | None:
    """The score-map geometry that eval.heatmap_alignment asks for (None: stretch)."""
    alignment = config.eval.heatmap_alignment
    if alignment not in ALIGNMENTS:
        raise ConfigError(f"eval.heatmap_alignment={alignment!r}; expected {ALIGNMENTS}.")
    return score_map_geometry() if alignment == "receptive_field" else None


# ----------------------------------------------------------------------------------------------
# Evaluator.
# ----------------------------------------------------------------------------------------------


class LocalizerEvaluator(Evaluator):
    """Multi-label metrics on every eval batch; box metrics if `boxes`, figures if `figures`."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        class_names: tuple[str, ...],
        boxes: bool = True,
        figures: bool = True,
        figure_suffix: str = "",
        figure_title: str = "",
    ):
        e = config.eval
        self.names, self.boxes, self.figures = class_names, boxes, figures
        self.canvas = int(config.data.image_size)
        self.max_side = int(e.box_max_side)
        self.geometry = heatmap_geometry(config)
        self.thresholds, cam_index = cam_threshold_grid(config)
        if e.box_convention not in localization.CONVENTIONS:
            raise ConfigError(
                f"eval.box_convention={e.box_convention!r}; expected one of "
                f"{localization.CONVENTIONS}."
            )
        self.box_metrics = localization.BoxAccumulator(
            len(class_names), self.thresholds, cam_index, e.box_convention
        )
        self.cam_threshold = float(e.cam_threshold)
        self.recall_threshold, self.fbeta = float(e.recall_threshold), float(e.fbeta)
        self.num_figures, self.max_maps = int(e.num_figure_images), int(e.max_maps_per_image)
        self.figure_suffix, self.figure_title = figure_suffix, figure_title
        self.logits, self.scores, self.labels, self.weights = [], [], [], []
        self.shown = {"train": [], "eval": []}
        self.kept: list[dict] = []  # per eval image, what `documents` needs (small score maps)

    # Per batch ------------------------------------------------------------------------------
    def add(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        logits = np.asarray(outputs["logits"], np.float64)
        self.logits.append(logits)
        self.scores.append(1.0 / (1.0 + np.exp(-logits)))
        self.labels.append(np.asarray(batch["labels"]))
        self.weights.append(np.asarray(batch["label_weights"]))
        for n in range(len(logits)):
            show = self.figures and len(self.shown["eval"]) < self.num_figures
            if not (self.boxes or show):
                continue
            samples = self._samples(batch, outputs, n)
            if self.boxes:
                for cls, score_map, truth in samples:
                    self._score_sample(cls, score_map, truth, self._image_size(batch, n))
            if show:
                self.shown["eval"].append(self._figure_row(batch, outputs, n, samples))
        self._keep(batch, outputs)

    def _keep(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        """Each image's score maps [h, w, C], class probabilities and true boxes in original
        pixels, for the COCO documents of the final evaluation."""
        if not self.boxes or "orig_size" not in batch or "image_id" not in batch:
            return
        truth = augment.boxes_to_original(
            batch["gt_boxes"], batch["scale_xy"], batch["image_size"], batch["flipped"]
        )
        for n in range(len(batch["image"])):
            gt = np.asarray(batch["gt_mask"])[n]
            image_id = batch["image_id"][n]
            self.kept.append({
                "score_map": np.asarray(outputs["score_map"][n], np.float32),
                "probs": self.scores[-1][n],
                "image_size": self._image_size(batch, n),
                "orig_size": tuple(int(v) for v in batch["orig_size"][n]),
                "id": image_id.decode() if isinstance(image_id, bytes) else str(image_id),
                "truth": ImageGroundTruth(
                    truth[n][gt], batch["gt_classes"][n][gt], batch["gt_difficult"][n][gt]
                ),
            })  # fmt: skip

    def add_figure_batch(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        """Training images (`LocalizerTask.figure_batches`): drawn in heatmaps_train only."""
        for n in range(len(batch["image"])):
            if self.figures and len(self.shown["train"]) < self.num_figures:
                samples = self._samples(batch, outputs, n)
                self.shown["train"].append(self._figure_row(batch, outputs, n, samples))

    @staticmethod
    def _image_size(batch: Batch, n: int) -> tuple[int, int]:
        return tuple(int(v) for v in np.asarray(batch["image_size"])[n])

    @staticmethod
    def _samples(batch: Batch, outputs: dict, n: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(class, score map [h, w], true boxes [M, 4]) for each class with a non-difficult box."""
        mask = np.asarray(batch["gt_mask"])[n] & ~np.asarray(batch["gt_difficult"])[n]
        classes = np.asarray(batch["gt_classes"])[n][mask]
        boxes = np.asarray(batch["gt_boxes"], np.float64)[n][mask]
        score_map = np.asarray(outputs["score_map"])[n]
        return [(int(c), score_map[..., c], boxes[classes == c]) for c in np.unique(classes)]

    def _score_sample(self, cls: int, score_map, truth, image_size) -> None:
        prepared, truth = localization.sample_on_image(
            score_map, self.canvas, image_size, truth, self.max_side, self.geometry
        )
        self.box_metrics.add(cls, prepared, truth)

    # Figures --------------------------------------------------------------------------------
    def _figure_row(self, batch: Batch, outputs: dict, n: int, samples) -> ImageMaps:
        height, width = self._image_size(batch, n)
        image = augment.denormalize(np.asarray(batch["image"])[n][:height, :width])
        mask = np.asarray(batch["gt_mask"])[n]
        classes = np.asarray(batch["gt_classes"])[n][mask]
        difficult = np.asarray(batch["gt_difficult"])[n][mask]
        names = [self.names[c] + (" (difficult)" if d else "") for c, d in zip(classes, difficult)]
        probs = 1.0 / (1.0 + np.exp(-np.asarray(outputs["logits"], np.float64)[n]))
        title = batch["image_id"][n].decode() if "image_id" in batch else ""
        return image_maps(
            image, np.asarray(batch["gt_boxes"])[n][mask], names, samples[: self.max_maps],
            self.names, probs, self.canvas, self.geometry, self.cam_threshold, title,
        )  # fmt: skip

    def _figures(self) -> dict[str, np.ndarray]:
        figures = {}
        for split, rows in self.shown.items():
            if rows:
                title = (
                    f"{split} images{self.figure_title}. Green: true boxes; red: largest "
                    f"component of the map >= {self.cam_threshold:g} (min-max normalised)"
                )
                figures[f"heatmaps_{split}{self.figure_suffix}"] = heatmap_grid(
                    rows, title, max_maps=self.max_maps
                )
        return figures

    # Result ---------------------------------------------------------------------------------
    def result(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        scores, labels = np.concatenate(self.scores), np.concatenate(self.labels) > 0.5
        valid = np.concatenate(self.weights) > 0
        mean_ap, ap = multilabel.mean_average_precision(scores, labels, valid)
        recall = multilabel.recall_at(scores, labels, self.recall_threshold, valid)
        loss, accuracy = losses.image_label_bce_numpy(
            np.concatenate(self.logits), labels, np.concatenate(self.weights)
        )
        metrics = {
            "map": mean_ap,
            "recall": recall["macro"],
            "recall_micro": recall["micro"],
            "loss": loss,
            "label_accuracy": accuracy,
            "num_examples": float(len(scores)),
        }
        if self.fbeta > 0:
            metrics["fbeta"] = multilabel.fbeta(
                scores, labels, self.recall_threshold, self.fbeta, valid
            )["macro"]
        metrics.update({f"ap/{name}": float(v) for name, v in zip(self.names, ap)})
        figures = self._figures()
        if self.boxes:
            box_metrics, curves = self.box_metrics.result()
            metrics.update(box_metrics)
            if curves is not None:
                samples = f"{int(box_metrics['num_loc_samples'])} (image, class) samples"
                figures[f"box_curves{self.figure_suffix}"] = localization_curves(
                    self.thresholds, curves, self.cam_threshold, samples + self.figure_title
                )
        return metrics, figures

    # COCO documents -------------------------------------------------------------------------
    def _detections(self, kept: dict) -> ImageDetections:
        """One box per class: its heatmap's largest component at eval.cam_threshold, placed at
        the original resolution (the predictor's extraction), scored by the class probability."""
        boxes, scores, labels = [], [], []
        for c, p in enumerate(kept["probs"]):
            heat = localization.heatmap_to_image(
                kept["score_map"][..., c], self.canvas, kept["image_size"], kept["orig_size"],
                self.geometry,
            )  # fmt: skip
            box = localization.largest_box(localization.normalize_heatmap(heat), self.cam_threshold)
            if len(box):
                boxes.append(box[0]), scores.append(float(p)), labels.append(c)
        return ImageDetections(
            np.asarray(boxes, np.float64).reshape(-1, 4),
            np.asarray(scores),
            np.asarray(labels, int),
        )

    def documents(self) -> dict:
        """The localizer's boxes as COCO results (one per image and class) and the true boxes as
        a COCO dataset (image i + 1 is the i-th eval image), as the detectors write them."""
        if not self.kept:
            return {}
        numbers = range(1, len(self.kept) + 1)
        return {
            "detections_coco.json": coco.results([self._detections(k) for k in self.kept], numbers),
            "ground_truth_coco.json": coco.ground_truth(
                [k["truth"] for k in self.kept], [k["orig_size"] for k in self.kept], self.names,
                [k["id"] for k in self.kept],
            ),
        }  # fmt: skip
