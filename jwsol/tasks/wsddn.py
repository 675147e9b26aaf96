"""WSDDN (Bilen & Vedaldi, CVPR 2016): a detector trained from image-level labels.

config -> `jwsol.models.wsddn.WSDDN` on detection batches (`jwsol.data.detection`) -> image-level
BCE (+ the optional spatial regulariser) -> evaluated as a detector.

Evaluation (host side, `WSDDNEvaluator`): per image, the region scores (class softmax x region
softmax, [R, C]) of the valid proposals; boxes are mapped back to original-image pixels
(`augment.boxes_to_original`) and so are the true boxes, so every metric is in original
coordinates. Per class: scores > eval.score_threshold, then NMS at eval.nms_iou
(`metrics.detection.detect`, torchvision's NMS rules) -> detections. Metrics:
  map, ap/<class>     VOC AP (`metrics.detection.mean_ap`: voc_eval rules, 11-point by default)
  corloc              top box per positive class, IoU >= 0.5 (`metrics.detection.corloc`)
  top_box/<outcome>   how those top boxes fare: hit, part (a miss inside the object),
                      too_large, elsewhere, none (shares of the positive (image, class) pairs)
  cls_map             image classification mAP of the image scores (`metrics.multilabel`)
  proposal_recall     share of non-difficult true boxes some proposal covers at IoU >= 0.5: the
                      ceiling of any detector on these proposals
Boxes use the data's edge convention (width = x2 - x1, which is the devkit's xmax - xmin + 1),
so IoU is computed without the devkit's `+1` (plus_one=False) and equals the devkit's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jwsol import losses
from jwsol.data import detection
from jwsol.errors import ConfigError
from jwsol.models.alexnet import INIT_SCHEMES, init_alexnet
from jwsol.models.wsddn import BACKBONES, POOLINGS, WSDDN
from jwsol.ops import tta
from jwsol.tasks import oicr as oicr_part
from jwsol.tasks.image_labels import ImageLabelTask
from jwsol.tasks.wsddn_eval import WSDDNEvaluator
from jwsol.training.task import Batch, EvalContext

SCORE_SOURCES = oicr_part.SCORE_SOURCES

# Layers whose gradients are logged as TensorBoard histograms (issue: conv1, conv2 and fc7).
HISTOGRAM_LAYERS = {
    "alexnet": {"conv1": ("features", "conv1"), "conv2": ("features", "conv2")},
    "vgg16": {"conv1": ("features", "conv1_1"), "conv2": ("features", "conv2_1")},
}


class WSDDNTask(ImageLabelTask):
    """WSDDN on scenes or VOC: config.model (WSDDN fields), config.loss, config.eval."""

    # figures/curves.png: the training loss and label accuracy, the detection metrics, and
    # every class's AP against the step in one panel (the AP curve).
    curve_panels = ("loss", "label_accuracy", "cls_map", "map", "corloc", "ap/*")

    def __init__(self, config):
        super().__init__(config)
        m = config.model
        if m.batch_norm and config.pretrained.path and not config.pretrained.make:
            raise ConfigError(
                "model.batch_norm=True needs a trunk trained here (from scratch or by "
                "pretrained.make): torchvision's AlexNet has no BatchNorm. Set "
                "--config.model.batch_norm=False to use ported pretrained.path weights."
            )
        for field, choices in (
            ("init", INIT_SCHEMES), ("pooling", POOLINGS), ("backbone", tuple(BACKBONES))
        ):  # fmt: skip
            if m[field] not in choices:
                raise ConfigError(f"model.{field}={m[field]!r}; expected one of {choices}.")
        self.model = WSDDN(
            num_classes=self.num_classes,
            backbone=m.backbone,
            width=float(m.width),
            batch_norm=bool(m.batch_norm),
            fc_features=int(m.fc_features),
            dropout_rate=float(m.dropout_rate),
            pooling=m.pooling,
            pool_size=int(m.pool_size),
            spatial_scale=float(m.spatial_scale),
            sampling_ratio=int(m.sampling_ratio),
            cls_temperature=float(m.cls_temperature),
            det_temperature=float(m.det_temperature),
            box_score_scale=float(m.box_score_scale),
            num_refinements=int(m.num_refinements),
            box_regression=bool(m.box_regression),
        )
        oicr_part.check_config(config)
        self.stream_names = ("mil",) + tuple(f"refine{k + 1}" for k in range(m.num_refinements))
        e = config.eval
        base = (
            config.data.image_size if config.data.resize_mode == "fixed" else config.data.eval_scale
        )
        canvas = int(config.data.image_size)
        flips = (False, True) if e.flip else (False,)
        self.final_views = (tta.canvas_sizes(canvas, int(base), e.scales), flips)
        # eval.views_final_only: the evaluations during training see the pipeline's view alone.
        self.views = ((canvas,), (False,)) if e.views_final_only else self.final_views

    def _apply(self, variables, batch, train: bool, rng=None, mutable=False):
        """The model's outputs; with a `mutable` list (e.g. ['batch_stats'], or [] for a model
        without state), the pair (outputs, new state), as Flax's apply."""
        return self.model.apply(
            variables,
            batch["image"],
            batch["proposals"],
            batch["proposal_mask"],
            batch["proposal_scores"],
            train=train,
            rngs={"dropout": rng} if train else None,
            mutable=mutable,
        )

    def init_variables(self, rng, batch: Batch):
        inputs = [jnp.asarray(batch[k]) for k in ("image", "proposals", "proposal_mask", "proposal_scores")]  # fmt: skip
        return init_alexnet(lambda key: self.model.init(key, *inputs), rng, self.config.model.init)

    def loss(self, params, model_state, batch, rng):
        out, model_state = self._apply(
            {"params": params, **model_state}, batch, train=True, rng=rng, mutable=list(model_state)
        )
        loss, metrics = losses.wsddn_loss(
            out["image_scores"], batch["labels"], batch["label_weights"]
        )
        metrics["bce"] = loss
        lc = self.config.loss
        if lc.spatial_weight > 0:
            reg = losses.wsddn_spatial_regulariser(
                out["region_scores"], out["fc7"], batch["proposals"], batch["proposal_mask"],
                batch["labels"], lc.spatial_iou, lc.spatial_num_boxes,
            )  # fmt: skip
            metrics["spatial"] = jnp.mean(reg)
            loss = loss + lc.spatial_weight * jnp.mean(reg)
        if "refine_probs" in out or "box_deltas" in out:
            loss = loss + oicr_part.refinement_loss(lc, out, batch, metrics)
        return loss, (model_state, metrics)

    def predict(self, variables, batch):
        return self._predict(variables, batch, *self.views)

    def final_predict(self, variables, batch):
        return self._predict(variables, batch, *self.final_views)

    def _predict(self, variables, batch, sizes, flips):
        """Scores averaged over the views `sizes` x `flips` (canvas sides, mirrored or not; from
        eval.scales x eval.flip): region_scores [N, R, C]
        (eval.score_source: WSDDN's, or the mean of the refinement streams without
        background), image_scores [N, C] (WSDDN's), with refinements stream_scores
        [N, 1 + K, R, C] (WSDDN, refine1..K), and with box regression boxes [N, R, C, 4] (each
        view's regressed boxes in batch pixels, averaged, clipped to the image)."""
        views, canvas = [], batch["image"].shape[1]
        for size in sizes:
            for flip in flips:
                image, proposals = tta.view(batch["image"], batch["proposals"], size, flip)
                out = self._apply(variables, dict(batch, image=image, proposals=proposals), False)
                streams = [out["region_scores"][:, None]]
                if "refine_probs" in out:
                    streams.append(out["refine_probs"][..., 1:])
                view = {"streams": jnp.concatenate(streams, axis=1), "image": out["image_scores"]}
                if "box_deltas" in out:
                    deltas = out["box_deltas"]
                    view["boxes"] = oicr_part.view_boxes(deltas, proposals, canvas, size, flip)
                views.append(view)
        mean = {key: sum(v[key] for v in views) / len(views) for key in views[0]}
        streams = mean["streams"]
        if self.config.eval.score_source == "refine":
            region_scores = jnp.mean(streams[:, 1:], axis=1)
        else:
            region_scores = streams[:, 0]
        outputs = {"region_scores": region_scores, "image_scores": mean["image"]}
        if streams.shape[1] > 1:
            outputs["stream_scores"] = streams
        if "boxes" in mean:
            outputs["boxes"] = oicr_part.clip_to_images(mean["boxes"], batch["image_size"])
        return outputs

    def train_eval_batches(self, ctx, batch_size, process_index, process_count):
        """The training split in eval mode for CorLoc (eval.train_corloc), final evaluation."""
        if not (self.config.eval.train_corloc and ctx.final):
            return ()
        ds = detection.build(
            self.config.data, self.config.data.train_split, train=False, seed=self.config.seed,
            batch_size=batch_size, process_index=process_index, process_count=process_count,
        )  # fmt: skip
        return ds.as_numpy_iterator()

    def evaluator(self, ctx: EvalContext) -> WSDDNEvaluator:
        # The schedule's first evaluation also keeps its picture as detections_first.
        return WSDDNEvaluator(self, first=ctx.step == ctx.schedule[0])

    def predictor(self, options):
        from jwsol.tasks.wsddn_predict import DetectionPredictor

        return DetectionPredictor(self, options)

    def grad_histograms(self, grads) -> dict[str, jax.Array]:
        layers = HISTOGRAM_LAYERS[self.config.model.backbone]
        out = {name: grads[scope][layer]["kernel"] for name, (scope, layer) in layers.items()}
        return dict(out, fc7=grads["fc67"]["fc7"]["kernel"])
