"""The fully convolutional sliding-window net: each output cell is one window of the input."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from jwsol.ops.windows import Layer, WindowGeometry, geometry

NUM_OUTPUTS = 15  # 1 detection logit, 10 class logits, 4 box values


def parse_layers(spec: str) -> tuple[tuple[str, int, int, int], ...]:
    """'c4s2x32,c3x32,p2' -> (('conv', 4, 2, 32), ('conv', 3, 1, 32), ('pool', 2, 2, 0)).

    Items are (kind, kernel, stride, features). `cKxF`: VALID conv KxK, F features, stride 1;
    `cKsSxF`: the same with stride S (e.g. a patchifying first layer); `pK`: max pool K with
    stride K. The head (a 1x1 conv to NUM_OUTPUTS) is added by the model, not part of the spec.
    """
    layers = []
    for item in spec.replace(" ", "").split(","):
        try:
            if item[0] == "c":
                kernel, features = item[1:].split("x")
                kernel, _, stride = kernel.partition("s")
                layers.append(("conv", int(kernel), int(stride or 1), int(features)))
            elif item[0] == "p":
                layers.append(("pool", int(item[1:]), int(item[1:]), 0))
            else:
                raise ValueError
            if min(layers[-1][1:3]) < 1:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(
                f"bad layer {item!r} in {spec!r}: use cKxF (conv KxK, F features), cKsSxF (the "
                f"same with stride S) or pK (max pool K)"
            ) from None
    return tuple(layers)


def layer_geometry(layers: Sequence[tuple[str, int, int, int]]) -> list[Layer]:
    return [Layer(kind, k, s, 0) for kind, k, s, _ in layers] + [Layer("conv", 1, 1, 0)]


class SlidingWindowNet(nn.Module):
    """images [N, S, S, 1] -> [N, H_out, W_out, 15]: per window (det logit, 10 class logits, box)."""

    layers: tuple[tuple[str, int, int, int], ...]
    num_classes: int = 10
    # BatchNorm after each conv: per-channel affine at eval time, so every output cell is still
    # exactly the net applied to its window; it speeds up training a lot.
    batch_norm: bool = True

    def window_geometry(self, input_size: int) -> WindowGeometry:
        """Size, stride, offset and count of the windows on an `input_size` square input."""
        return geometry(layer_geometry(self.layers), input_size)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for kind, k, stride, features in self.layers:
            if kind == "conv":
                x = nn.Conv(
                    features,
                    (k, k),
                    (stride, stride),
                    padding="VALID",
                    use_bias=not self.batch_norm,
                )(x)
                if self.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
                x = nn.relu(x)
            else:
                x = nn.max_pool(x, (k, k), strides=(stride, stride))
        return nn.Conv(1 + self.num_classes + 4, (1, 1), name="head")(x)
