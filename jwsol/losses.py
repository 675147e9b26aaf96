"""The losses of every job: pure jnp functions of model outputs and targets, and the NumPy twins
that host-side evaluators use."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jwsol.ops import box_coder
from jwsol.ops import boxes as box_ops


def sliding_window_loss(
    outputs: jax.Array,
    y0: jax.Array,
    y1: jax.Array,
    box: jax.Array,
    cls_weight: float = 1.0,
    box_weight: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The conditional sliding-window loss.

    Args:
      outputs: [N, H, W, 1 + C + 4] (detection logit, class logits, box).
      y0: [N, H, W] 1 where the object lies in the window; y1: [N, H, W] class ids;
      box: [N, H, W, 4] true box in window coordinates.
      label_smoothing: eps; the class term is then the cross-entropy against (1 - eps) on the
        true class plus eps / C on every class (0: the plain NLL).
    Returns:
      loss: detection BCE on every window, plus class NLL and box squared error on windows both
        detected (sigmoid > 0.5) and truly holding the object; summed over windows, averaged
        over the batch. The mask is a constant: no gradient flows through the detection test.
      metrics: the three parts and the fraction of positive windows that are detected.
    """
    det_logit, cls_logits, box_pred = outputs[..., 0], outputs[..., 1:-4], outputs[..., -4:]
    bce = optax.sigmoid_binary_cross_entropy(det_logit, y0)
    mask = jax.lax.stop_gradient((jax.nn.sigmoid(det_logit) > 0.5) & (y0 > 0.5)).astype(jnp.float32)
    log_p = jax.nn.log_softmax(cls_logits)
    nll = -jnp.take_along_axis(log_p, y1[..., None], axis=-1)[..., 0]
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(log_p, axis=-1)
    se = jnp.sum(jnp.square(box_pred - box), axis=-1)
    per_image = jnp.sum(bce + mask * (cls_weight * nll + box_weight * se), axis=(1, 2))
    n = outputs.shape[0]
    metrics = {
        "det_bce": jnp.sum(bce) / n,
        "cls_nll": jnp.sum(mask * nll) / n,
        "box_se": jnp.sum(mask * se) / n,
        "detected_positives": jnp.sum(mask) / jnp.maximum(jnp.sum(y0), 1.0),
    }
    return jnp.mean(per_image), metrics


def image_label_bce(
    logits: jax.Array, labels: jax.Array, label_weights: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Multi-label binary cross-entropy on image-level logits (the localizers' loss).

    Args:
      logits: [N, C] pooled class scores; labels: [N, C] in {0, 1};
      label_weights: [N, C] (e.g. 0 for VOC classes seen only as 'difficult'), or None for 1.
    Returns:
      loss: sum over (n, c) of weight * BCE(logit, label), divided by N * C: torch's
        `BCEWithLogitsLoss(weight=w)` with mean reduction. A zero weight removes an entry and
        its gradient; the divisor stays N * C, so ignoring entries does not rescale the rest.
      metrics: `label_accuracy`, the weighted fraction of entries with (logit > 0) == label.
    """
    weights = jnp.ones_like(logits) if label_weights is None else label_weights
    per_entry = weights * optax.sigmoid_binary_cross_entropy(logits, labels)
    correct = ((logits > 0) == (labels > 0.5)).astype(jnp.float32)
    accuracy = jnp.sum(weights * correct) / jnp.maximum(jnp.sum(weights), 1e-12)
    return jnp.mean(per_entry), {"label_accuracy": accuracy}


def image_label_bce_numpy(
    logits: np.ndarray, labels: np.ndarray, label_weights: np.ndarray
) -> tuple[float, float]:
    """Host twin of `image_label_bce`: (loss, label_accuracy) of [N, C] arrays.

    BCE in float64, in the stable form max(z, 0) - z y + log(1 + exp(-|z|)) as optax's; the
    accuracy in the weights' dtype, as the jnp loss.
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    weights = np.asarray(label_weights)
    per_entry = weights * (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    correct = (z > 0) == (y > 0.5)
    accuracy = np.sum(weights * correct) / max(np.sum(weights), 1e-12)
    return float(np.mean(per_entry)), float(accuracy)


def wsddn_loss(
    image_scores: jax.Array,
    labels: jax.Array,
    label_weights: jax.Array | None = None,
    eps: float = 1e-6,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """WSDDN's image-level binary cross-entropy on probabilities.

    Args:
      image_scores: [N, C] in [0, 1] (sums over regions of the two-stream product).
      labels: [N, C] multi-hot; label_weights: [N, C] (0 drops an entry) or None.
      eps: scores are clipped to [eps, 1 - eps] before the logs.
    Returns:
      loss: -sum_c w (y log s + (1 - y) log(1 - s)), summed over classes, mean over images
        (hbilen/WSDDN's 'binarylog' loss sums over classes too).
      metrics: `label_accuracy` (s > 0.5 agrees with the label, over weighted entries).
    """
    weights = jnp.ones_like(image_scores) if label_weights is None else label_weights
    s = jnp.clip(image_scores, eps, 1.0 - eps)
    per_entry = -(labels * jnp.log(s) + (1.0 - labels) * jnp.log1p(-s))
    correct = ((image_scores > 0.5) == (labels > 0.5)).astype(jnp.float32)
    accuracy = jnp.sum(weights * correct) / jnp.maximum(jnp.sum(weights), 1e-12)
    return jnp.mean(jnp.sum(weights * per_entry, axis=-1)), {"label_accuracy": accuracy}


def oicr_refinement_loss(
    probs: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    mask: jax.Array,
    eps: float = 1e-6,
) -> jax.Array:
    """One OICR refinement stream's weighted cross-entropy (pcl.pytorch's refine loss).

    Args:
      probs: [N, R, C + 1] softmax over background (index 0) and classes.
      labels: [N, R] int in 0..C and weights: [N, R] (`jwsol.ops.oicr.pseudo_labels`).
      mask: [N, R] bool, True for real proposals.
    Returns the scalar -sum_r w_r log p_r[label_r] / (valid proposals), mean over images;
    probabilities are clipped at eps so a confident mistake stays finite.
    """
    picked = jnp.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    per_region = -weights * jnp.log(jnp.maximum(picked, eps)) * mask
    count = jnp.maximum(jnp.sum(mask, axis=1), 1)
    return jnp.mean(jnp.sum(per_region, axis=1) / count)


def box_regression_loss(
    deltas: jax.Array,
    proposals: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
) -> jax.Array:
    """OICR's box regression (Yang et al., ICCV 2019): weighted smooth L1 towards pseudo boxes.

    Args:
      deltas: [N, R, C, 4] the head's per-class deltas (`jwsol.ops.box_coder`).
      proposals: [N, R, 4]; labels [N, R] in 0..C, weights [N, R] and targets [N, R, 4] from
        `jwsol.ops.oicr.pseudo_targets`; mask: [N, R] bool, True for real proposals.
    Returns the scalar sum over foreground proposals (labels > 0) of w_r x smooth L1 (beta 1,
    summed over the 4 deltas of the labelled class) / (valid proposals), mean over images, as
    Fast R-CNN averages over every sampled region.
    """
    cls = jnp.maximum(labels - 1, 0)
    picked = jnp.take_along_axis(deltas, cls[..., None, None], axis=2)[:, :, 0]  # [N, R, 4]
    wanted = jax.lax.stop_gradient(box_coder.encode(proposals, targets))
    per_region = jnp.sum(optax.huber_loss(picked, wanted, delta=1.0), axis=-1)
    per_region = per_region * weights * ((labels > 0) & mask)
    count = jnp.maximum(jnp.sum(mask, axis=1), 1)
    return jnp.mean(jnp.sum(per_region, axis=1) / count)


def wsddn_spatial_regulariser(
    region_scores: jax.Array,
    features: jax.Array,
    boxes: jax.Array,
    mask: jax.Array,
    labels: jax.Array,
    iou_threshold: float = 0.6,
    num_boxes: int = 10,
) -> jax.Array:
    """WSDDN's spatial regulariser (hbilen/WSDDN `LossTopBoxSmoothProb`), per image.

    For each positive class, the top-scoring region and the next `num_boxes - 1` by score
    whose IoU with it is > `iou_threshold` are pulled together in feature space:
    0.5 * sum_r (p_r * ||f_r - f_top||)^2, p_r the region score (a constant here).

    Args:
      region_scores: [N, R, C]; features: [N, R, F] (fc7); boxes: [N, R, 4] (x1, y1, x2, y2);
      mask: [N, R] valid proposals; labels: [N, C] (> 0.5 is positive).
    Returns [N]: the sum over positive classes.
    NOTE: the official backward pass sends p_r * (f_r - f_top) to f_r, dropping one factor p_r
    of its own forward; we differentiate the forward as written (p_r^2 * (f_r - f_top)).
    """
    k = min(num_boxes, region_scores.shape[1])
    scores = jnp.where(mask[:, :, None], region_scores, -1.0)  # padding ranks last
    top_scores, top_index = jax.lax.top_k(jnp.swapaxes(scores, 1, 2), k)  # [N, C, k]
    take = jax.vmap(lambda values, index: values[index])  # per image: [R, D], [C, k] -> [C, k, D]
    top_boxes = take(boxes, top_index)  # [N, C, k, 4]
    top_features = take(features, top_index)  # [N, C, k, F]
    first, rest = top_boxes[:, :, :1], top_boxes[:, :, 1:]
    near = (box_ops.iou(first, rest) > iou_threshold) & (top_scores[:, :, 1:] >= 0.0)
    distance = jnp.sum(jnp.square(top_features[:, :, 1:] - top_features[:, :, :1]), axis=-1)
    weight = jnp.square(jax.lax.stop_gradient(top_scores[:, :, 1:]))
    per_class = 0.5 * jnp.sum(jnp.where(near, weight * distance, 0.0), axis=-1)  # [N, C]
    return jnp.sum(jnp.where(labels > 0.5, per_class, 0.0), axis=-1)
