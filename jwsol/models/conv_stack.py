"""A small conv/pool net built from `Layer` specs, in its convolutional and its window form.

`ConvStack` is the convolutional pass: one application to a whole image gives the net's output
for every window at once, [N, H, W, C] -> [N, H_out, W_out, C_last]. `WindowNet` is the same net
for one window at a time, the way it is trained on crops: the first conv whose kernel covers
the whole remaining map, and every 1x1 conv after it, is a Dense on the flattened (NHWC)
features. `conv_params_to_dense` / `dense_params_to_conv` move weights between the two, so
`jwsol.ops.windows.sliding_window_apply(WindowNet(layers).apply, ...)` reproduces `ConvStack`.

Parameter names follow the layer's index in the list: `conv{i}` in `ConvStack`, `conv{i}` or
`dense{i}` in `WindowNet`; each has `kernel` ([k, k, C_in, C_out] HWIO, or [k*k*C_in, C_out])
and `bias`. ReLU follows every conv but the last one; pools are max pools.

`conv_pass(layers)` is the fastest way measured here to run the conv pass on CPU: row tiles
(`tiled_apply`), convs as im2col matmuls, and Eigen rather than YNNPACK for the dots.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jwsol.ops.windows import (
    Layer,
    conv_kernel_to_dense,
    dense_kernel_to_conv,
    dense_layer_index,
    output_size,
    receptive_field,
    require_sliding_equivalence,
)
from jwsol.training.cpu import cpu_compiler_options

# The exercise's net on 14x14x3 windows: conv 5x5 x16 -> 10x10, max pool 2 -> 5x5, the
# "fully connected" 400 as a 5x5 conv -> 1x1, fc 400 and the 4-way classifier as 1x1 convs.
REFERENCE_LAYERS: tuple[Layer, ...] = (
    Layer("conv", 5, features=16),
    Layer("pool", 2, 2),
    Layer("conv", 5, features=400),
    Layer("conv", 1, features=400),
    Layer("conv", 1, features=4),
)
REFERENCE_IN_CHANNELS = 3

CONV_IMPLS = ("xla", "im2col")


def reference_layers(extra: str | None = None) -> tuple[Layer, ...]:
    """The reference net, or it with one more layer (the exercise's follow-up questions).

    extra: None; 'conv' adds a conv 5x5 x16 after the first conv (windows 18x18, stride 2);
    'pool' adds a max pool 2 after the pool (windows 24x24, stride 4).
    """
    layers = list(REFERENCE_LAYERS)
    if extra == "conv":
        layers.insert(1, Layer("conv", 5, features=16))
    elif extra == "pool":
        layers.insert(2, Layer("pool", 2, 2))
    elif extra is not None:
        raise ValueError(f"extra must be None, 'conv' or 'pool', got {extra!r}")
    return tuple(layers)


def _last_conv(layers: Sequence[Layer]) -> int:
    convs = [index for index, layer in enumerate(layers) if layer.kind == "conv"]
    if not convs:
        raise ValueError("the stack needs at least one conv layer")
    return convs[-1]


def _check(layers: Sequence[Layer]) -> None:
    for index, layer in enumerate(layers):
        if layer.kind not in ("conv", "pool"):
            raise ValueError(f"layer {index}: kind {layer.kind!r}, expected 'conv' or 'pool'")
        if layer.kind == "conv" and not layer.features:
            raise ValueError(f"layer {index}: a conv needs features >= 1, got {layer.features}")


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


class Conv2D(nn.Module):
    """Conv with explicit symmetric zero padding. [N, H, W, C_in] -> [N, h, w, features].

    impl 'xla' is `lax.conv_general_dilated`; 'im2col' is `conv_im2col` (same numbers).
    """

    features: int
    kernel: int
    stride: int = 1
    padding: int = 0
    impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (self.kernel, self.kernel, x.shape[-1], self.features),
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        p = self.padding
        if self.impl == "xla":
            y = lax.conv_general_dilated(
                x,
                kernel,
                (self.stride, self.stride),
                ((p, p), (p, p)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        elif self.impl == "im2col":
            if p:
                x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
            y = conv_im2col(x, kernel, self.stride)
        else:
            raise ValueError(f"impl must be one of {CONV_IMPLS}, got {self.impl!r}")
        return y + bias


def _max_pool(x: jax.Array, layer: Layer) -> jax.Array:
    p = layer.padding
    return nn.max_pool(
        x, (layer.kernel,) * 2, strides=(layer.stride,) * 2, padding=((p, p), (p, p))
    )


class ConvStack(nn.Module):
    """The convolutional pass. x: [N, H, W, C_in] -> [N, H_out, W_out, layers[-1 conv].features].

    Output cell (n, i, j) is the net on window (i, j) of image n; see `jwsol.ops.windows.geometry`.
    """

    layers: tuple[Layer, ...]
    impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check(self.layers)
        last = _last_conv(self.layers)
        for index, layer in enumerate(self.layers):
            if layer.kind == "pool":
                x = _max_pool(x, layer)
                continue
            x = Conv2D(
                layer.features,
                layer.kernel,
                layer.stride,
                layer.padding,
                impl=self.impl,
                name=f"conv{index}",
            )(x)
            if index != last:
                x = nn.relu(x)
        return x


class WindowNet(nn.Module):
    """The net on single windows, "fully connected" form. windows: [B, s, s, C_in] -> [B, C_last].

    s is the window size (`receptive_field(layers)[0]`, which includes a first layer's padding:
    the window is cut from the zero-padded image). Layers before `dense_layer_index(layers)` are
    VALID convs and pools on the window; from there on, Dense layers on the flattened features.
    """

    layers: tuple[Layer, ...]

    @nn.compact
    def __call__(self, windows: jax.Array) -> jax.Array:
        _check(self.layers)
        last = _last_conv(self.layers)
        first_dense = dense_layer_index(self.layers)
        x = windows
        for index, layer in enumerate(self.layers):
            if index == first_dense:
                x = x.reshape(x.shape[0], -1)  # NHWC flatten: (h, w, c) row order
            if layer.kind == "pool":
                if index < first_dense:
                    x = _max_pool(x, Layer("pool", layer.kernel, layer.stride))
                continue  # a 1x1 pool on a 1x1 map after the Dense is the identity
            if index < first_dense:
                x = Conv2D(layer.features, layer.kernel, layer.stride, name=f"conv{index}")(x)
            else:
                x = nn.Dense(layer.features, name=f"dense{index}")(x)
            if index != last:
                x = nn.relu(x)
        if first_dense == len(self.layers):
            x = x.reshape(x.shape[0], -1)  # the map is 1x1 already
        return x


def conv_params_to_dense(variables: dict[str, Any], layers: Sequence[Layer]) -> dict[str, Any]:
    """`ConvStack` variables -> `WindowNet` variables (same numbers, Dense layout)."""
    first_dense = dense_layer_index(layers)
    params = dict(variables["params"])
    for index in range(first_dense, len(layers)):
        if layers[index].kind == "conv":
            conv = params.pop(f"conv{index}")
            params[f"dense{index}"] = {
                "kernel": conv_kernel_to_dense(conv["kernel"]),
                "bias": conv["bias"],
            }
    return {**variables, "params": params}


def dense_params_to_conv(variables: dict[str, Any], layers: Sequence[Layer]) -> dict[str, Any]:
    """`WindowNet` variables -> `ConvStack` variables (the inverse of `conv_params_to_dense`)."""
    first_dense = dense_layer_index(layers)
    params = dict(variables["params"])
    for index in range(first_dense, len(layers)):
        layer = layers[index]
        if layer.kind == "conv":
            dense = params.pop(f"dense{index}")
            params[f"conv{index}"] = {
                "kernel": dense_kernel_to_conv(dense["kernel"], layer.kernel),
                "bias": dense["bias"],
            }
    return {**variables, "params": params}


def tiled_apply(
    layers: Sequence[Layer], impl: str = "xla", rows_per_tile: int = 4
) -> Callable[[Any, jax.Array], jax.Array]:
    """`ConvStack(layers, impl).apply` computed `rows_per_tile` output rows of one image at a time.

    Returns apply(variables, images [N, H, W, C_in]) -> [N, H_out, W_out, C_last], the same
    numbers as the whole-image pass. A tile of output rows needs the input rows of its windows
    ((rows_per_tile - 1) * stride + window), so each tile's activations stay small enough for
    the CPU caches instead of streaming [N, H, W, 400] maps through memory between layers; the
    price is recomputing the overlap of neighbouring tiles in the layers before the last
    stride (reference net, 4-row tiles: conv0 twice, +1.5% FLOPs, not counted). Needs
    `require_sliding_equivalence(layers)`: only a first conv may pad.
    """
    require_sliding_equivalence(layers)
    if rows_per_tile < 1:
        raise ValueError(f"rows_per_tile must be >= 1, got {rows_per_tile}")
    size, stride, offset = receptive_field(layers)
    valid = ConvStack(tuple(dataclasses.replace(layer, padding=0) for layer in layers), impl=impl)
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
    rows_per_tile: `tiled_apply` tile height, or None for the whole image at once (needed when
    a layer past the first pads). eigen_dots: compile with `cpu_compiler_options()` on CPU.
    The defaults are the fastest in benchmarks/test_sliding_window.py (docs/sliding_window.md).
    """
    layers = tuple(layers)
    if rows_per_tile is None:
        fn = ConvStack(layers, impl=impl).apply
    else:
        fn = tiled_apply(layers, impl, rows_per_tile)
    return jax.jit(fn, compiler_options=cpu_compiler_options() if eigen_dots else None)
