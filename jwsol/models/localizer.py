"""Weakly supervised localizer: AlexNet conv1-5 (no last pool) + a small fully convolutional head.

The head maps conv5 features to one score map per class; the image-level logits are a global
pool of that map (max, average or log-sum-exp), so training needs only image labels and the
map localizes. Parameter tree:

    params/features/conv1 .. conv5   from torchvision AlexNet (see jwsol.weights.torchvision)
    params/conv6, conv7, score       new layers, Xavier/Glorot-uniform kernels, zero biases
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jwsol.models.alexnet import AlexNetFeatures
from jwsol.ops.windows import Layer, receptive_field

POOLINGS = ("max", "avg", "lse")
# conv1 .. conv5 of AlexNet (torch paddings, max pools 3x3/2), then conv6 3x3 unpadded, conv7 and
# score 1x1: the geometry of one score-map cell. It does not depend on the width multiplier.
LAYERS = (
    Layer("conv", 11, 4, 2),
    Layer("pool", 3, 2),
    Layer("conv", 5, 1, 2),
    Layer("pool", 3, 2),
    Layer("conv", 3, 1, 1),
    Layer("conv", 3, 1, 1),
    Layer("conv", 3, 1, 1),
    Layer("conv", 3, 1, 0),
    Layer("conv", 1),
    Layer("conv", 1),
)


def score_map_geometry() -> tuple[float, float]:
    """(centre of cell 0, distance between cells) of the score map, in input pixel edges."""
    size, stride, offset = receptive_field(LAYERS)
    return offset + size / 2.0, float(stride)


def global_pool(score_map: jax.Array, pooling: str, lse_r: float = 10.0) -> jax.Array:
    """Pools a score map over space. score_map: [N, h, w, C] -> [N, C].

    'max' and 'avg' are the usual; 'lse' is (1/r) log(mean(exp(r s))), which goes from the average
    (r -> 0) to the max (r -> inf).
    """
    if pooling == "max":
        return jnp.max(score_map, axis=(1, 2))
    if pooling == "avg":
        return jnp.mean(score_map, axis=(1, 2))
    if pooling == "lse":
        if not lse_r > 0:
            raise ValueError(f"lse_r={lse_r!r}: the log-sum-exp sharpness must be > 0")
        cells = score_map.shape[1] * score_map.shape[2]
        lse = jax.nn.logsumexp(lse_r * score_map, axis=(1, 2))
        return (lse - math.log(cells)) / lse_r
    raise ValueError(f"pooling={pooling!r}: expected one of {', '.join(POOLINGS)}")


def _head_conv(features: int, kernel: int, name: str) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel, kernel),
        padding="VALID",
        kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.zeros,
        name=name,
    )


class LocalizerAlexNet(nn.Module):
    """AlexNet conv1-5, conv6 3x3 256 (no padding), ReLU, conv7 1x1 256, ReLU, score 1x1 C.

    pooling: 'max' | 'avg' | 'lse' turns the score map into logits; lse_r is the LSE sharpness.
    """

    num_classes: int = 20
    pooling: str = "max"
    lse_r: float = 10.0
    # AlexNet channel multiplier (AlexNetFeatures.width): 1.0 for the ported ImageNet weights,
    # smaller only for CPU-sized models trained from scratch (the offline scenes runs).
    width: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """x: [N, H, W, 3] -> dict(score_map [N, h, w, C], logits [N, C]).

        At 512x512 the map is 29x29 (conv5 is 31x31, conv6 is unpadded). `train` is accepted for a
        call signature shared with the other models; this model has no dropout or batch norm.
        """
        del train
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}: expected one of {', '.join(POOLINGS)}")
        x = AlexNetFeatures(include_last_pool=False, width=self.width, name="features")(x)
        x = nn.relu(_head_conv(256, 3, "conv6")(x))
        x = nn.relu(_head_conv(256, 1, "conv7")(x))
        score_map = _head_conv(self.num_classes, 1, "score")(x)
        return {"score_map": score_map, "logits": global_pool(score_map, self.pooling, self.lse_r)}
