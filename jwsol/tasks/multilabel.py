"""Multi-label image classification with a ResNet (seed 003: ResNet-50 on VOC, mAP 0.7286).

Data: `jwsol.data.detection` batches (VOC folder, tfds voc/2007 or the offline scenes) with
image-level `labels` / `label_weights`; proposals and boxes are not used (the configs ask the
builder for one whole-image 'grid' proposal, so no proposal search runs). `config.crops.mode`:

  five  each resized image gives torchvision's FiveCrop (`jwsol.data.crops.five_crop`) of
        `crops.size`; the model scores the 5 crops and the image's logit per class is the
        maximum over them (training and evaluation alike)
  none  the resized, padded image itself (e.g. a plain 448 x 448 resize)

Loss: class-wise binary cross-entropy on the logits, mean over images and classes, weighted by
`label_weights` (`jwsol.losses.image_label_bce`). Evaluation (scores = sigmoid(logits)):
`map` and `ap/<class>` (`jwsol.metrics.multilabel`, entries with weight 0 left out),
`label_accuracy` (entries with (score >= 0.5) == label), `loss` (the training loss on the test
split), `tail_acc` (see `tail_accuracy`),
`num_examples`; figures `ranked_images` (per class the 5 best and 5 worst scored test images)
and `tail_accuracy` (the curve over thresholds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import tensorflow as tf

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jwsol import losses
from jwsol.data import augment, crops
from jwsol.errors import ConfigError
from jwsol.metrics import multilabel
from jwsol.models.resnet import ResNet
from jwsol.tasks.image_labels import ImageLabelTask
from jwsol.training.task import Batch, EvalContext, Evaluator
from jwsol.viz.boxes import figure_to_array
from jwsol.weights import merge

CROP_MODES = ("five", "none")


def tail_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray | None = None,
    top: int = 50,
    num_thresholds: int = 20,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Seed 003's tail accuracy: how often the most confident positives are right.

    scores [N, C] in [0, 1] (sigmoid outputs), labels [N, C] in {0, 1}, valid [N, C] bool
    (entries with False are left out, e.g. VOC's difficult-only labels).
    For class c, T_c = the `top` valid images with the highest score (ties: lower index first).
    Thresholds t_j = 0.5 + j * (t_max - 0.5) / num_thresholds, j = 0 .. num_thresholds - 1,
    with t_max the highest valid score of all classes. Then

        tailacc_c(t) = #{i in T_c : s_ic >= t and y_ic = 1} / #{i in T_c : s_ic >= t}

    (undefined when no image of T_c reaches t), tailacc(t) = mean over the classes where it is
    defined, and the reported value = mean of tailacc(t) over the thresholds where it is defined.
    Returns (thresholds [M], tailacc(t) [M] with NaN where undefined, mean (NaN if none)).
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    valid = np.ones(scores.shape, bool) if valid is None else np.asarray(valid, bool)
    if scores.shape != labels.shape or scores.shape != valid.shape or scores.ndim != 2:
        raise ValueError(f"scores, labels, valid must be [N, C]: {scores.shape}, {labels.shape}")
    t_max = float(scores[valid].max()) if valid.any() else 0.5
    thresholds = 0.5 + np.arange(num_thresholds) * (max(t_max, 0.5) - 0.5) / num_thresholds
    per_class = np.full((scores.shape[1], num_thresholds), np.nan)
    for c in range(scores.shape[1]):
        rows = np.flatnonzero(valid[:, c])
        best = rows[np.argsort(-scores[rows, c], kind="stable")[:top]]
        above = scores[best, c][:, None] >= thresholds[None, :]  # [top, M]
        count = above.sum(axis=0)
        hits = (above & labels[best, c][:, None]).sum(axis=0)
        per_class[c] = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    with np.errstate(invalid="ignore"):
        defined = ~np.isnan(per_class)
        curve = np.where(
            defined.any(axis=0),
            np.nansum(per_class, axis=0) / np.maximum(defined.sum(axis=0), 1),
            np.nan,
        )
    finite = curve[~np.isnan(curve)]
    return thresholds, curve, float(finite.mean()) if len(finite) else float("nan")


FRAME_COLOURS = {1: (50, 205, 50), 0: (220, 30, 30), -1: (150, 150, 150)}


def ranked_images_figure(
    thumbs_top: np.ndarray,
    thumbs_bottom: np.ndarray,
    scores_top: np.ndarray,
    scores_bottom: np.ndarray,
    label_top: np.ndarray,
    label_bottom: np.ndarray,
    class_names,
) -> np.ndarray:
    """One row per class: its K best scored images, a gap, then its K worst. thumbs_* uint8
    [C, K, t, t, 3], scores_* [C, K], label_* [C, K] in {1 positive, 0 negative, -1 ignored,
    -2 no image}. Frames: green positive, red negative, grey ignored. Returns uint8 [H, W, 3].

    The grid is composed as one array and drawn with a single imshow (fast for 200 images).
    """
    num_classes, k, t = scores_top.shape[0], scores_top.shape[1], thumbs_top.shape[2]
    frame, gap, cell = 3, 12, t + 6 + 4  # 3 px frame each side, 4 px between images
    mosaic = np.full((num_classes * (cell + 10), 2 * k * cell + gap, 3), 255, np.uint8)
    texts = []
    for c in range(num_classes):
        y = c * (cell + 10) + 10  # 10 px above each row for the scores
        for j in range(2 * k):
            thumbs, scores, kinds = (
                (thumbs_top, scores_top, label_top) if j < k
                else (thumbs_bottom, scores_bottom, label_bottom)
            )  # fmt: skip
            kind = int(kinds[c, j % k])
            if kind == -2:
                continue
            x = j * cell + (gap if j >= k else 0)
            mosaic[y : y + t + 2 * frame, x : x + t + 2 * frame] = FRAME_COLOURS[kind]
            mosaic[y + frame : y + frame + t, x + frame : x + frame + t] = thumbs[c, j % k]
            texts.append((x + frame + t / 2, y - 2, f"{scores[c, j % k]:.2f}"))
    height, width = mosaic.shape[:2]
    fig, ax = plt.subplots(figsize=(width / 80 + 1.2, height / 80 + 0.4), dpi=100)
    ax.imshow(mosaic, interpolation="nearest")
    for x, y, text in texts:
        ax.text(x, y, text, fontsize=5, ha="center", va="bottom")
    ax.set_yticks([c * (cell + 10) + 10 + t / 2 + frame for c in range(num_classes)])
    ax.set_yticklabels(class_names, fontsize=7)
    ax.set_xticks([k * cell / 2, k * cell + gap + k * cell / 2])
    ax.set_xticklabels([f"{k} highest scores", f"{k} lowest scores"], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.tight_layout(pad=0.3)
    return figure_to_array(fig)


def tail_curve_figure(thresholds: np.ndarray, curve: np.ndarray, mean: float) -> np.ndarray:
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(thresholds, curve, "o-", markersize=3)
    ax.set_xlabel("threshold t")
    ax.set_ylabel("tail accuracy (mean over classes)")
    ax.set_title(f"tail accuracy, mean {mean:.4f}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_array(fig)


def weighted_bce(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-entry weight * binary cross-entropy with logits, [N, C], in float64 (stable form
    max(z, 0) - z y + log(1 + exp(-|z|)), as the training loss)."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    return np.asarray(weights, np.float64) * (
        np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    )


class MultiLabelEvaluator(Evaluator):
    """Keeps every score and, per class, the thumbnails of the current best and worst K."""

    def __init__(self, class_names, num_ranked: int = 5, tail_top: int = 50, tail_steps: int = 20):
        self.names, self.k = tuple(class_names), num_ranked
        self.tail_top, self.tail_steps = tail_top, tail_steps
        self.scores, self.labels, self.weights, self.bce = [], [], [], []
        self.thumbs: dict[int, np.ndarray] = {}

    def _ranked(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per class the indices [C, k] of the k highest and the k lowest scores (stable)."""
        order = np.argsort(-scores, axis=0, kind="stable")  # [N, C]
        return order[: self.k].T, order[::-1][: self.k].T

    def add(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        start = sum(len(s) for s in self.scores)
        self.scores.append(np.asarray(outputs["scores"], np.float64))
        self.labels.append(np.asarray(batch["labels"]) > 0.5)
        self.weights.append(np.asarray(batch["label_weights"]) > 0)
        self.bce.append(weighted_bce(outputs["logits"], batch["labels"], batch["label_weights"]))
        for j, thumb in enumerate(batch["thumbnail"]):
            self.thumbs[start + j] = thumb
        top, bottom = self._ranked(np.concatenate(self.scores))
        keep = set(top.ravel()) | set(bottom.ravel())
        self.thumbs = {i: t for i, t in self.thumbs.items() if i in keep}

    def result(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        scores = np.concatenate(self.scores)
        labels, valid = np.concatenate(self.labels), np.concatenate(self.weights)
        mean_ap, ap = multilabel.mean_average_precision(scores, labels, valid)
        thresholds, curve, tail = tail_accuracy(scores, labels, valid, self.tail_top, self.tail_steps)  # fmt: skip
        correct = ((scores >= 0.5) == labels) & valid
        metrics = {
            "map": mean_ap,
            "label_accuracy": float(correct.sum() / max(valid.sum(), 1)),
            "loss": float(np.mean(np.concatenate(self.bce))),
            "tail_acc": tail,
            "num_examples": float(len(scores)),
            **{f"ap/{name}": float(v) for name, v in zip(self.names, ap)},
        }
        figures = {
            "ranked_images": self._ranked_figure(scores, labels, valid),
            "tail_accuracy": tail_curve_figure(thresholds, curve, tail),
        }
        return metrics, figures

    def _ranked_figure(self, scores, labels, valid) -> np.ndarray:
        top, bottom = self._ranked(scores)
        thumb_shape = next(iter(self.thumbs.values())).shape

        def gather(idx):  # idx [C, k'] -> padded to k
            c, have = idx.shape
            thumbs = np.zeros((c, self.k, *thumb_shape), np.uint8)
            s = np.zeros((c, self.k))
            kind = np.full((c, self.k), -2)
            for ci in range(c):
                for j in range(have):
                    i = idx[ci, j]
                    thumbs[ci, j], s[ci, j] = self.thumbs[i], scores[i, ci]
                    kind[ci, j] = int(labels[i, ci]) if valid[i, ci] else -1
            return thumbs, s, kind

        (t_top, s_top, k_top), (t_bot, s_bot, k_bot) = gather(top), gather(bottom)
        return ranked_images_figure(t_top, t_bot, s_top, s_bot, k_top, k_bot, self.names)


class MultiLabelTask(ImageLabelTask):
    def __init__(self, config):
        super().__init__(config)
        c = config.crops
        if c.mode not in CROP_MODES:
            raise ConfigError(f"crops.mode={c.mode!r} is unknown; use one of {CROP_MODES}.")
        if c.mode == "five" and c.size > config.data.image_size:
            raise ConfigError(
                f"crops.size={c.size} exceeds data.image_size={config.data.image_size}."
            )
        self.model = ResNet(
            depth=config.model.depth,
            num_classes=self.num_classes,
            small_input=config.model.small_input,
        )
        merge.require(config.pretrained)  # fails before the data is read

    # Data -------------------------------------------------------------------------------------
    def _finish(self, batch: dict) -> dict:
        """Builder batch -> this task's batch: five crops (if asked) and thumbnails."""
        if not hasattr(self, "_finish_tf"):
            c = self.config.crops

            def finish(image, size):
                thumbs = crops.thumbnails(
                    image, size, c.thumbnail, augment.IMAGENET_MEAN, augment.IMAGENET_STD
                )
                views = crops.five_crop(image, size, c.size) if c.mode == "five" else image
                return views, thumbs

            self._finish_tf = tf.function(finish, reduce_retracing=True)
        views, thumbs = self._finish_tf(batch["image"], batch["image_size"])
        return {
            "image": views.numpy(),
            "thumbnail": thumbs.numpy(),
            "labels": batch["labels"],
            "label_weights": batch["label_weights"],
            "image_index": batch["image_index"],
        }

    def train_batches(self, start_step, batch_size, process_index, process_count):
        for batch in super().train_batches(start_step, batch_size, process_index, process_count):
            yield self._finish(batch)

    def eval_batches(self, batch_size, process_index, process_count):
        for batch in super().eval_batches(batch_size, process_index, process_count):
            yield self._finish(batch)

    # Model ------------------------------------------------------------------------------------
    def _images(self, batch) -> jax.Array:
        """[B, S, S, 3] or the crops [B, 5, s, s, 3] flattened to [B * 5, s, s, 3]."""
        images = jnp.asarray(batch["image"])
        return images.reshape((-1, *images.shape[-3:]))

    def _pool(self, logits: jax.Array, batch) -> jax.Array:
        """Per-view logits [B * V, C] -> per-image [B, C]: the maximum over the V views."""
        n = batch["labels"].shape[0]
        return jnp.max(logits.reshape(n, -1, logits.shape[-1]), axis=1)

    def init_variables(self, rng, batch):
        return self.model.init(rng, self._images(batch), train=False)

    def loss(self, params, model_state, batch, rng):
        logits, new_state = self.model.apply(
            {"params": params, **model_state}, self._images(batch), train=True,
            mutable=["batch_stats"],
        )  # fmt: skip
        loss, metrics = losses.image_label_bce(
            self._pool(logits, batch), batch["labels"], batch["label_weights"]
        )
        return loss, (dict(new_state), metrics)

    def predict(self, variables, batch):
        logits = self._pool(self.model.apply(variables, self._images(batch), train=False), batch)
        return {"logits": logits, "scores": jax.nn.sigmoid(logits)}

    def evaluator(self, ctx: EvalContext):
        del ctx  # every evaluation is the same
        e = self.config.eval
        return MultiLabelEvaluator(self.class_names, e.num_ranked, e.tail_top, e.tail_thresholds)
