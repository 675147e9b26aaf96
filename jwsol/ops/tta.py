"""Test-time augmentation views of a detection batch: a rescaled and maybe mirrored canvas with
its proposals moved alike, so region scores of every view index the same proposals."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def view(
    images: jax.Array, proposals: jax.Array, size: int, flip: bool
) -> tuple[jax.Array, jax.Array]:
    """The batch seen at canvas side `size` (bilinear), mirrored left-right if `flip`.

    images [N, S, S, 3] and proposals [N, R, 4] (x1, y1, x2, y2 in canvas pixels) ->
    images [N, size, size, 3] and proposals [N, R, 4] in the new canvas. The whole canvas is
    resized and mirrored, padding included, so a box keeps its content exactly.
    """
    n, s = images.shape[0], images.shape[1]
    proposals = proposals.astype(jnp.float32)
    if size != s:
        images = jax.image.resize(images, (n, size, size, images.shape[-1]), "bilinear")
        proposals = proposals * (size / s)
    if flip:
        images = images[:, :, ::-1]
        proposals = _mirror(proposals, size)
    return images, proposals


def _mirror(boxes: jax.Array, width: int) -> jax.Array:
    """Boxes [..., 4] of a canvas `width` wide, mirrored left-right (its own inverse)."""
    x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([width - x2, y1, width - x1, y2], axis=-1)


def canvas_sizes(canvas: int, base: int, scales) -> tuple[int, ...]:
    """Canvas sides for eval.scales: each scale is in the unit of `base` (the pipeline's eval
    scale: the canvas side in 'fixed' resize mode, else the resized shorter or longer side), so a
    canvas of `canvas` at `base` becomes round(canvas * scale / base). No scales: (canvas,)."""
    if not scales:
        return (canvas,)
    return tuple(max(16, round(canvas * float(s) / base)) for s in scales)


def unview_boxes(boxes: jax.Array, canvas: int, size: int, flip: bool) -> jax.Array:
    """Boxes [..., 4] of a `view(..., size, flip)` back in the `canvas`-sided batch's pixels
    (the inverse of the view's proposal mapping)."""
    boxes = boxes.astype(jnp.float32)
    if flip:
        boxes = _mirror(boxes, size)
    if size != canvas:
        boxes = boxes * (canvas / size)
    return boxes
