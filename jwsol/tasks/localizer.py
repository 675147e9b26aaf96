"""Job 2: the weakly supervised AlexNet localizers (max pooling, or average / log-sum-exp pooling
for the "robust" variant), trained from image labels and scored on true boxes.

Training: `LocalizerAlexNet` gives a score map [N, h, w, C]; its global pool (config.model.pooling)
is the image logit; the loss is `losses.image_label_bce` with the batch's label_weights.

Evaluation (`LocalizerEvaluator`; every key of eval_metrics.json in docs/localizer.md): mAP and
recall of sigmoid(logits) (`metrics.multilabel`), the loss on the eval split, and the box metrics
of `metrics.localization` (CorLoc, MaxBoxAcc, MaxBoxAccV2, coverage) over one sample per (image,
class with a non-difficult true box), whatever the classifier predicts (Choe et al.'s
"ground-truth known" protocol). Boxes come with the final evaluation (every one with
eval.box_metrics_every_eval): the threshold sweep is too slow for every evaluation. Heatmap
figures (`viz.heatmaps`) come with the first, middle and last evaluations of the loop's schedule
(`EvalContext`), of the first eval images and, through `LocalizerTask.figure_batches`, of the
first training images.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from jwsol import losses
from jwsol.data import detection
from jwsol.errors import ConfigError
from jwsol.models.alexnet import INIT_SCHEMES, init_alexnet
from jwsol.models.localizer import POOLINGS, LocalizerAlexNet
from jwsol.tasks.image_labels import ImageLabelTask
from jwsol.tasks.localizer_eval import LocalizerEvaluator, cam_threshold_grid, heatmap_geometry
from jwsol.training.task import Batch, EvalContext, Variables


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
        heatmap_geometry(config)
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

    def predictor(self, options):
        from jwsol.tasks.image_label_predict import LocalizerPredictor

        return LocalizerPredictor(self, options)

    def evaluator(self, ctx: EvalContext) -> LocalizerEvaluator:
        e = self.config.eval
        boxes = bool(e.box_metrics_every_eval) or ctx.final  # the sweep is slow: final by default
        title = f", step {ctx.step} (epoch {ctx.epoch:.1f}), {self.config.model.pooling} pooling"
        return LocalizerEvaluator(
            self.config, self.class_names, boxes, self._draws_figures(ctx),
            f"_step{ctx.step:06d}", title,
        )  # fmt: skip
