"""OICR's part of the WSDDN task: its config checks, the refinement and box regression losses,
and the regressed boxes at test time (the task itself: `jwsol.tasks.wsddn`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jwsol import losses
from jwsol.errors import ConfigError
from jwsol.ops import box_coder, oicr, tta
from jwsol.ops import boxes as box_ops

SCORE_SOURCES = ("mil", "refine")


def check_config(config) -> None:
    """One-line errors for OICR fields that do not fit together."""
    k, lc, e = int(config.model.num_refinements), config.loss, config.eval
    if k < 0:
        raise ConfigError(f"model.num_refinements={k}: expected 0 (WSDDN) or more (OICR).")
    if len(lc.refine_weights) != k:
        raise ConfigError(
            f"loss.refine_weights={tuple(lc.refine_weights)} needs one weight per refinement "
            f"stream (model.num_refinements={k})."
        )
    if e.score_source not in SCORE_SOURCES:
        raise ConfigError(f"eval.score_source={e.score_source!r}; expected {SCORE_SOURCES}.")
    if e.score_source == "refine" and k == 0:
        raise ConfigError(
            "eval.score_source='refine' needs refinement streams: set model.num_refinements "
            "> 0 or eval.score_source='mil'."
        )
    if float(lc.regression_weight) < 0:
        raise ConfigError(f"loss.regression_weight={lc.regression_weight}: expected >= 0.")


def refinement_loss(loss_config, out, batch, metrics) -> jax.Array:
    """OICR: stream k learns from pseudo-labels of stream k - 1 (stream 1 from WSDDN); the box
    regression head (out['box_deltas']) from the last stream's pseudo boxes. Adds each term to
    `metrics`; returns their weighted sum."""
    lc, total = loss_config, 0.0
    source = out["region_scores"]
    args = {"fg_iou": float(lc.fg_iou), "ignore_below": float(lc.ignore_below)}
    proposals, labels_img, mask = batch["proposals"], batch["labels"], batch["proposal_mask"]
    for k, weight in enumerate(lc.refine_weights):
        probs = out["refine_probs"][:, k]
        labels, weights = oicr.batched_pseudo_labels(source, proposals, labels_img, mask, **args)
        stream = losses.oicr_refinement_loss(probs, labels, weights, mask)
        metrics[f"refine{k + 1}"] = stream
        total = total + float(weight) * stream
        source = probs[..., 1:]
    if "box_deltas" in out:
        labels, weights, targets = oicr.batched_pseudo_targets(
            source, proposals, labels_img, mask, **args
        )
        reg = losses.box_regression_loss(
            out["box_deltas"], proposals, labels, weights, targets, mask
        )
        metrics["box_regression"] = reg
        total = total + float(lc.regression_weight) * reg
    return total


def view_boxes(deltas: jax.Array, view_proposals: jax.Array, canvas: int, size: int, flip: bool):
    """Regressed boxes of one test view in the batch's canvas pixels.

    deltas [N, R, C, 4] and view_proposals [N, R, 4] of the view (`tta.view` at `size`, `flip`)
    -> boxes [N, R, C, 4] in the `canvas`-sided batch, so every view's boxes can be averaged.
    """
    boxes = box_coder.decode(view_proposals[:, :, None, :], deltas)
    return tta.unview_boxes(boxes, canvas, size, flip)


def clip_to_images(boxes: jax.Array, image_size: jax.Array) -> jax.Array:
    """boxes [N, R, C, 4] clipped to each image's (height, width) image_size [N, 2]."""
    size = image_size.astype(jnp.float32)[:, None, None, None, :]  # against [N, R, C, 2]
    return box_ops.clip_boxes(boxes, size[..., 0], size[..., 1])
