"""Sliding-window geometry, in plain Python (no JAX: the data pipelines use it too).

A stack of conv and pool layers, each with (kernel k, stride s, padding p per side), maps
output cell i of the last layer to the input pixels [offset + i * stride, offset + i * stride
+ size). Going forward through the layers, with size r, jump j and offset o starting at
(1, 1, 0):

    r <- r + (k - 1) * j,    o <- o - p * j,    j <- j * s

so stride = prod(s_l), size = 1 + sum_l (k_l - 1) * prod_{m<l} s_m and offset =
-sum_l p_l * prod_{m<l} s_m. The number of output cells per axis follows the usual
floor((n + 2p - k) / s) + 1 layer by layer; without padding it collapses to
floor((n - size) / stride) + 1.

One convolutional pass over the image equals the same net applied to each window on its own
(the sequential reference, `jwsol.ops.window_apply`) when only the first layer pads (a conv: zero padding equals
cropping the zero-padded image); padding inside the stack would pad feature maps at the image
border, which a net run on a lone window cannot see. `require_sliding_equivalence` checks it.

Windows are numbered row-major over (image n, row i, column j), the order of a conv output
[N, H_out, W_out, C] flattened.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Layer:
    """One conv or pool layer along one spatial axis (square kernels assumed).

    `features` is the number of output channels of a conv; geometry never reads it, the
    models (`jwsol.models.sliding_window`) and FLOP counts do. Pools are max pools.
    """

    kind: str  # 'conv' or 'pool'; geometry only depends on kernel, stride and padding.
    kernel: int
    stride: int = 1
    padding: int = 0
    features: int | None = None


@dataclasses.dataclass(frozen=True)
class WindowGeometry:
    """Windows of a layer stack on an input of `input_size` pixels per axis."""

    size: int  # window side in input pixels
    stride: int  # distance between neighbouring windows in input pixels
    offset: int  # input coordinate of the first window's top/left edge (negative with padding)
    count: int  # windows (output cells) per axis
    input_size: int

    def span(self, i: int) -> tuple[int, int]:
        """Input pixel span [start, end) of window i along one axis."""
        if not 0 <= i < self.count:
            raise IndexError(f"window {i} out of range [0, {self.count})")
        start = self.offset + i * self.stride
        return start, start + self.size

    def span2d(self, i: int, j: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)), half-open, of window (row i, column j) on a square input.

        For a non-square input use one geometry per axis: `(geom_h.span(i), geom_w.span(j))`.
        """
        return self.span(i), self.span(j)


def receptive_field(layers: Sequence[Layer]) -> tuple[int, int, int]:
    """(size, stride, offset) of the windows of `layers`, independent of the input size."""
    size, jump, offset = 1, 1, 0
    for layer in layers:
        if layer.kernel < 1 or layer.stride < 1 or layer.padding < 0:
            raise ValueError(f"bad layer {layer}")
        size += (layer.kernel - 1) * jump
        offset -= layer.padding * jump
        jump *= layer.stride
    return size, jump, offset


def _first_misfit(layers: Sequence[Layer], input_size: int) -> tuple[int, int] | None:
    """(layer index, padded px it sees) of the first layer whose kernel does not fit, or None."""
    n = input_size
    for index, layer in enumerate(layers):
        padded = n + 2 * layer.padding
        if padded < layer.kernel:
            return index, padded
        n = (padded - layer.kernel) // layer.stride + 1
    return None


def _sizes(layers: Sequence[Layer], input_size: int) -> list[int]:
    """Map side entering each layer and after the last: [len(layers) + 1]. Layers must fit."""
    sizes = [input_size]
    for layer in layers:
        sizes.append((sizes[-1] + 2 * layer.padding - layer.kernel) // layer.stride + 1)
    return sizes


def output_size(layers: Sequence[Layer], input_size: int) -> int:
    """Output cells per axis of `layers` on `input_size` pixels (floor mode, as Flax/torch).

    Raises ValueError, naming the layer and the smallest valid size, if a window does not fit.
    """
    receptive_field(layers)  # validates the layers
    misfit = _first_misfit(layers, input_size)
    if misfit is not None:
        index, padded = misfit
        layer = layers[index]
        raise ValueError(
            f"input of {input_size} px is too small: layer {index} ({layer.kind} "
            f"{layer.kernel}x{layer.kernel}) sees {padded} px; the stack needs at least "
            f"{min_input_size(layers)} px per axis (one whole window)."
        )
    return _sizes(layers, input_size)[-1]


def min_input_size(layers: Sequence[Layer]) -> int:
    """Smallest input size per axis for which every layer has at least one output cell."""
    receptive_field(layers)
    n = 1
    while _first_misfit(layers, n) is not None:
        n += 1
    return n


def geometry(layers: Sequence[Layer], input_size: int) -> WindowGeometry:
    """Window geometry of `layers` on an `input_size` x `input_size` input."""
    size, stride, offset = receptive_field(layers)
    return WindowGeometry(size, stride, offset, output_size(layers, input_size), input_size)


def require_sliding_equivalence(layers: Sequence[Layer]) -> None:
    """Raise ValueError unless one conv pass over an image equals the net run on each window.

    That holds when only the first layer pads and it is a conv: its zero padding is the same as
    cutting windows out of the zero-padded image. Padding deeper in the stack pads feature maps
    at the image border (or a max pool pads with -inf), which a window on its own never sees.
    """
    for index, layer in enumerate(layers):
        if layer.kind not in ("conv", "pool"):
            raise ValueError(f"layer {index}: kind {layer.kind!r}, expected 'conv' or 'pool'")
        if layer.padding and (index > 0 or layer.kind != "conv"):
            raise ValueError(
                f"layer {index} ({layer.kind} {layer.kernel}x{layer.kernel}) pads by "
                f"{layer.padding}: only a first conv layer may pad for the sliding-window "
                "equivalence to hold; pad the input image instead and use padding=0."
            )


def dense_layer_index(layers: Sequence[Layer]) -> int:
    """Index of the conv that becomes the first Dense layer when the net sees one window.

    On a window the map shrinks to 1x1; the first conv whose kernel covers the whole map
    entering it (k == map side) is a Dense on the flattened (NHWC) window features, and every
    later conv is 1x1 on a 1x1 map, i.e. a Dense too. Returns len(layers) if no conv qualifies.
    """
    require_sliding_equivalence(layers)
    valid = [dataclasses.replace(layer, padding=0) for layer in layers]
    sizes = _sizes(valid, receptive_field(valid)[0])
    assert sizes[-1] == 1, sizes  # a window maps to exactly one output cell
    # NOTE: after it the map is 1x1, so (without padding) every later layer is 1x1 as well.
    for index, layer in enumerate(valid):
        if layer.kind == "conv" and sizes[index] == layer.kernel:
            return index
    return len(layers)


def conv_kernel_to_dense(kernel: Any) -> Any:
    """Conv kernel [k, k, C_in, C_out] (HWIO) -> Dense kernel [k * k * C_in, C_out] (any array).

    Row order (h, w, c) is the order of an NHWC [k, k, C_in] window flattened.
    """
    k_h, k_w, c_in, c_out = kernel.shape
    return kernel.reshape(k_h * k_w * c_in, c_out)


def dense_kernel_to_conv(kernel: Any, kernel_size: int) -> Any:
    """Dense kernel [k * k * C_in, C_out] -> conv kernel [k, k, C_in, C_out] (HWIO)."""
    rows, c_out = kernel.shape
    if rows % (kernel_size * kernel_size):
        raise ValueError(f"dense kernel with {rows} rows is not k*k*C_in for k={kernel_size}")
    return kernel.reshape(kernel_size, kernel_size, rows // (kernel_size**2), c_out)


def window_count(layers: Sequence[Layer], images_shape: Sequence[int]) -> int:
    """Number of windows (N * H_out * W_out) of `layers` on images of shape [N, H, W, C]."""
    n_images, height, width = images_shape[:3]
    return n_images * output_size(layers, height) * output_size(layers, width)


def stack_flops(
    layers: Sequence[Layer], in_channels: int, height: int, width: int, batch: int = 1
) -> int:
    """FLOPs of the convs of `layers` on a [batch, height, width, in_channels] input.

    Counts 2 FLOPs (multiply, add) per multiply-accumulate of every conv; biases, ReLUs and
    max pools are left out (they are < 1% here and not matmul work). A Dense on flattened
    window features does exactly the multiply-accumulates of the conv it replaces.
    """
    flops, channels, h, w = 0, in_channels, height, width
    for layer in layers:
        h, w = output_size([layer], h), output_size([layer], w)
        if layer.kind == "conv":
            if layer.features is None:
                raise ValueError(f"conv layer {layer} needs `features` to count FLOPs")
            flops += 2 * batch * h * w * layer.kernel**2 * channels * layer.features
            channels = layer.features
    return flops


def sequential_flops(
    layers: Sequence[Layer], in_channels: int, height: int, width: int, batch: int = 1
) -> int:
    """FLOPs of the sequential reference: the net on each window separately."""
    size = receptive_field(layers)[0]
    valid = [dataclasses.replace(layer, padding=0) for layer in layers]
    windows = window_count(layers, (batch, height, width))
    return windows * stack_flops(valid, in_channels, size, size)
