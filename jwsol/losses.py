"""The losses of every job. Pure jnp functions of model outputs and targets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def sliding_window_loss(
    outputs: jax.Array,
    y0: jax.Array,
    y1: jax.Array,
    box: jax.Array,
    cls_weight: float = 1.0,
    box_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The conditional sliding-window loss.

    Args:
      outputs: [N, H, W, 1 + C + 4] (detection logit, class logits, box).
      y0: [N, H, W] 1 where the object lies in the window; y1: [N, H, W] class ids;
      box: [N, H, W, 4] true box in window coordinates.
    Returns:
      loss: detection BCE on every window, plus class NLL and box squared error on windows both
        detected (sigmoid > 0.5) and truly holding the object; summed over windows, averaged
        over the batch. The mask is a constant: no gradient flows through the detection test.
      metrics: the three parts and the fraction of positive windows that are detected.
    """
    det_logit, cls_logits, box_pred = outputs[..., 0], outputs[..., 1:-4], outputs[..., -4:]
    bce = optax.sigmoid_binary_cross_entropy(det_logit, y0)
    mask = jax.lax.stop_gradient((jax.nn.sigmoid(det_logit) > 0.5) & (y0 > 0.5)).astype(jnp.float32)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(cls_logits), y1[..., None], axis=-1)[..., 0]
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
