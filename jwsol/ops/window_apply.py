"""The sequential reference of a sliding-window net: the net run on every window on its own.

Windows come from `jwsol.ops.windows` geometry, numbered row-major over (image n, row i,
column j), the order of a conv output [N, H_out, W_out, C] flattened; the result has the layout
of that conv output, so it can be compared with one convolutional pass cell for cell.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jwsol.ops.windows import (
    Layer,
    geometry,
    output_size,
    require_sliding_equivalence,
    window_count,
)


def extract_windows(
    images: jax.Array, layers: Sequence[Layer], window_index: jax.Array
) -> jax.Array:
    """Windows `window_index` (row-major over n, i, j) of `images`; jittable.

    images: [N, H, W, C]; window_index: [B] int -> windows [B, size, size, C]. Pixels outside
    the image (a padded first layer) are zero, as in the conv pass.
    """
    height, width = images.shape[1:3]
    geom_h, geom_w = geometry(layers, height), geometry(layers, width)
    size, stride, pad = geom_h.size, geom_h.stride, -geom_h.offset
    if pad:  # windows then start at 0 in the padded image
        images = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    per_image = geom_h.count * geom_w.count
    n = window_index // per_image
    i = (window_index // geom_w.count) % geom_h.count
    j = window_index % geom_w.count
    steps = jnp.arange(size)
    rows = (i * stride)[:, None] + steps  # [B, size]
    cols = (j * stride)[:, None] + steps  # [B, size]
    # One gather for the batch: [B, 1, 1] x [B, size, 1] x [B, 1, size] -> [B, size, size, C]
    return images[n[:, None, None], rows[:, :, None], cols[:, None, :]]


def _window_batch(
    window_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    images: jax.Array,
    start: jax.Array,
    layers: tuple[Layer, ...],
    batch: int,
) -> jax.Array:
    total = window_count(layers, images.shape)
    # NOTE: the last batch repeats the last window instead of changing shape, so the function
    # compiles once; the caller drops the repeats.
    index = jnp.minimum(start + jnp.arange(batch), total - 1)
    return window_fn(params, extract_windows(images, layers, index))


@functools.cache
def _jitted_window_batch(compiler_options: tuple[tuple[str, Any], ...]) -> Callable[..., jax.Array]:
    return jax.jit(
        _window_batch,
        static_argnames=("window_fn", "layers", "batch"),
        compiler_options=dict(compiler_options) or None,
    )


def sliding_window_batches(
    window_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    images: jax.Array,
    layers: Sequence[Layer],
    *,
    windows_per_batch: int = 1024,
    compiler_options: dict[str, Any] | None = None,
) -> Iterator[tuple[int, int, jax.Array]]:
    """Run `window_fn(params, windows [B, size, size, C]) -> [B, C_out]` over all windows.

    Yields (start, stop, outputs [stop - start, C_out]) for windows start..stop-1 in row-major
    order, `windows_per_batch` at a time, so memory is bounded by one batch of windows and
    their activations whatever the image size. `window_fn` is a static jit argument: pass the
    same function object (e.g. `model.apply`) to reuse the compiled batch. `compiler_options`
    go to XLA (e.g. `jwsol.training.cpu.cpu_compiler_options()`).
    """
    require_sliding_equivalence(layers)
    if windows_per_batch < 1:
        raise ValueError(f"windows_per_batch must be >= 1, got {windows_per_batch}")
    layers = tuple(layers)
    total = window_count(layers, images.shape)
    batch = min(windows_per_batch, total)
    if layers[0].padding:  # pad once here rather than in every batch
        pad = layers[0].padding
        images = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        layers = (dataclasses.replace(layers[0], padding=0), *layers[1:])
    run = _jitted_window_batch(tuple(sorted((compiler_options or {}).items())))
    for start in range(0, total, batch):
        stop = min(start + batch, total)
        out = run(window_fn, params, images, jnp.int32(start), layers, batch)
        yield start, stop, out[: stop - start]


def sliding_window_apply(
    window_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    images: jax.Array,
    layers: Sequence[Layer],
    **batch_options: Any,
) -> jax.Array:
    """The sequential reference: `window_fn` on every window, as [N, H_out, W_out, C_out].

    images: [N, H, W, C]. Same layout and window order as the conv pass of `layers`.
    batch_options: `windows_per_batch`, `compiler_options` of `sliding_window_batches`.
    """
    n_images, height, width = images.shape[:3]
    h_out, w_out = output_size(layers, height), output_size(layers, width)
    batches = sliding_window_batches(window_fn, params, images, layers, **batch_options)
    flat = jnp.concatenate([out for _, _, out in batches], axis=0)
    return flat.reshape(n_images, h_out, w_out, flat.shape[-1])
