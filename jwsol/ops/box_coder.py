"""Box regression deltas: Fast R-CNN's parametrisation, in our box convention (no `+1`).

A proposal (x1, y1, x2, y2) with width w = x2 - x1, height h = y2 - y1 and centre (cx, cy)
is moved to a target box (centre tx, ty, size tw, th) by the deltas
    (dx, dy, dw, dh) = ((tx - cx) / w, (ty - cy) / h, log(tw / w), log(th / h)) / STDS,
the STDS (0.1, 0.1, 0.2, 0.2) of Fast R-CNN's normalised targets, so a regression head sees
unit-scale numbers. `decode(boxes, encode(boxes, targets)) == targets`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

STDS = (0.1, 0.1, 0.2, 0.2)
# Widths below this (pixels) count as this, so a degenerate box gives finite deltas.
MIN_SIZE = 1e-3
# The largest log-scale step decode applies (torchvision's clamp: a box grows at most 62.5x).
MAX_LOG_SCALE = math.log(1000.0 / 16)


def _centre_size(boxes: jax.Array) -> tuple[jax.Array, ...]:
    w = jnp.maximum(boxes[..., 2] - boxes[..., 0], MIN_SIZE)
    h = jnp.maximum(boxes[..., 3] - boxes[..., 1], MIN_SIZE)
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(boxes: jax.Array, targets: jax.Array) -> jax.Array:
    """The deltas moving `boxes [..., 4]` onto broadcastable `targets [..., 4]` -> `[..., 4]`."""
    cx, cy, w, h = _centre_size(boxes.astype(jnp.float32))
    tx, ty, tw, th = _centre_size(targets.astype(jnp.float32))
    deltas = ((tx - cx) / w, (ty - cy) / h, jnp.log(tw / w), jnp.log(th / h))
    return jnp.stack([d / s for d, s in zip(deltas, STDS)], axis=-1)


def decode(boxes: jax.Array, deltas: jax.Array) -> jax.Array:
    """`boxes [..., 4]` moved by broadcastable `deltas [..., 4]` -> boxes `[..., 4]`."""
    cx, cy, w, h = _centre_size(boxes.astype(jnp.float32))
    dx, dy, dw, dh = (deltas[..., i].astype(jnp.float32) * s for i, s in enumerate(STDS))
    cx, cy = cx + dx * w, cy + dy * h
    w = w * jnp.exp(jnp.minimum(dw, MAX_LOG_SCALE))
    h = h * jnp.exp(jnp.minimum(dh, MAX_LOG_SCALE))
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
