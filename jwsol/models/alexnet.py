"""AlexNet as in torchvision (the "one weird trick" variant), in Flax with NHWC layout.

Submodules carry the names the torchvision port fills in (`jwsol.weights.torchvision`):

    params/features/conv1 .. conv5    torchvision features.0, .3, .6, .8, .10
    params/fc67/fc6, params/fc67/fc7  torchvision classifier.1, classifier.4
    params/fc8                        torchvision classifier.6

`AlexNetFeatures` (conv1-5) and `FC67` (fc6, fc7) are reusable on their own: the localizer
uses the convs without the last pool, WSDDN runs `FC67` on RoI-pooled [.., 6, 6, 256] features.
Inputs are expected normalised like torchvision's (ImageNet mean/std, RGB, values in [0, 1]
before normalisation) when pretrained weights are used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from jwsol.ops.pool import max_pool

# NOTE: torch's default Conv2d/Linear weight init (kaiming_uniform with a=sqrt(5)) is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)), which is exactly this distribution. Biases start at zero
# instead of torch's uniform draw because a Flax bias initialiser does not see fan_in.
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

INIT_SCHEMES = ("torch", "he")  # the values of config field `model.init`
TRUNK_SCOPES = ("features", "fc67")  # the AlexNet layers that pretrained weights would fill

FC6_INPUT_HW = (6, 6)  # torchvision's AdaptiveAvgPool2d((6, 6)) before the classifier


def _conv(
    features: int, kernel: int, stride: int, padding: int, name: str, use_bias: bool = True
) -> nn.Conv:
    """A torch-equivalent Conv2d: explicit symmetric zero padding, never 'SAME'."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=use_bias,
        kernel_init=torch_default_kernel_init,
        name=name,
    )


def _dense(features: int, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=torch_default_kernel_init, name=name)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """torch MaxPool2d(kernel_size=3, stride=2): no padding, floor mode. [N,H,W,C] -> [N,h,w,C]."""
    return max_pool(x, 3, 2)


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling bins along one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _adaptive_mean(x: jax.Array, axis: int, out: int) -> jax.Array:
    size = x.shape[axis]
    if size == out:
        return x
    parts = [
        jnp.mean(jax.lax.slice_in_dim(x, start, end, axis=axis), axis=axis, keepdims=True)
        for start, end in _adaptive_bins(size, out)
    ]
    return jnp.concatenate(parts, axis=axis)


def adaptive_avg_pool(x: jax.Array, output_size: int | Sequence[int]) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d on channels-last input, for any input size.

    x: [..., H, W, C] -> [..., oh, ow, C]. Bin i along an axis of length H averages rows
    floor(i*H/oh) .. ceil((i+1)*H/oh) - 1, so bins may overlap (H not a multiple of oh) or repeat
    rows (H < oh), exactly as torch. Bins are rectangles, so averaging H then W is the 2-D mean.
    """
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if x.ndim < 3:
        raise ValueError(f"adaptive_avg_pool expects [..., H, W, C], got shape {x.shape}")
    return _adaptive_mean(_adaptive_mean(x, x.ndim - 3, oh), x.ndim - 2, ow)


class AlexNetFeatures(nn.Module):
    """conv1..conv5 of torchvision AlexNet (`features`), each followed by ReLU.

    include_last_pool: apply the 3x3/2 max pool after conv5 (torchvision features[12]).
      The localizer stops before it (at 512x512 input conv5 is 31x31, with the pool 15x15).
    batch_norm: BatchNorm (params/features/bnK, state batch_stats/features/bnK) between each
      conv (then without bias) and its ReLU. Not torchvision's AlexNet, so only for training
      from scratch, where it makes the narrow CPU-sized trunks learn several times faster.
    """

    include_last_pool: bool = True
    # Channel multiplier for CPU-sized models trained from scratch (offline scenes); 1.0 is
    # torchvision's AlexNet and the only width the ported weights fit.
    width: float = 1.0
    batch_norm: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, return_activations: bool = False, train: bool = False
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """x: [N, H, W, 3] -> [N, h, w, 256]; at 224x224: 6x6 with the last pool, 13x13 without.

        With return_activations, also a dict of post-ReLU / post-pool activations, keys
        conv1, pool1, conv2, pool2, conv3, conv4, conv5 (and pool5 with the last pool).
        """
        acts = {}

        def conv(x, channels: int, kernel: int, stride: int, padding: int, k: int):
            features = max(1, round(channels * self.width))
            x = _conv(features, kernel, stride, padding, f"conv{k}", not self.batch_norm)(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{k}")(x)
            return nn.relu(x)

        x = acts["conv1"] = conv(x, 64, 11, 4, 2, 1)
        x = acts["pool1"] = _max_pool_3x3_s2(x)
        x = acts["conv2"] = conv(x, 192, 5, 1, 2, 2)
        x = acts["pool2"] = _max_pool_3x3_s2(x)
        x = acts["conv3"] = conv(x, 384, 3, 1, 1, 3)
        x = acts["conv4"] = conv(x, 256, 3, 1, 1, 4)
        x = acts["conv5"] = conv(x, 256, 3, 1, 1, 5)
        if self.include_last_pool:
            x = acts["pool5"] = _max_pool_3x3_s2(x)
        return (x, acts) if return_activations else x


class FC67(nn.Module):
    """AlexNet's fc6 and fc7: dropout, fc6, ReLU, dropout, fc7, ReLU (torchvision classifier[:6]).

    Input [..., 6, 6, 256] pooled features; the last three axes are flattened in NHWC order
    (the port permutes torchvision's fc6 weight to match). Dropout needs a 'dropout' rng when
    train=True.
    """

    dropout_rate: float = 0.5
    features: int = 4096  # torchvision's width; smaller only for models trained from scratch

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, return_activations: bool = False
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """x: [..., 6, 6, 256] -> [..., 4096] (+ dict with fc6, fc7 post-ReLU activations)."""
        if x.ndim < 3:
            raise ValueError(f"FC67 expects [..., 6, 6, 256] features, got shape {x.shape}")
        x = x.reshape(*x.shape[:-3], -1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        fc6 = x = nn.relu(_dense(self.features, "fc6")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        fc7 = x = nn.relu(_dense(self.features, "fc7")(x))
        return (x, {"fc6": fc6, "fc7": fc7}) if return_activations else x


class AlexNet(nn.Module):
    """torchvision AlexNet: features, max pool, adaptive avg pool to 6x6, fc6, fc7, fc8."""

    num_classes: int = 1000
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, return_activations: bool = False
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """x: [N, H, W, 3] (H, W >= 63) -> logits [N, num_classes].

        With return_activations, also the dict of `AlexNetFeatures` plus avgpool [N, 6, 6, 256],
        fc6 and fc7 [N, 4096].
        """
        x, acts = AlexNetFeatures(name="features")(x, return_activations=True)
        x = acts["avgpool"] = adaptive_avg_pool(x, FC6_INPUT_HW)
        x, fc_acts = FC67(self.dropout_rate, name="fc67")(x, train=train, return_activations=True)
        acts.update(fc_acts)
        logits = _dense(self.num_classes, "fc8")(x)
        return (logits, acts) if return_activations else logits


def he_init(params: Mapping[str, Any], rng: jax.Array) -> dict[str, Any]:
    """params with the AlexNet trunk's kernels (`features/*`, `fc67/*`) redrawn from He et al.'s
    N(0, 2 / fan_in); biases, BatchNorm and the heads keep theirs.

    For training from scratch only: torch's default init scales each ReLU layer's output variance
    by about 1/6, so a deep unnormalised trunk starts with vanishing features; He's keeps the scale.
    """
    flat = traverse_util.flatten_dict(params)
    keys = sorted(k for k in flat if k[0] in TRUNK_SCOPES and k[-1] == "kernel")
    for key, sub in zip(keys, jax.random.split(rng, len(keys))):
        kernel = flat[key]
        fan_in = math.prod(kernel.shape[:-1])
        flat[key] = jax.random.normal(sub, kernel.shape, kernel.dtype) * math.sqrt(2.0 / fan_in)
    return traverse_util.unflatten_dict(flat)


def init_alexnet(
    init: Callable[[jax.Array], Mapping[str, Any]], rng: jax.Array, scheme: str
) -> dict[str, Any]:
    """Variables from `init(rng)` (a model's `init` with its inputs bound), trunk by `scheme`.

    scheme: 'torch' (torchvision's default init, as `init` draws it) or 'he' (`he_init`).
    Pretrained weights, merged later, replace the trunk either way.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme {scheme!r}: expected one of {INIT_SCHEMES}")
    init_rng, he_rng = jax.random.split(rng)
    variables = dict(init(init_rng))
    if scheme == "he":
        variables["params"] = he_init(variables["params"], he_rng)
    return variables
