"""Box arithmetic and non-maximum suppression.

Boxes are float arrays `[..., 4]` holding (x1, y1, x2, y2) in continuous coordinates: a box
covering pixels 0..9 is (0, 0, 10, 10) and has area 100; `plus_one=True` switches IoU to the VOC
devkit's inclusive-pixel convention (widths x2 - x1 + 1). `jwsol.ops.boxes_np` holds the NumPy
twins (IoU, clip, NMS) for code that must not import JAX.

`nms` reproduces `torchvision.ops.nms` (CPU kernel): boxes are visited in descending score
order; each box not yet suppressed is kept and suppresses every later box whose IoU with it is
strictly greater than `iou_threshold`; areas are `(x2 - x1) * (y2 - y1)` and the IoU is
`inter / (area_i + area_j - inter)`, evaluated in the input dtype in that order so that a pair
exactly at the threshold is decided the same way.

NOTE: ties in score. We break them by the lower index first (a stable sort). torchvision's CPU
kernel calls torch's default (unstable) sort: with torch 2.13 it is stable up to 16 boxes
(insertion sort) and not beyond, so for more than 16 boxes with *exactly* equal scores that
also overlap above the threshold, torchvision's choice is an artefact of its sort and ours is
the stable one. With distinct scores the kept set and order are identical.

Three entry points:
- `nms_padded`: jittable, fixed output size: indices padded with -1 and a valid mask.
- `nms`: the same on concrete arrays, trimmed to the kept boxes (not jittable: dynamic size).
- `boxes_np.nms_numpy`: host NumPy version for evaluation code that never touches a device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jwsol.ops.boxes_np import check_nms_inputs


def area(boxes: jax.Array, plus_one: bool = False) -> jax.Array:
    """Areas `(x2 - x1) * (y2 - y1)` of `boxes: [..., 4]` -> `[...]` (`+ 1` on each side).

    Like torchvision's `box_area`, malformed boxes (x2 < x1) are not clamped.
    """
    if plus_one:
        return (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _intersection(a: jax.Array, b: jax.Array, plus_one: bool = False) -> jax.Array:
    """Intersection areas of broadcastable `a: [..., 4]` and `b: [..., 4]` -> `[...]`."""
    width = jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0])
    height = jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1])
    if plus_one:
        width, height = width + 1, height + 1
    return jnp.maximum(width, 0) * jnp.maximum(height, 0)


def _safe_ratio(inter: jax.Array, union: jax.Array) -> jax.Array:
    # NOTE: degenerate pairs (union <= 0, e.g. two zero-area padding boxes) give IoU 0, where
    # torchvision gives NaN. Both compare false against any threshold >= 0, so NMS decisions
    # agree, and 0 keeps padded batches and their gradients finite.
    positive = union > 0
    return jnp.where(positive, inter / jnp.where(positive, union, 1), 0)


def iou(a: jax.Array, b: jax.Array, plus_one: bool = False) -> jax.Array:
    """IoU of broadcastable `a: [..., 4]` and `b: [..., 4]` -> `[...]` (0 where the union is 0)."""
    inter = _intersection(a, b, plus_one)
    return _safe_ratio(inter, area(a, plus_one) + area(b, plus_one) - inter)


def pairwise_iou(a: jax.Array, b: jax.Array, plus_one: bool = False) -> jax.Array:
    """IoU of every box in `a: [N, 4]` with every box in `b: [M, 4]` -> `[N, M]`."""
    return iou(a[:, None, :], b[None, :, :], plus_one)


def clip_boxes(boxes: jax.Array, height: float, width: float) -> jax.Array:
    """Clamp `boxes: [..., 4]` to the image: x to [0, width], y to [0, height]."""
    x = jnp.clip(boxes[..., 0::2], 0, width)
    y = jnp.clip(boxes[..., 1::2], 0, height)
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def nms_padded(
    boxes: jax.Array,
    scores: jax.Array,
    iou_threshold: float,
    max_output: int | None = None,
    valid: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Greedy NMS with a static output size (jittable, vmappable over a leading batch axis).

    Args:
      boxes: [N, 4] (x1, y1, x2, y2).
      scores: [N].
      iou_threshold: a later box is suppressed when its IoU with a kept box is > this.
      max_output: K, the static number of output slots (default N); the search stops once K
        boxes are kept.
      valid: optional [N] bool; False marks padding, which is never kept and never
        suppresses anything.

    Returns:
      indices: [K] int32 into `boxes`, kept boxes in descending score order, then -1.
      kept: [K] bool, True where `indices` holds a kept box.
    """
    num_boxes = boxes.shape[0]
    max_output = num_boxes if max_output is None else int(max_output)
    if max_output < 0:
        raise ValueError(f"max_output must be >= 0, got {max_output}")
    if num_boxes == 0 or max_output == 0:
        return jnp.full((max_output,), -1, jnp.int32), jnp.zeros((max_output,), bool)

    order = jnp.argsort(scores, descending=True, stable=True).astype(jnp.int32)  # [N]
    sorted_boxes = boxes[order]  # [N, 4]
    sorted_areas = area(sorted_boxes)  # [N]
    # Padding starts out "suppressed": it is skipped and never suppresses.
    suppressed = jnp.zeros((num_boxes,), bool) if valid is None else ~valid[order]
    positions = jnp.arange(num_boxes)

    def cond(carry):
        i, count, _, _ = carry
        return (i < num_boxes) & (count < max_output)

    def body(carry):
        i, count, suppressed, keep = carry
        is_kept = ~suppressed[i]
        box = sorted_boxes[i]
        inter = _intersection(box[None, :], sorted_boxes)  # [N]
        # Same operation order as torchvision: inter / (area_i + area_j - inter).
        iou = _safe_ratio(inter, sorted_areas[i] + sorted_areas - inter)
        suppressed = suppressed | (is_kept & (positions > i) & (iou > iou_threshold))
        keep = jnp.where(is_kept, keep.at[count].set(order[i]), keep)
        return i + 1, count + is_kept.astype(jnp.int32), suppressed, keep

    keep = jnp.full((max_output,), -1, jnp.int32)
    init = (jnp.int32(0), jnp.int32(0), suppressed, keep)
    _, _, _, keep = jax.lax.while_loop(cond, body, init)
    return keep, keep >= 0


def nms(
    boxes: jax.Array, scores: jax.Array, iou_threshold: float, max_output: int | None = None
) -> jax.Array:
    """Kept indices `[K]` (int32, descending score), as `torchvision.ops.nms(boxes, scores, t)`.

    Not jittable (the output size depends on the data); use `nms_padded` inside jit.
    `boxes: [N, 4]`, `scores: [N]`; `max_output` truncates to the first K kept boxes.
    """
    check_nms_inputs(np.shape(boxes), np.shape(scores))
    indices, kept = _nms_padded_jit(
        jnp.asarray(boxes), jnp.asarray(scores), iou_threshold, max_output
    )
    return indices[: int(jnp.sum(kept))]


_nms_padded_jit = jax.jit(nms_padded, static_argnames=("max_output",))
