"""VGG16 as in torchvision (`vgg16`, the IMAGENET1K_V1 layout), in Flax with NHWC layout.

Submodules carry the names the torchvision port fills in (`jwsol.weights.torchvision`):

    params/features/conv1_1 .. conv5_3  torchvision features.0, .2, .5, ... .28 (13 convs)
    params/fc67/fc6, params/fc67/fc7    torchvision classifier.0, classifier.3
    params/fc8                          torchvision classifier.6

`VGG16Features` (the 13 convs) and `VGGFC67` (fc6, fc7) are reusable on their own, as Fast
R-CNN uses them: conv5_3 without the last max pool (stride 16), RoI pooling to 7x7, then fc6/fc7
on each region. Inputs are expected normalised like torchvision's (ImageNet mean/std, RGB,
values in [0, 1] before normalisation) when pretrained weights are used.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jwsol.models.alexnet import adaptive_avg_pool
from jwsol.ops.pool import max_pool

# Channels of each conv, stage by stage; a 2x2/2 max pool ends every stage (torchvision cfg "D").
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC6_INPUT_HW = (7, 7)  # torchvision's AdaptiveAvgPool2d((7, 7)) before the classifier

# torchvision's VGG init (`VGG._initialize_weights`): convs kaiming-normal over fan_out, linear
# layers N(0, 0.01), biases zero.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_kernel_init = nn.initializers.normal(0.01)


def _max_pool_2x2(x: jax.Array) -> jax.Array:
    """torch MaxPool2d(kernel_size=2, stride=2): floor mode. [N,H,W,C] -> [N,H//2,W//2,C]."""
    return max_pool(x, 2, 2)


class VGG16Features(nn.Module):
    """The 13 3x3 convs of torchvision vgg16 (`features`), each followed by ReLU, with a 2x2/2
    max pool after conv1_2, conv2_2, conv3_3, conv4_3 and (include_last_pool) conv5_3.

    include_last_pool: apply the max pool after conv5_3 (torchvision features[30]). Fast R-CNN
      removes it: conv5_3 then has stride 16, H // 16 x W // 16 (torch's floor-mode pools).
    batch_norm: BatchNorm (params/features/bn{s}_{i}, state batch_stats/features/bn{s}_{i})
      between each conv (then without bias) and its ReLU. Not the ported vgg16, so only for
      training from scratch, as `AlexNetFeatures.batch_norm`.
    """

    include_last_pool: bool = True
    # Channel multiplier for CPU-sized models trained from scratch; 1.0 is torchvision's VGG16
    # and the only width the ported weights fit.
    width: float = 1.0
    batch_norm: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, return_activations: bool = False, train: bool = False
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """x: [N, H, W, 3] -> [N, h, w, 512]; at 224x224: 7x7 with the last pool, 14x14 without.

        With return_activations, also a dict of post-ReLU / post-pool activations, keys
        conv1_1 .. conv5_3 and pool1 .. pool4 (and pool5 with the last pool).
        """
        acts = {}
        for s, stage in enumerate(STAGES, start=1):
            for i, channels in enumerate(stage, start=1):
                name = f"{s}_{i}"
                x = nn.Conv(
                    max(1, round(channels * self.width)),
                    (3, 3),
                    padding=((1, 1), (1, 1)),
                    use_bias=not self.batch_norm,
                    kernel_init=conv_kernel_init,
                    name=f"conv{name}",
                )(x)
                if self.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{name}")(
                        x
                    )
                x = acts[f"conv{name}"] = nn.relu(x)
            if s < len(STAGES) or self.include_last_pool:
                x = acts[f"pool{s}"] = _max_pool_2x2(x)
        return (x, acts) if return_activations else x


class VGGFC67(nn.Module):
    """VGG's fc6 and fc7: fc6, ReLU, dropout, fc7, ReLU, dropout (torchvision classifier[:6]).

    Dropout comes after each ReLU, where AlexNet's `FC67` puts it before each layer. Input
    [..., 7, 7, 512] pooled features; the last three axes are flattened in NHWC order (the port
    permutes torchvision's fc6 weight to match). Dropout needs a 'dropout' rng when train=True.
    """

    dropout_rate: float = 0.5
    features: int = 4096  # torchvision's width; smaller only for models trained from scratch

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, return_activations: bool = False
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """x: [..., 7, 7, 512] -> [..., 4096] (+ dict with fc6, fc7 post-ReLU activations)."""
        if x.ndim < 3:
            raise ValueError(f"VGGFC67 expects [..., 7, 7, 512] features, got shape {x.shape}")
        x = x.reshape(*x.shape[:-3], -1)
        acts = {}
        for name in ("fc6", "fc7"):
            x = nn.Dense(self.features, kernel_init=dense_kernel_init, name=name)(x)
            x = acts[name] = nn.relu(x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return (x, acts) if return_activations else x


class VGG16(nn.Module):
    """torchvision vgg16: features, adaptive avg pool to 7x7, fc6, fc7, fc8."""

    num_classes: int = 1000
    dropout_rate: float = 0.5
    fc_features: int = 4096  # fc6/fc7 width; 4096 is torchvision's and what the port fills

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, return_activations: bool = False
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """x: [N, H, W, 3] (H, W >= 32) -> logits [N, num_classes].

        With return_activations, also the dict of `VGG16Features` plus avgpool [N, 7, 7, 512],
        fc6 and fc7 [N, fc_features].
        """
        x, acts = VGG16Features(name="features")(x, return_activations=True)
        x = acts["avgpool"] = adaptive_avg_pool(x, FC6_INPUT_HW)
        x, fc_acts = VGGFC67(self.dropout_rate, self.fc_features, name="fc67")(
            x, train=train, return_activations=True
        )
        acts.update(fc_acts)
        logits = nn.Dense(self.num_classes, kernel_init=dense_kernel_init, name="fc8")(x)
        return (logits, acts) if return_activations else logits
