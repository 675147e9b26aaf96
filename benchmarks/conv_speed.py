"""Faster lowerings of `ConvStack`'s convolutional pass on CPU, for the sliding-window benchmark.

`conv_pass(layers)` is the fastest combination measured (docs/sliding_window.md): row tiles
(`tiled_apply`), convs as im2col matmuls (`Im2colConv`), and Eigen rather than YNNPACK for the
dots (`jwsol.training.cpu.cpu_compiler_options`). Each gives the numbers of
`ConvStack(layers).apply` with the same variables; benchmarks/test_conv_speed.py checks that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jwsol.models.sliding_window import ConvStack
from jwsol.ops.windows import (
    Layer,
    conv_kernel_to_dense,
    output_size,
    receptive_field,
    require_sliding_equivalence,
)
from jwsol.training.cpu import cpu_compiler_options


def conv_im2col(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """VALID conv as one matmul. x [N, H, W, C_in], kernel [k, k, C_in, C_out] -> [N, h, w, C_out].

    The k*k shifted views are concatenated along channels in (kh, kw, c) order, the row order of
    `conv_kernel_to_dense`, so the whole layer is one [N*h*w, k*k*C_in] x [k*k*C_in, C_out] matmul.
    """
    k = kernel.shape[0]
    height, width = x.shape[1:3]
    h_out, w_out = (height - k) // stride + 1, (width - k) // stride + 1
    if k == 1:
        patches = x[:, ::stride, ::stride][:, :h_out, :w_out]
    else:
        views = [
            x[
                :,
                dy : dy + (h_out - 1) * stride + 1 : stride,
                dx : dx + (w_out - 1) * stride + 1 : stride,
            ]
            for dy in range(k)
            for dx in range(k)
        ]
        patches = jnp.concatenate(views, axis=-1)  # [N, h, w, k*k*C_in]
    return jnp.dot(patches, conv_kernel_to_dense(kernel))


class Im2colConv(nn.Module):
    """`nn.Conv` (square kernel, explicit padding) lowered as `conv_im2col`; same variables.

    [N, H, W, C_in] -> [N, h, w, features].
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x = jnp.pad(x, ((0, 0), *self.padding, (0, 0)))
        return conv_im2col(x, kernel, self.strides[0]) + bias


CONVS = {"xla": nn.Conv, "im2col": Im2colConv}


def tiled_apply(
    layers: Sequence[Layer], impl: str = "xla", rows_per_tile: int = 4
) -> Callable[[Any, jax.Array], jax.Array]:
    """`ConvStack(layers, CONVS[impl]).apply` computed `rows_per_tile` output rows at a time.

    Returns apply(variables, images [N, H, W, C_in]) -> [N, H_out, W_out, C_last], the same
    numbers as the whole-image pass. A tile of output rows needs the input rows of its windows
    ((rows_per_tile - 1) * stride + window), so each tile's activations stay in the CPU caches
    instead of streaming [N, H, W, 400] maps through memory between layers; the price is
    recomputing the overlap of neighbouring tiles in the layers before the last stride. Needs
    `require_sliding_equivalence(layers)`: only a first conv may pad.
    """
    require_sliding_equivalence(layers)
    if rows_per_tile < 1:
        raise ValueError(f"rows_per_tile must be >= 1, got {rows_per_tile}")
    size, stride, offset = receptive_field(layers)
    valid_layers = tuple(dataclasses.replace(layer, padding=0) for layer in layers)
    valid = ConvStack(valid_layers, conv=CONVS[impl])
    rows_in = (rows_per_tile - 1) * stride + size  # input rows of one tile

    def apply(variables: Any, images: jax.Array) -> jax.Array:
        n, height, width, channels = images.shape
        h_out, w_out = output_size(layers, height), output_size(layers, width)
        tiles = -(-h_out // rows_per_tile)
        rows_read = (tiles - 1) * rows_per_tile * stride + rows_in
        pad = -offset  # the first layer's padding, applied once to the whole image
        bottom = max(pad, rows_read - height - pad)  # rows past the last window are cropped
        padded = jnp.pad(images, ((0, 0), (pad, bottom), (pad, pad), (0, 0)))

        def tile(k: jax.Array) -> jax.Array:  # [rows_per_tile, W_out, C_last]
            image, row = k // tiles, (k % tiles) * rows_per_tile * stride
            rows = lax.dynamic_slice(
                padded, (image, row, 0, 0), (1, rows_in, padded.shape[2], channels)
            )
            return valid.apply(variables, rows)[0]

        out = lax.map(tile, jnp.arange(n * tiles))  # [N * tiles, rows_per_tile, W_out, C]
        out = out.reshape(n, tiles * rows_per_tile, w_out, out.shape[-1])
        return out[:, :h_out]

    return apply


def conv_pass(
    layers: Sequence[Layer],
    *,
    impl: str = "im2col",
    rows_per_tile: int | None = 4,
    eigen_dots: bool = True,
) -> Callable[[Any, jax.Array], jax.Array]:
    """The fastest convolutional pass measured here, jitted: (variables, images) -> outputs.

    images: [N, H, W, C_in] -> [N, H_out, W_out, C_last], the numbers of `ConvStack(layers)`.
    impl: a key of CONVS. rows_per_tile: `tiled_apply` tile height, or None for the whole image
    at once (needed when a layer past the first pads). eigen_dots: compile with
    `cpu_compiler_options()` on CPU.
    """
    layers = tuple(layers)
    if rows_per_tile is None:
        fn = ConvStack(layers, conv=CONVS[impl]).apply
    else:
        fn = tiled_apply(layers, impl, rows_per_tile)
    return jax.jit(fn, compiler_options=cpu_compiler_options() if eigen_dots else None)
