"""Grad-CAM (Selvaraju et al., 2017) as pure, jittable JAX functions.

For a class c with score y_c (a logit) and an activation A [h, w, K] of a conv layer:

    alpha_k = mean over (i, j) of d y_c / d A[i, j, k]          (one weight per channel)
    map     = ReLU(sum_k alpha_k * A[:, :, k])                   [h, w]

For jwsol's ResNet the layer is layer4, through `ResNet.features` and `ResNet.head`. Its head
is a global average pool and `fc`, so d y_c / d A[i, j, k] = W[k, c] / (h * w) everywhere and
Grad-CAM equals CAM (Zhou et al., 2016) divided by h * w; the functions here do not rely on it
and differentiate any head.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def gradcam_maps(
    head: Callable[[jax.Array], jax.Array], activation: jax.Array, classes: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Grad-CAM maps of `classes` at `activation`.

    head: activation [N, h, w, K] -> scores [N, C]; it must treat examples independently (no
      batch statistics), which makes d sum_n y[n, c_n] / d A[n] the per-example gradient.
    activation: [N, h, w, K]. classes: int [N], the class to explain for each example.
    Returns (scores [N, C], maps [N, h, w] >= 0). Pure and jittable.
    """

    def picked(a):
        scores = head(a)
        return jnp.take_along_axis(scores, classes[:, None], axis=1).sum(), scores

    grads, scores = jax.grad(picked, has_aux=True)(activation)
    alpha = jnp.mean(grads, axis=(1, 2), keepdims=True)  # [N, 1, 1, K]
    return scores, jax.nn.relu(jnp.sum(alpha * activation, axis=-1))


def resnet_gradcam(
    model: nn.Module, variables: dict, images: jax.Array, classes: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Eval-mode logits and layer4 Grad-CAM maps of a `jwsol.models.resnet.ResNet` (any module
    with its `features(images, train)` -> {'layer4': ...} and `head` methods).

    images: [N, H, W, 3]. classes: int [N] to explain, or None for the predicted classes.
    Returns {'logits': [N, C], 'classes': int32 [N], 'maps': [N, h, w]} (h, w = H/32, W/32, or
    H/8, W/8 with small_input). Pure and jittable.
    """
    layer4 = model.apply(variables, images, train=False, method="features")["layer4"]

    def head(a):
        return model.apply(variables, a, method="head")

    if classes is None:
        classes = jnp.argmax(head(layer4), axis=-1)
    classes = jnp.asarray(classes, jnp.int32)
    logits, maps = gradcam_maps(head, layer4, classes)
    return {"logits": logits, "classes": classes, "maps": maps}
