"""Job 1: one object in a 64x64 canvas, localised and classified by a sliding-window net."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jwsol import losses
from jwsol.data import canvas, mnist
from jwsol.errors import ConfigError
from jwsol.models.sliding_window import SlidingWindowNet, parse_layers
from jwsol.ops.boxes_np import iou
from jwsol.training.task import Batch, EvalContext, Evaluator, Task
from jwsol.viz.boxes import box_grid

TEST_SEED_SALT = 1_000_003  # the test split's placements use seed + this, never the train seed


class SlidingWindowEvaluator(Evaluator):
    def __init__(self, task: SlidingWindowTask, num_figure_images: int = 30):
        self.task, self.k = task, num_figure_images
        self.correct, self.ious, self.shown = [], [], []

    def add(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        box = self.task.window_box_to_canvas(outputs)
        true = batch["box"].astype(np.float32)
        self.correct.append(outputs["label"] == batch["label"])
        self.ious.append(iou(box, true))
        if sum(len(s[0]) for s in self.shown) < self.k:
            self.shown.append((batch["image"], true, box, batch["label"], outputs["label"]))

    def result(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        correct, ious = np.concatenate(self.correct), np.concatenate(self.ious)
        metrics = {
            "accuracy": float(np.mean(correct)),
            "mean_iou": float(np.mean(ious)),
            "iou50_accuracy": float(np.mean(correct & (ious >= 0.5))),
            "num_examples": float(len(correct)),
        }
        images, true, pred, labels, predicted = (
            np.concatenate(x)[: self.k] for x in zip(*self.shown)
        )
        names = self.task.class_names
        titles = [f"T: {names[t]}\nP: {names[p]}" for t, p in zip(labels, predicted)]
        figure = box_grid(images, true[:, None], pred[:, None], titles, ncols=6)
        return metrics, {"test_predictions": figure}


class SlidingWindowTask(Task):
    def __init__(self, config):
        super().__init__(config)
        d = config.data
        self.model = SlidingWindowNet(
            parse_layers(config.model.layers), num_classes=10, batch_norm=config.model.batch_norm
        )
        self.geom = self.model.window_geometry(d.canvas_size)
        extent = canvas.max_object_extent(28, d.scale_max, d.max_rotation_deg)
        # A window must hold any object, and some window must hold it wherever it lands.
        if extent > self.geom.size - self.geom.stride + 1:
            raise ConfigError(
                f"model.layers gives {self.geom.size}px windows every {self.geom.stride}px, but "
                f"objects can be {extent:.1f}px wide (scale_max={d.scale_max}, "
                f"max_rotation_deg={d.max_rotation_deg}); lower those or enlarge the windows."
            )
        if (
            self.geom.offset + self.geom.stride * (self.geom.count - 1) + self.geom.size
            < d.canvas_size
        ):
            logging.warning("windows do not reach the canvas's bottom/right edge: %s", self.geom)
        self.train_crop = self._check_train_crop(d.train_crop, extent)
        # Training windows: those of a crop (`data.train_crop`) or of the whole canvas.
        self.train_geom = self.model.window_geometry(self.train_crop or d.canvas_size)
        self.train_images, self.train_labels = self._nonblank(*mnist.load_config(d.mnist, "train"))
        self.test_images, self.test_labels = self._nonblank(*mnist.load_config(d.mnist, "test"))
        if d.num_test > 0:
            self.test_images = self.test_images[: d.num_test]
            self.test_labels = self.test_labels[: d.num_test]
        self.class_names = mnist.class_names(d.mnist.source, d.mnist.tfds_name, d.mnist.folder)

    def _check_train_crop(self, crop: int, extent: float) -> int:
        """`data.train_crop` validated: 0 (train on whole canvases) or a usable crop size."""
        if crop == 0 or crop == self.config.data.canvas_size:
            return 0
        g, size = self.geom, self.config.data.canvas_size
        smallest = max(canvas.min_crop_size(extent, g.stride), g.size)
        if not smallest <= crop <= size or (size - crop) % g.stride or g.offset:
            raise ConfigError(
                f"data.train_crop={crop}: use 0 (whole canvases) or a size in [{smallest}, "
                f"{size}] with canvas_size - train_crop a multiple of the window stride "
                f"{g.stride} (then every crop holds the object and its windows are windows of "
                f"the canvas)."
            )
        return crop

    @staticmethod
    def _nonblank(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = images.reshape(len(images), -1).max(axis=1) > 0
        if not keep.all():
            logging.warning("skipping %d blank source images (no object to place)", (~keep).sum())
        return images[keep], labels[keep]

    # Data -------------------------------------------------------------------------------------
    @property
    def num_train_examples(self) -> int:
        return len(self.train_images)

    def _canvas_kwargs(self, train: bool) -> dict:
        d = self.config.data
        return {
            "canvas_size": d.canvas_size,
            "scale_range": (d.scale_min, d.scale_max),
            "max_rotation_deg": d.max_rotation_deg,
            "threshold": d.box_threshold,
            "crop": (self.train_crop, self.geom.stride) if train and self.train_crop else None,
        }

    def train_batches(self, start_step, batch_size, process_index, process_count):
        return canvas.train_batches(
            self.train_images, self.train_labels, geom=self.train_geom, seed=self.config.seed,
            start_step=start_step, batch_size=batch_size, process_index=process_index,
            process_count=process_count, **self._canvas_kwargs(train=True),
        )  # fmt: skip

    def eval_batches(self, batch_size, process_index, process_count):
        return canvas.eval_batches(
            self.test_images, self.test_labels, geom=self.geom,
            seed=self.config.seed + TEST_SEED_SALT, batch_size=batch_size,
            process_index=process_index, process_count=process_count,
            **self._canvas_kwargs(train=False),
        )  # fmt: skip

    # Model ------------------------------------------------------------------------------------
    def init_variables(self, rng, batch):
        return self.model.init(rng, jnp.asarray(batch["image"]))

    def loss(self, params, model_state, batch, rng):
        outputs, model_state = self.model.apply(
            {"params": params, **model_state}, batch["image"], train=True, mutable=list(model_state)
        )
        loss, metrics = losses.sliding_window_loss(
            outputs, batch["target_y0"], batch["target_y1"], batch["target_box"],
            self.config.loss.cls_weight, self.config.loss.box_weight,
            self.config.loss.label_smoothing,
        )  # fmt: skip
        return loss, (model_state, metrics)

    def predict(self, variables, batch):
        """Per image, the window with the highest score sigmoid(det) * max softmax(class)."""
        outputs = self.model.apply(variables, batch["image"])
        n, h, w, _ = outputs.shape
        probs = jax.nn.softmax(outputs[..., 1:-4])
        score = jax.nn.sigmoid(outputs[..., 0]) * jnp.max(probs, axis=-1)
        best = jnp.argmax(score.reshape(n, h * w), axis=-1)
        i, j = best // w, best % w
        pick = lambda x: x.reshape(n, h * w, -1)[jnp.arange(n), best]
        return {
            "label": jnp.argmax(pick(probs), axis=-1),
            "score": score.reshape(n, -1)[jnp.arange(n), best],
            "box": pick(outputs[..., -4:]),
            "window_i": i,
            "window_j": j,
        }

    def window_box_to_canvas(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """The predicted box [N, 4] in canvas pixels, clipped to the canvas."""
        box = canvas.window_box_to_canvas(
            outputs["box"], outputs["window_i"], outputs["window_j"], self.geom
        )
        return np.clip(box, 0, self.config.data.canvas_size)

    def predictor(self, options):
        from jwsol.tasks.classifier_predict import SlidingWindowPredictor

        return SlidingWindowPredictor(self, options)

    def evaluator(self, ctx: EvalContext):
        del ctx  # every evaluation is the same
        return SlidingWindowEvaluator(self, self.config.eval.num_figure_images)
