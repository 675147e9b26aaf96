"""ResNet-18/34/50 in torchvision's layout (v1.5: the stride sits on the 3x3 conv), NHWC.

Parameter tree, named after torchvision's state_dict keys so the port is a readable table:

    params/conv1, params/bn1 (+ batch_stats/bn1)                 stem
    params/layer{1..4}/block{j}/conv1, bn1, conv2, bn2[, conv3, bn3]
    params/layer{i}/block0/downsample_conv, downsample_bn          torchvision downsample.0 / .1
    params/fc                                                      classifier (if num_classes)

BatchNorm keeps running statistics in the 'batch_stats' collection: call with train=True and
mutable=['batch_stats'] to train, train=False to use them. Momentum 0.9 here is torch's 0.1.

For Grad-CAM, `features` and `head` split the network at layer4:

    acts = model.apply(variables, x, method=ResNet.features)   # dict, acts['layer4'] [N,h,w,C]
    logits = model.apply(variables, acts['layer4'], method=ResNet.head)

so gradients of a class score w.r.t. the layer4 activation are `jax.grad` of the second call.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jwsol.models.alexnet import torch_default_kernel_init
from jwsol.ops.conv import conv2d
from jwsol.ops.pool import max_pool

# depth -> (residual block kind, blocks per stage), as torchvision's resnet18/34/50.
STAGE_SIZES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
ACTIVATION_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")

# torchvision initialises convs with kaiming_normal_(mode='fan_out', nonlinearity='relu').
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ChunkedConv(nn.Module):
    """`nn.Conv` without bias (same `kernel` parameter, so ported weights fit) computed
    `batch_chunk` examples at a time (`jwsol.ops.conv.conv2d`). [N, H, W, C] -> [N, h, w, F]."""

    features: int
    kernel: int
    stride: int
    batch_chunk: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel, self.kernel, x.shape[-1], self.features)
        kernel = self.param("kernel", conv_kernel_init, shape).astype(x.dtype)
        pad = ((self.kernel // 2,) * 2,) * 2
        return conv2d(x, kernel, self.stride, pad, batch_chunk=self.batch_chunk)


def _conv(features: int, kernel: int, stride: int, name: str, batch_chunk: int = 0) -> nn.Module:
    """Bias-free conv with torch's padding kernel // 2 written out (never 'SAME' when strided);
    with batch_chunk > 0 computed that many examples at a time (`ChunkedConv`)."""
    if batch_chunk > 0:
        return ChunkedConv(features, kernel, stride, batch_chunk, name=name)
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=conv_kernel_init,
        name=name,
    )


def _batch_norm(name: str) -> nn.BatchNorm:
    # NOTE: torch's momentum 0.1 weighs the new batch statistic; Flax's momentum weighs the old
    # running value, so the same update is momentum=0.9. Flax updates the running variance with
    # the biased batch variance where torch uses the unbiased one (a factor n/(n-1), n = N*H*W).
    return nn.BatchNorm(momentum=0.9, epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
    """Two 3x3 convs (stride on the first) + identity or 1x1 conv/BN shortcut. ResNet-18/34."""

    features: int
    stride: int = 1
    batch_chunk: int = 0  # ChunkedConv's: 0 = nn.Conv
    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [N, H, W, Cin] -> [N, H/stride, W/stride, features]."""
        use_avg = not train
        c = self.batch_chunk
        out = nn.relu(
            _batch_norm("bn1")(_conv(self.features, 3, self.stride, "conv1", c)(x), use_avg)
        )
        out = _batch_norm("bn2")(_conv(self.features, 3, 1, "conv2", c)(out), use_avg)
        return nn.relu(out + _shortcut(x, self.features, self.stride, train, c))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, torchvision v1.5), 1x1 expand x4, + shortcut. ResNet-50."""

    features: int
    stride: int = 1
    batch_chunk: int = 0
    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [N, H, W, Cin] -> [N, H/stride, W/stride, 4 * features]."""
        use_avg = not train
        c = self.batch_chunk
        out = nn.relu(_batch_norm("bn1")(_conv(self.features, 1, 1, "conv1", c)(x), use_avg))
        out = nn.relu(
            _batch_norm("bn2")(_conv(self.features, 3, self.stride, "conv2", c)(out), use_avg)
        )
        out = _batch_norm("bn3")(_conv(4 * self.features, 1, 1, "conv3", c)(out), use_avg)
        return nn.relu(out + _shortcut(x, 4 * self.features, self.stride, train, c))


def _shortcut(
    x: jax.Array, out_features: int, stride: int, train: bool, batch_chunk: int = 0
) -> jax.Array:
    """Identity, or torchvision's downsample (1x1 conv with stride + BN) when the shape changes.

    Called inside a block's compact __call__, so the submodules belong to the block.
    """
    if stride == 1 and x.shape[-1] == out_features:
        return x
    x = _conv(out_features, 1, stride, "downsample_conv", batch_chunk)(x)
    return _batch_norm("downsample_bn")(x, use_running_average=not train)


class ResNetStage(nn.Module):
    """One torchvision `layerK`: `num_blocks` blocks named block0.., the first one strided."""

    block: str  # 'basic' | 'bottleneck'
    features: int
    num_blocks: int
    stride: int
    batch_chunk: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        block_cls = BasicBlock if self.block == "basic" else Bottleneck
        for j in range(self.num_blocks):
            stride = self.stride if j == 0 else 1
            x = block_cls(self.features, stride, self.batch_chunk, name=f"block{j}")(x, train=train)
        return x


class ResNet(nn.Module):
    """torchvision ResNet-18/34/50.

    depth: 18, 34 or 50. num_classes: size of `fc`, or None for no classifier (head returns the
    pooled [N, C] features). small_input: 3x3 stride-1 stem conv and no max pool, for 64x64
    images (layer4 is then 8x8 instead of 2x2); its conv1 cannot take ImageNet weights.
    """

    depth: int = 50
    num_classes: int | None = 1000
    small_input: bool = False
    # > 0: every conv runs on chunks of this many examples (ChunkedConv; faster on XLA:CPU for
    # large batches, docs/speed.md); the numbers are nn.Conv's within float32 rounding.
    conv_batch_chunk: int = 0

    def setup(self) -> None:
        if self.depth not in STAGE_SIZES:
            raise ValueError(f"ResNet depth={self.depth!r}: expected one of {sorted(STAGE_SIZES)}")
        block, sizes = STAGE_SIZES[self.depth]
        if self.small_input:
            self.conv1 = _conv(64, 3, 1, "conv1", self.conv_batch_chunk)
        else:
            self.conv1 = _conv(64, 7, 2, "conv1", self.conv_batch_chunk)
        self.bn1 = _batch_norm("bn1")
        strides = (1, 2, 2, 2)
        for k, (width, size, stride) in enumerate(zip(STAGE_WIDTHS, sizes, strides), start=1):
            setattr(
                self,
                f"layer{k}",
                ResNetStage(block, width, size, stride, self.conv_batch_chunk, name=f"layer{k}"),
            )
        if self.num_classes is not None:
            self.fc = nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init, name="fc")

    def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """x: [N, H, W, 3] -> dict of stage outputs 'stem', 'layer1' .. 'layer4'.

        Strides relative to the input: stem 4 (1 with small_input), layer1 4, layer2 8,
        layer3 16, layer4 32. Channels 64, then 64/128/256/512 x expansion (1 or 4).
        """
        x = nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
        if not self.small_input:
            x = max_pool(x, 3, 2, ((1, 1), (1, 1)))
        acts = {"stem": x}
        for name in ACTIVATION_NAMES[1:]:
            x = acts[name] = getattr(self, name)(x, train=train)
        return acts

    def head(self, layer4: jax.Array) -> jax.Array:
        """layer4: [N, h, w, C] -> logits [N, num_classes] (global average pool, then fc)."""
        pooled = jnp.mean(layer4, axis=(1, 2))
        return pooled if self.num_classes is None else self.fc(pooled)

    def __call__(
        self, x: jax.Array, train: bool = False, return_activations: bool = False
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """x: [N, H, W, 3] -> logits [N, num_classes] (+ the `features` dict)."""
        acts = self.features(x, train=train)
        logits = self.head(acts["layer4"])
        return (logits, acts) if return_activations else logits
