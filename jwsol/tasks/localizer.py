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
  corloc, max_box_acc, max_box_acc_v2, box_coverage, mask_in_box (and their variants)
                    the box metrics of `metrics.localization` over the localization samples
                    below, at eval.cam_threshold on a grid of eval.num_cam_thresholds; the
                    figure box_curves plots them over the thresholds.
A localization sample is one (image, class) pair for every class with a true box that is not
`difficult`; its heatmap is the class's score map (raw logits, min-max normalised), its truth
the non-difficult boxes of that class. Heatmaps of true classes are scored whatever the
classifier predicts (the "ground-truth known" protocol of Choe et al.).

Boxes and maps live in the eval-scale image of the pipeline (pixel edges, IoU without `+1`);
eval.heatmap_alignment places the map on it ('receptive_field': each cell at the centre of its
receptive field, `models.localizer.score_map_geometry`; 'stretch': as cv2.resize would), and
eval.box_max_side > 0 scores on a shrunk copy (docs/localizer.md).

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

from jwsol import losses
from jwsol.data import augment, detection
from jwsol.errors import ConfigError
from jwsol.metrics import localization, multilabel
from jwsol.models.alexnet import INIT_SCHEMES, init_alexnet
from jwsol.models.localizer import POOLINGS, LocalizerAlexNet, score_map_geometry
from jwsol.ops.boxes_np import iou_matrix
from jwsol.tasks.image_labels import ImageLabelTask
from jwsol.training.task import Batch, EvalContext, Evaluator, Variables
from jwsol.viz.heatmaps import ClassMap, ImageMaps, box_curves, heatmap_grid

ALIGNMENTS = ("receptive_field", "stretch")


def cam_threshold_grid(config: ml_collections.ConfigDict) -> tuple[np.ndarray, int]:
    """The cam thresholds of eval.num_cam_thresholds and the index of eval.cam_threshold."""
    try:
        return localization.cam_threshold_grid(
            int(config.eval.num_cam_thresholds), float(config.eval.cam_threshold)
        )
    except ValueError as error:
        raise ConfigError(f"eval.{error}") from None


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
        if e.heatmap_alignment not in ALIGNMENTS:
            raise ConfigError(
                f"eval.heatmap_alignment={e.heatmap_alignment!r}; expected {ALIGNMENTS}."
            )
        self.geometry = score_map_geometry() if e.heatmap_alignment == "receptive_field" else None
        self.thresholds, cam_index = cam_threshold_grid(config)
        self.box_metrics = localization.BoxAccumulator(len(class_names), self.thresholds, cam_index)
        self.cam_threshold = float(e.cam_threshold)
        self.recall_threshold, self.fbeta = float(e.recall_threshold), float(e.fbeta)
        self.num_figures, self.max_maps = int(e.num_figure_images), int(e.max_maps_per_image)
        self.figure_suffix, self.figure_title = figure_suffix, figure_title
        self.logits, self.scores, self.labels, self.weights = [], [], [], []
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
        probs = 1.0 / (1.0 + np.exp(-np.asarray(outputs["logits"], np.float64)[n]))
        maps = []
        for cls, score_map, truth in samples[: self.max_maps]:
            heat = localization.heatmap_to_image(
                score_map, self.canvas, (height, width), None, self.geometry
            )
            prepared = localization.normalize_heatmap(heat)
            boxes = localization.largest_box(prepared, self.cam_threshold)
            iou = iou_matrix(boxes, truth).max() if len(boxes) else 0.0
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
            box_metrics, curves = self._box_metrics()
            metrics.update(box_metrics)
            if curves is not None:
                figures[f"box_curves{self.figure_suffix}"] = curves
        return metrics, figures

    def _box_metrics(self) -> tuple[dict[str, float], np.ndarray | None]:
        """(box metrics, the figure of their curves over the cam thresholds)."""
        metrics, curves = self.box_metrics.result()
        if curves is None:
            return metrics, None
        accuracy = {"MaxBoxAcc (largest, IoU 0.5)": curves["largest"]}
        for d, iou in enumerate(localization.V2_IOUS):
            accuracy[f"any component, IoU {iou:g}"] = curves["any"][d]
        figure = box_curves(
            self.thresholds,
            accuracy,
            curves["coverage"],
            curves["in_box"],
            self.cam_threshold,
            f"{int(metrics['num_loc_samples'])} (image, class) samples{self.figure_title}",
        )
        return metrics, figure


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
        cam_threshold_grid(config)
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
        keep = batch["example_index"] < k
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
