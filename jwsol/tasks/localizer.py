"""Job 2: the weakly supervised AlexNet localizers (max pooling, or average / log-sum-exp pooling
for the "robust" variant), trained from image labels and scored on true boxes.

Training: `LocalizerAlexNet` gives a score map [N, h, w, C]; its global pool (config.model.pooling)
is the image logit; the loss is `losses.image_label_bce` with the batch's label_weights.

Evaluation (`LocalizerEvaluator`), the keys of eval_metrics.json:
  map, ap/<class>   mAP of sigmoid(logits) over the classes with a positive (metrics.multilabel;
                    entries with label_weight 0 are left out).
  recall            recall at probability >= eval.recall_threshold, mean over classes
                    (recall_micro: positives pooled); fbeta too when eval.fbeta > 0.
  loss, label_accuracy   the training loss and its metric on the eval split (so the run's
                    curves.png pairs train and test loss).
  corloc            the localization samples below, a hit when the largest component's box at
                    cam threshold eval.cam_threshold has IoU >= 0.5 with a true box of the class;
                    averaged per class, then over classes.
  max_box_acc       (Choe et al. 2020) the best hit rate over cam thresholds at IoU 0.5, largest
                    component, pooled over samples; max_box_acc_threshold is that threshold.
  max_box_acc_v2    the mean over IoU 0.3 / 0.5 / 0.7 of the best hit rate with every
                    component's box a candidate (each IoU its own threshold); also _iou30/50/70.
  box_coverage      the mean fraction of the class's true-box pixels inside the thresholded map
                    (at eval.cam_threshold): how much of the objects the map covers;
  mask_in_box       and the mean fraction of the thresholded map inside those boxes;
                    box_coverage_at_best, mask_in_box_at_best: the same at
                    max_box_acc_threshold; box_coverage_at_in_box50: the coverage at the lowest
                    threshold where half of the mask lies inside the boxes (coverage at equal
                    precision, comparable between maps). The figure box_curves plots them all.
A localization sample is one (image, class) pair for every class with a true box that is not
`difficult`; its heatmap is the class's score map (raw logits, min-max normalised), its truth
the non-difficult boxes of that class. Heatmaps of true classes are scored whatever the
classifier predicts (the "ground-truth known" protocol of Choe et al.).

Coordinate frame: the eval-scale image of the pipeline (`gt_boxes` of the batch: resized, never
flipped in eval), pixel-edge coordinates, IoU without `+1`; IoU does not change under the axis
scaling back to the original image. The map of an S x S canvas is placed on it as
eval.heatmap_alignment says: 'receptive_field' puts each cell at the centre of its receptive
field (cell m at 31.5 + 16 m px for AlexNet, `score_map_geometry`), 'stretch' spreads the map
over the canvas as `cv2.resize` would (cell m at (m + 0.5) S / h), the common CAM practice,
which shifts the outer cells of an AlexNet map by up to 1.5 cells. Box metrics are computed at
the image's resolution, or with its longer side shrunk to eval.box_max_side when that is > 0
(boxes scaled alike: an approximation, quantised to image/box_max_side px).

Box metrics come with the final evaluation (every one with eval.box_metrics_every_eval) and in
--mode=eval: the threshold sweep labels T masks per sample, too slow for every evaluation.
Heatmap figures come with the first, middle and last evaluations of the schedule the loop passes
(`EvalContext`; every one with eval.figures_every_eval) and in --mode=eval, named
heatmaps_{train,eval}_stepNNNNNN. They show eval.num_figure_images fixed images of each split:
the first images of the eval split and of the training split (in record order, eval transform;
`LocalizerTask.figure_batches`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy import ndimage

from jwsol import losses
from jwsol.data import augment, detection
from jwsol.errors import ConfigError
from jwsol.metrics import multilabel
from jwsol.metrics.detection import iou_matrix
from jwsol.models.alexnet import INIT_SCHEMES, init_alexnet
from jwsol.models.localizer import POOLINGS, LocalizerAlexNet
from jwsol.ops import heatmaps as hm
from jwsol.ops.windows import Layer, receptive_field
from jwsol.tasks.image_labels import ImageLabelTask
from jwsol.training.task import Batch, EvalContext, Evaluator, Variables
from jwsol.viz.heatmaps import ClassMap, ImageMaps, box_curves, heatmap_grid

# conv1 .. conv5 of AlexNet (torch paddings, max pools 3x3/2), then conv6 3x3 unpadded, conv7 and
# score 1x1: the geometry of one score-map cell. It does not depend on the width multiplier.
LOCALIZER_LAYERS = (
    Layer("conv", 11, 4, 2),
    Layer("pool", 3, 2),
    Layer("conv", 5, 1, 2),
    Layer("pool", 3, 2),
    Layer("conv", 3, 1, 1),
    Layer("conv", 3, 1, 1),
    Layer("conv", 3, 1, 1),
    Layer("conv", 3, 1, 0),
    Layer("conv", 1),
    Layer("conv", 1),
)
ALIGNMENTS = ("receptive_field", "stretch")
V2_IOUS = (0.3, 0.5, 0.7)
_PLANAR_8 = np.zeros((3, 3, 3), bool)
_PLANAR_8[1] = True  # 8-connectivity inside each threshold plane, none across planes


# ----------------------------------------------------------------------------------------------
# Heatmap geometry and boxes (host side, NumPy).
# ----------------------------------------------------------------------------------------------


def score_map_geometry() -> tuple[float, float]:
    """(centre of cell 0, distance between cells) of the score map, in input pixel edges."""
    size, stride, offset = receptive_field(LOCALIZER_LAYERS)
    return offset + size / 2.0, float(stride)


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
    alignment: str = "receptive_field",
) -> np.ndarray:
    """One class's score map on the image it was computed from.

    score_map: [h, w] computed on an S x S input canvas (S = canvas_size) whose top-left
      (H, W) = image_size pixels hold the image (the rest is the pipeline's padding).
    out_size: (H', W') output resolution (default (H, W)): pixel (i, j) samples the image point
      ((j + 0.5) W / W', (i + 0.5) H / H').
    alignment: 'receptive_field' or 'stretch' (see the module doc).
    Returns float32 [H', W'], bilinear between cell centres.
    """
    score_map = np.asarray(score_map, np.float64)
    if score_map.ndim != 2:
        raise ValueError(f"score_map must be [h, w], got shape {score_map.shape}")
    height, width = (int(v) for v in image_size)
    out_h, out_w = (height, width) if out_size is None else (int(v) for v in out_size)
    rows, cols = score_map.shape
    if alignment == "receptive_field":
        (first_y, step_y), (first_x, step_x) = score_map_geometry(), score_map_geometry()
    elif alignment == "stretch":
        step_y, step_x = canvas_size / rows, canvas_size / cols
        first_y, first_x = step_y / 2.0, step_x / 2.0
    else:
        raise ConfigError(f"eval.heatmap_alignment={alignment!r}; expected one of {ALIGNMENTS}.")
    along_y = interpolation_matrix(out_h, rows, first_y, step_y, height / out_h)
    along_x = interpolation_matrix(out_w, cols, first_x, step_x, width / out_w)
    return (along_y @ score_map @ along_x.T).astype(np.float32)


def component_boxes(prepared: np.ndarray, thresholds: np.ndarray):
    """Connected components of `prepared >= t` for every t at once.

    prepared: [H, W] normalised heatmap; thresholds: [T].
    Returns (plane [K] threshold index, boxes [K, 4] pixel edges, sizes [K] pixels) of every
    8-connected component, in row-major order of their first pixel within each plane: the
    boxes `jwsol.ops.heatmaps.boxes_from_mask` gives plane by plane, in one labelling pass.
    """
    stack = prepared[None] >= np.asarray(thresholds, np.float32)[:, None, None]
    labels, count = ndimage.label(stack, structure=_PLANAR_8)
    if count == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64)
    slices = ndimage.find_objects(labels)
    plane = np.array([s[0].start for s in slices])
    boxes = np.array([[s[2].start, s[1].start, s[2].stop, s[1].stop] for s in slices], float)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return plane, boxes, sizes


def largest_per_plane(plane: np.ndarray, sizes: np.ndarray, num_planes: int) -> np.ndarray:
    """Index of the largest component of each plane (the first on a tie), -1 where none: [T]."""
    out = np.full(num_planes, -1)
    if len(plane):
        order = np.lexsort((np.arange(len(plane)), -sizes, plane))
        planes, first = np.unique(plane[order], return_index=True)
        out[planes] = order[first]
    return out


def threshold_hits(
    prepared: np.ndarray,
    true_boxes: np.ndarray,
    thresholds: np.ndarray,
    iou_thresholds=V2_IOUS,
) -> tuple[np.ndarray, np.ndarray]:
    """Hits of one sample at every (IoU threshold d, cam threshold t): bool [D, T] twice.

    The first counts the largest component's box (MaxBoxAcc, CorLoc), the second any
    component's box (MaxBoxAccV2); a hit is IoU >= d with some true box (IoU without `+1`).
    """
    true_boxes = np.asarray(true_boxes, np.float64).reshape(-1, 4)
    if len(true_boxes) == 0:
        raise ValueError("threshold_hits needs at least one true box")
    ious = np.asarray(iou_thresholds, np.float64)[:, None]
    plane, boxes, sizes = component_boxes(prepared, thresholds)
    largest = np.zeros((len(ious), len(thresholds)), bool)
    any_box = np.zeros_like(largest)
    if len(plane) == 0:
        return largest, any_box
    best = iou_matrix(boxes, true_boxes, plus_one=False).max(axis=1)  # [K]
    pick = largest_per_plane(plane, sizes, len(thresholds))
    has = pick >= 0
    largest[:, has] = best[pick[has]][None] >= ious
    for d, iou in enumerate(ious[:, 0]):
        any_box[d] = np.bincount(plane[best >= iou], minlength=len(thresholds)) > 0
    return largest, any_box


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


def numpy_image_label_bce(
    logits: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> tuple[float, float]:
    """`losses.image_label_bce` on the host, float64: (loss, label_accuracy) over [N, C]."""
    labels = np.asarray(labels, np.float64)
    bce = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
    correct = (logits > 0) == (labels > 0.5)
    accuracy = np.sum(weights * correct) / max(np.sum(weights), 1e-12)
    return float(np.mean(weights * bce)), float(accuracy)


def coverage_at_precision(coverage: np.ndarray, in_box: np.ndarray, level: float) -> float:
    """The largest coverage [T] at a threshold whose in-box fraction [T] reaches `level`, NaN if
    none does: how much of the objects a map covers at an equal precision of its mask."""
    reach = np.asarray(in_box) >= level
    return float(np.max(np.asarray(coverage)[reach])) if reach.any() else float("nan")


def cam_threshold_grid(num: int, cam_threshold: float) -> tuple[np.ndarray, int]:
    """(thresholds 0, 1/num, ..., (num-1)/num, index of cam_threshold in them)."""
    if num < 1:
        raise ConfigError(f"eval.num_cam_thresholds={num}; must be >= 1.")
    index = cam_threshold * num
    if abs(index - round(index)) > 1e-6 or not 0 <= round(index) < num:
        raise ConfigError(
            f"eval.cam_threshold={cam_threshold} is not on the grid k / {num} "
            f"(eval.num_cam_thresholds); pick a multiple of {1 / num:g} below 1."
        )
    return np.arange(num) / num, round(index)


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
        self.alignment, self.max_side = e.heatmap_alignment, int(e.box_max_side)
        if self.alignment not in ALIGNMENTS:
            raise ConfigError(f"eval.heatmap_alignment={self.alignment!r}; expected {ALIGNMENTS}.")
        self.thresholds, self.cam_index = cam_threshold_grid(
            int(e.num_cam_thresholds), float(e.cam_threshold)
        )
        self.cam_threshold = float(e.cam_threshold)
        self.recall_threshold, self.fbeta = float(e.recall_threshold), float(e.fbeta)
        self.num_figures, self.max_maps = int(e.num_figure_images), int(e.max_maps_per_image)
        self.figure_suffix, self.figure_title = figure_suffix, figure_title
        c, t = len(class_names), len(self.thresholds)
        self.logits, self.scores, self.labels, self.weights = [], [], [], []
        self.count = np.zeros(c, np.int64)
        self.largest_hits = np.zeros((c, len(V2_IOUS), t), np.int64)
        self.any_hits = np.zeros((c, len(V2_IOUS), t), np.int64)
        self.coverage = np.zeros(t)  # summed over samples, per cam threshold
        self.in_box = np.zeros(t)
        self.shown = {"train": [], "eval": []}

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
        height, width = image_size
        scale = 1.0
        if self.max_side > 0 and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
        out = (max(1, round(height * scale)), max(1, round(width * scale)))
        heat = heatmap_to_image(score_map, self.canvas, image_size, out, self.alignment)
        truth = truth * np.array([out[1] / width, out[0] / height] * 2)
        prepared = hm.normalize_heatmap(heat, "minmax")
        largest, any_box = threshold_hits(prepared, truth, self.thresholds)
        self.count[cls] += 1
        self.largest_hits[cls] += largest
        self.any_hits[cls] += any_box
        coverage, in_box = coverage_curves(prepared, box_pixels(truth, out), self.thresholds)
        self.coverage += coverage
        self.in_box += in_box

    # Figures --------------------------------------------------------------------------------
    def _figure_row(self, batch: Batch, outputs: dict, n: int, samples) -> ImageMaps:
        height, width = self._image_size(batch, n)
        image = augment.denormalize(np.asarray(batch["image"])[n][:height, :width])
        mask = np.asarray(batch["gt_mask"])[n]
        classes = np.asarray(batch["gt_classes"])[n][mask]
        difficult = np.asarray(batch["gt_difficult"])[n][mask]
        probs = 1.0 / (1.0 + np.exp(-np.asarray(outputs["logits"], np.float64)[n]))
        maps = []
        for cls, score_map, truth in samples[: self.max_maps]:
            heat = heatmap_to_image(score_map, self.canvas, (height, width), None, self.alignment)
            prepared = hm.normalize_heatmap(heat, "minmax")
            boxes = hm.boxes_from_mask(prepared >= self.cam_threshold)
            iou = iou_matrix(boxes, truth, plus_one=False).max() if len(boxes) else 0.0
            caption = f"p={probs[cls]:.2f}  IoU={iou:.2f}"
            maps.append(ClassMap(self.names[cls], prepared, truth, boxes, caption))
        image_id = batch.get("image_id")
        title = image_id[n].decode() if image_id is not None else ""
        names = [self.names[c] + (" (difficult)" if d else "") for c, d in zip(classes, difficult)]
        return ImageMaps(image, np.asarray(batch["gt_boxes"])[n][mask], names, maps, title)

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
        loss, accuracy = numpy_image_label_bce(
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
            box_metrics, curves = self._box_metrics()
            metrics.update(box_metrics)
            if curves is not None:
                figures[f"box_curves{self.figure_suffix}"] = curves
        return metrics, figures

    def _box_metrics(self) -> tuple[dict[str, float], np.ndarray | None]:
        """(box metrics, the figure of their curves over the cam thresholds)."""
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
        }
        for iou, value in zip(V2_IOUS, per_iou):
            out[f"max_box_acc_v2_iou{round(iou * 100)}"] = float(value)
        curves = {"MaxBoxAcc (largest, IoU 0.5)": pooled_largest[half]}
        for d, iou in enumerate(V2_IOUS):
            curves[f"any component, IoU {iou:g}"] = pooled_any[d]
        figure = box_curves(
            self.thresholds,
            curves,
            coverage,
            in_box,
            self.cam_threshold,
            f"{total} (image, class) samples{self.figure_title}",
        )
        return out, figure


# ----------------------------------------------------------------------------------------------
# Task.
# ----------------------------------------------------------------------------------------------


class LocalizerTask(ImageLabelTask):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        m = config.model
        self.model = LocalizerAlexNet(
            num_classes=self.num_classes, pooling=m.pooling, lse_r=float(m.lse_r), width=m.width
        )
        for field, choices in (("init", INIT_SCHEMES), ("pooling", POOLINGS)):
            if m[field] not in choices:
                raise ConfigError(f"model.{field}={m[field]!r}; expected one of {choices}.")
        if m.pooling == "lse" and not m.lse_r > 0:
            raise ConfigError(f"model.lse_r={m.lse_r!r}: the log-sum-exp sharpness must be > 0.")
        # Checked here so a bad value fails before any training.
        cam_threshold_grid(int(config.eval.num_cam_thresholds), float(config.eval.cam_threshold))
        if config.eval.heatmap_alignment not in ALIGNMENTS:
            raise ConfigError(
                f"eval.heatmap_alignment={config.eval.heatmap_alignment!r}; expected {ALIGNMENTS}."
            )
        if config.eval.num_figure_images > config.eval.batch_size:
            raise ConfigError(
                f"eval.num_figure_images={config.eval.num_figure_images} exceeds "
                f"eval.batch_size={config.eval.batch_size}."
            )

    def _draws_figures(self, ctx: EvalContext) -> bool:
        """Heatmap figures at the schedule's first, middle and last evaluations (or every one
        with eval.figures_every_eval) and in --mode=eval."""
        return self.config.eval.figures_every_eval or ctx.final or ctx.step in ctx.first_middle_last

    def figure_batches(self, ctx, batch_size, process_index, process_count):
        """The first eval.num_figure_images training images (eval transform), when drawn."""
        k = int(self.config.eval.num_figure_images)
        if k <= 0 or not self._draws_figures(ctx):
            return
        ds = detection.build(
            self.config.data, self.config.data.train_split, train=False, seed=self.config.seed,
            batch_size=math.ceil(k / process_count) * process_count,
            process_index=process_index, process_count=process_count,
        )  # fmt: skip
        batch = next(ds.as_numpy_iterator())
        keep = batch["example_mask"] & (batch["example_index"] < k)
        yield {key: value[keep] for key, value in batch.items()}

    # Model ------------------------------------------------------------------------------------
    def init_variables(self, rng, batch: Batch) -> Variables:
        image = jnp.asarray(batch["image"])
        return init_alexnet(lambda key: self.model.init(key, image), rng, self.config.model.init)

    def loss(self, params, model_state, batch, rng):
        del rng  # no dropout in this model
        outputs = self.model.apply({"params": params}, batch["image"])
        loss, metrics = losses.image_label_bce(
            outputs["logits"], batch["labels"], batch["label_weights"]
        )
        return loss, (model_state, metrics)

    def predict(self, variables, batch):
        outputs = self.model.apply(variables, batch["image"])
        return {"logits": outputs["logits"], "score_map": outputs["score_map"]}

    def grad_histograms(self, grads) -> dict[str, jax.Array]:
        """Gradients of the new head and the first and last AlexNet convs."""
        features = grads["features"]
        return {
            "conv1": features["conv1"]["kernel"],
            "conv5": features["conv5"]["kernel"],
            "conv6": grads["conv6"]["kernel"],
            "score": grads["score"]["kernel"],
        }

    def evaluator(self, ctx: EvalContext) -> LocalizerEvaluator:
        e = self.config.eval
        boxes = bool(e.box_metrics_every_eval) or ctx.final  # the sweep is slow: final by default
        title = f", step {ctx.step} (epoch {ctx.epoch:.1f}), {self.config.model.pooling} pooling"
        return LocalizerEvaluator(
            self.config, self.class_names, boxes, self._draws_figures(ctx),
            f"_step{ctx.step:06d}", title,
        )  # fmt: skip
