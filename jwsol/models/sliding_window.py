"""Conv/pool nets whose every output cell is the net on one window of the input.

All take their layers as `jwsol.ops.windows.Layer`s (geometry: window size, stride, offset).

`SlidingWindowNet` is the trained net of the sliding-window job: the layers of `parse_layers`
(BatchNorm after each conv) and a 1x1 head to NUM_OUTPUTS values per window.

`ConvStack` and `WindowNet` are the exercise's reference net (`REFERENCE_LAYERS`, or any layer
list) in its two forms. `ConvStack` is the convolutional pass: one application to a whole image
gives the net's output for every window at once, [N, H, W, C] -> [N, H_out, W_out, C_last].
`WindowNet` is the same net for one window at a time, the way it is trained on crops: the first
conv whose kernel covers the whole remaining map, and every 1x1 conv after it, is a Dense on the
flattened (NHWC) features. `conv_params_to_dense` / `dense_params_to_conv` move weights between
the two, so `jwsol.ops.window_apply.sliding_window_apply(WindowNet(layers).apply, ...)`
reproduces `ConvStack`. Their parameter names follow the layer's index in the list: `conv{i}`
in `ConvStack`, `conv{i}` or `dense{i}` in `WindowNet`; each has `kernel` ([k, k, C_in, C_out]
HWIO, or [k*k*C_in, C_out]) and `bias`. ReLU follows every conv but the last one; pools are
max pools.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax

from jwsol.ops.pool import max_pool
from jwsol.ops.windows import (
    Layer,
    WindowGeometry,
    conv_kernel_to_dense,
    dense_kernel_to_conv,
    dense_layer_index,
    geometry,
)

NUM_OUTPUTS = 15  # 1 detection logit, 10 class logits, 4 box values

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


def parse_layers(spec: str) -> tuple[Layer, ...]:
    """'c4s2x32,c3x32,p2' -> (Layer('conv', 4, 2, features=32), Layer('conv', 3, features=32),
    Layer('pool', 2, 2)).

    `cKxF`: VALID conv KxK, F features, stride 1; `cKsSxF`: the same with stride S (e.g. a
    patchifying first layer); `pK`: max pool K with stride K. The head (a 1x1 conv to
    NUM_OUTPUTS) is added by the model, not part of the spec.
    """
    layers = []
    for item in spec.replace(" ", "").split(","):
        try:
            if item[0] == "c":
                kernel, features = item[1:].split("x")
                kernel, _, stride = kernel.partition("s")
                layer = Layer("conv", int(kernel), int(stride or 1), features=int(features))
            elif item[0] == "p":
                layer = Layer("pool", int(item[1:]), int(item[1:]))
            else:
                raise ValueError
            if min(layer.kernel, layer.stride) < 1:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(
                f"bad layer {item!r} in {spec!r}: use cKxF (conv KxK, F features), cKsSxF (the "
                f"same with stride S) or pK (max pool K)"
            ) from None
        layers.append(layer)
    return tuple(layers)


class SlidingWindowNet(nn.Module):
    """images [N, S, S, 1] -> [N, H_out, W_out, 15]: per window (det logit, 10 class logits, box)."""

    layers: tuple[Layer, ...]
    num_classes: int = 10
    # BatchNorm after each conv: per-channel affine at eval time, so every output cell is still
    # exactly the net applied to its window; it speeds up training a lot.
    batch_norm: bool = True

    def window_geometry(self, input_size: int) -> WindowGeometry:
        """Size, stride, offset and count of the windows on an `input_size` square input."""
        return geometry((*self.layers, Layer("conv", 1)), input_size)  # + the 1x1 head

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for layer in self.layers:
            k, stride = (layer.kernel,) * 2, (layer.stride,) * 2
            if layer.kind == "conv":
                x = nn.Conv(
                    layer.features, k, stride, padding="VALID", use_bias=not self.batch_norm
                )(x)
                if self.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
                x = nn.relu(x)
            else:
                x = max_pool(x, k, stride)
        return nn.Conv(1 + self.num_classes + 4, (1, 1), name="head")(x)


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


def _max_pool(x: jax.Array, layer: Layer) -> jax.Array:
    p = layer.padding
    return max_pool(x, layer.kernel, layer.stride, ((p, p), (p, p)))


class ConvStack(nn.Module):
    """The convolutional pass. x: [N, H, W, C_in] -> [N, H_out, W_out, layers[-1 conv].features].

    Output cell (n, i, j) is the net on window (i, j) of image n; see `jwsol.ops.windows.geometry`.
    conv: the conv module class, called as `nn.Conv` (lecun-normal kernels, zero biases);
    another lowering of the same conv (benchmarks/conv_speed.py) keeps the same variables.
    """

    layers: tuple[Layer, ...]
    conv: Callable[..., nn.Module] = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check(self.layers)
        last = _last_conv(self.layers)
        for index, layer in enumerate(self.layers):
            if layer.kind == "pool":
                x = _max_pool(x, layer)
                continue
            p = layer.padding
            x = self.conv(
                layer.features,
                (layer.kernel,) * 2,
                strides=(layer.stride,) * 2,
                padding=((p, p), (p, p)),
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
                k, stride = (layer.kernel,) * 2, (layer.stride,) * 2
                x = nn.Conv(layer.features, k, stride, padding="VALID", name=f"conv{index}")(x)
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
