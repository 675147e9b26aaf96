"""Multi-label image classification with a ResNet (seed 003: ResNet-50 on VOC, mAP 0.7286).

Data: `jwsol.data.detection` batches (VOC folder, tfds voc/2007 or the offline scenes) with
image-level `labels` / `label_weights`; proposals and boxes are not used (the configs set
`data.proposals.method='none'`). `config.crops.mode`:

  five  each resized image gives torchvision's FiveCrop (`jwsol.data.crops.five_crop`) of
        `crops.size`; the model scores the 5 crops and the image's logit per class is the
        maximum over them (training and evaluation alike)
  none  the resized, padded image itself (e.g. a plain 448 x 448 resize)

Loss: class-wise binary cross-entropy on the logits, mean over images and classes, weighted by
`label_weights` (`jwsol.losses.image_label_bce`). Evaluation (scores = sigmoid(logits)):
`map` and `ap/<class>` (`jwsol.metrics.multilabel`, entries with weight 0 left out),
`label_accuracy` (entries with (score >= 0.5) == label), `loss` (the training loss on the test
split), `tail_acc` (see `metrics.multilabel.tail_accuracy`),
`num_examples`; figures `ranked_images` (per class the 5 best and 5 worst scored test images)
and `tail_accuracy` (the curve over thresholds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from jwsol import losses
from jwsol.data import augment, crops
from jwsol.errors import ConfigError
from jwsol.metrics import multilabel
from jwsol.models.resnet import STAGE_SIZES, ResNet
from jwsol.tasks.image_labels import ImageLabelTask
from jwsol.training.task import Batch, EvalContext, Evaluator
from jwsol.viz.multilabel import ranked_images_figure, tail_curve_figure
from jwsol.weights import merge

CROP_MODES = ("five", "none")


class MultiLabelEvaluator(Evaluator):
    """Keeps every score and, per class, the thumbnails of the current best and worst K."""

    def __init__(self, class_names, num_ranked: int = 5, tail_top: int = 50, tail_steps: int = 20):
        self.names, self.k = tuple(class_names), num_ranked
        self.tail_top, self.tail_steps = tail_top, tail_steps
        self.scores, self.labels, self.weights = [], [], []
        self.logits, self.raw_labels, self.raw_weights = [], [], []  # for the loss
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
        self.logits.append(np.asarray(outputs["logits"]))
        self.raw_labels.append(np.asarray(batch["labels"]))
        self.raw_weights.append(np.asarray(batch["label_weights"]))
        for j, thumb in enumerate(batch["thumbnail"]):
            self.thumbs[start + j] = thumb
        top, bottom = self._ranked(np.concatenate(self.scores))
        keep = set(top.ravel()) | set(bottom.ravel())
        self.thumbs = {i: t for i, t in self.thumbs.items() if i in keep}

    def result(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        scores = np.concatenate(self.scores)
        labels, valid = np.concatenate(self.labels), np.concatenate(self.weights)
        mean_ap, ap = multilabel.mean_average_precision(scores, labels, valid)
        thresholds, curve, tail = multilabel.tail_accuracy(
            scores, labels, valid, self.tail_top, self.tail_steps
        )
        loss, _ = losses.image_label_bce_numpy(
            *(np.concatenate(x) for x in (self.logits, self.raw_labels, self.raw_weights))
        )
        correct = ((scores >= 0.5) == labels) & valid
        metrics = {
            "map": mean_ap,
            "label_accuracy": float(correct.sum() / max(valid.sum(), 1)),
            "loss": loss,
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
        if config.model.depth not in STAGE_SIZES:
            raise ConfigError(
                f"model.depth={config.model.depth!r}; expected one of {sorted(STAGE_SIZES)}."
            )
        self.model = ResNet(
            depth=config.model.depth,
            num_classes=self.num_classes,
            small_input=config.model.small_input,
            conv_batch_chunk=config.model.get("conv_batch_chunk", 0),
        )
        merge.require(config.pretrained, f"resnet{config.model.depth}")  # before the data

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

    def predictor(self, options):
        from jwsol.tasks.image_label_predict import MultiLabelPredictor

        return MultiLabelPredictor(self, options)

    def evaluator(self, ctx: EvalContext):
        del ctx  # every evaluation is the same
        e = self.config.eval
        return MultiLabelEvaluator(self.class_names, e.num_ranked, e.tail_top, e.tail_thresholds)
