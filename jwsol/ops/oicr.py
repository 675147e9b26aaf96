"""Online instance classifier refinement (OICR, Tang et al., CVPR 2017): the pseudo-labels.

Refinement stream k is trained as a (C + 1)-way proposal classifier (index 0 = background) on
labels made, without gradient, from the scores of stream k - 1 (stream 1 from WSDDN's region
scores). For each class present in the image, in class order, the top-scoring proposal becomes a
pseudo box with that score as its weight, and its score row is zeroed so that it cannot win for a
second class. Every proposal then takes the class of the pseudo box it overlaps most if that IoU
is >= fg_iou (else background) and that box's score as its loss weight; with ignore_below > 0,
proposals whose best IoU is below it get weight 0 (pcl.pytorch's BG_THRESH_LO rule).

IoU is `jwsol.ops.boxes.pairwise_iou` (continuous coordinates, no `+1`). Padded proposals
(mask False) never become pseudo boxes and get weight 0; an image without a positive class (or
without a valid proposal) gives every proposal label 0 and weight 0.

Box regression (`pseudo_targets`, as Yang et al., ICCV 2019 add to OICR): a foreground
proposal's target is the pseudo box it was labelled from, so a regression head learns to move
proposals onto the boxes the classifier trusts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jwsol.ops.boxes import pairwise_iou


def pseudo_boxes(
    region_scores: jax.Array, image_labels: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The pseudo box of each class: (index [C] int32, score [C], valid [C] bool).

    region_scores [R, C] >= 0, image_labels [C] (> 0.5 is present), mask [R] bool. Classes are
    visited in order; the winner's row is zeroed before the next class (ties: lowest index).
    """
    region_scores, image_labels, mask = map(jnp.asarray, (region_scores, image_labels, mask))
    num_classes = region_scores.shape[1]
    # Padded rows sit below every real score (>= 0), so they win only in an all-padded image.
    scores = jnp.where(mask[:, None], region_scores, -jnp.inf)
    any_valid = jnp.any(mask)

    def visit(scores, c):
        column = scores[:, c]
        index = jnp.argmax(column)
        valid = (image_labels[c] > 0.5) & any_valid
        scores = jnp.where(valid, scores.at[index].set(0.0), scores)
        return scores, (index.astype(jnp.int32), column[index], valid)

    _, (index, score, valid) = jax.lax.scan(visit, scores, jnp.arange(num_classes))
    return index, jnp.where(valid, score, 0.0), valid


def pseudo_labels(
    region_scores: jax.Array,
    proposals: jax.Array,
    image_labels: jax.Array,
    mask: jax.Array,
    *,
    fg_iou: float = 0.5,
    ignore_below: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """OICR's proposal labels for one image.

    Args:
      region_scores: [R, C] the previous stream's scores (no background column).
      proposals: [R, 4] (x1, y1, x2, y2).
      image_labels: [C] multi-hot.
      mask: [R] bool, True for real proposals.
    Returns (labels [R] int32 in 0..C, 0 = background; weights [R] float32).
    """
    labels, weights, _ = pseudo_targets(
        region_scores, proposals, image_labels, mask, fg_iou=fg_iou, ignore_below=ignore_below
    )
    return labels, weights


def pseudo_targets(
    region_scores: jax.Array,
    proposals: jax.Array,
    image_labels: jax.Array,
    mask: jax.Array,
    *,
    fg_iou: float = 0.5,
    ignore_below: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`pseudo_labels` and each proposal's pseudo box, the box regression's target.

    Same arguments; returns (labels [R], weights [R], boxes [R, 4]: the pseudo box each
    proposal overlaps most, meaningful where labels > 0).
    """
    index, score, valid = pseudo_boxes(region_scores, image_labels, mask)
    proposals = jnp.asarray(proposals, jnp.float32)
    overlaps = pairwise_iou(proposals, proposals[index])
    overlaps = jnp.where(valid[None, :], overlaps, -1.0)  # [R, C]: absent classes never match
    nearest = jnp.argmax(overlaps, axis=1)  # ties: the lower class
    best = jnp.max(overlaps, axis=1)
    labels = jnp.where(best >= fg_iou, nearest + 1, 0).astype(jnp.int32)
    weights = score[nearest]
    if ignore_below > 0:
        weights = jnp.where(best < ignore_below, 0.0, weights)
    keep = jnp.asarray(mask) & jnp.any(valid)
    labels = jnp.where(keep, labels, 0)
    weights = jnp.where(keep, weights, 0.0).astype(jnp.float32)
    return labels, weights, proposals[index][nearest]


def batched_pseudo_labels(
    region_scores: jax.Array,
    proposals: jax.Array,
    image_labels: jax.Array,
    mask: jax.Array,
    *,
    fg_iou: float = 0.5,
    ignore_below: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """`pseudo_labels` over a batch ([N, R, C], [N, R, 4], [N, C], [N, R]), without gradient."""
    labels, weights, _ = batched_pseudo_targets(
        region_scores, proposals, image_labels, mask, fg_iou=fg_iou, ignore_below=ignore_below
    )
    return labels, weights


def batched_pseudo_targets(
    region_scores: jax.Array,
    proposals: jax.Array,
    image_labels: jax.Array,
    mask: jax.Array,
    *,
    fg_iou: float = 0.5,
    ignore_below: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`pseudo_targets` over a batch: labels [N, R], weights [N, R], boxes [N, R, 4], without
    gradient."""
    fn = functools.partial(pseudo_targets, fg_iou=fg_iou, ignore_below=ignore_below)
    out = jax.vmap(fn)(jax.lax.stop_gradient(region_scores), proposals, image_labels, mask)
    return jax.tree.map(jax.lax.stop_gradient, out)
