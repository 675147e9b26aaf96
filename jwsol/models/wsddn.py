"""WSDDN: weakly supervised deep detection networks (Bilen & Vedaldi, CVPR 2016).

AlexNet conv1-5 (stride 16, no last pool) -> RoI pooling of every proposal -> fc6/fc7 (with
dropout) -> two heads on each region's fc7:

  classification stream  softmax over classes of cls_head   [N, R, C]  ("what")
  detection stream       softmax over regions of det_head   [N, R, C]  ("where")

Their product is the region score; summed over regions it is the image score of each class,
in (0, 1) because the detection softmax sums to 1 over regions and the class softmax is < 1.
Image-level labels train both streams through that sum (binary cross-entropy, in
`jwsol.losses.wsddn_loss`). Padded proposals (proposal_mask False) get zero detection weight.

With num_refinements = K > 0 the model is OICR (Tang et al., CVPR 2017): K more heads on the
same fc7, each a (C + 1)-way proposal classifier (index 0 = background) trained on pseudo-labels
from the stream before it (`jwsol.ops.oicr`, the loss in `jwsol.losses.oicr_refinement_loss`).

Parameter tree (the ported torchvision AlexNet merges in without renaming):

    params/features/conv1 .. conv5     AlexNetFeatures (torchvision features)
    params/fc67/fc6, params/fc67/fc7   FC67 (torchvision classifier.1, classifier.4)
    params/cls_head, params/det_head   new: N(0, 0.01) kernels, zero biases (as hbilen/WSDDN)
    params/refine1 .. refineK          OICR's refinement heads, initialised alike
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jwsol.models.alexnet import FC67, AlexNetFeatures
from jwsol.models.vgg import VGGFC67, VGG16Features
from jwsol.ops.roi_pool import batched_roi_align, batched_roi_pool

POOLINGS = ("roi_pool", "roi_align")
# Trunk (conv5 at stride 16: AlexNet without its last pool, VGG16 without pool5 as in Fast R-CNN)
# and fc6/fc7 of each backbone, whose ported torchvision weights merge in without renaming.
BACKBONES = {"alexnet": (AlexNetFeatures, FC67), "vgg16": (VGG16Features, VGGFC67)}


def masked_region_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over regions (axis 1) of `logits: [N, R, C]`, with `mask: [N, R]` False rows
    given exactly zero weight. An image with no valid region gets all zeros (not NaN)."""
    valid = mask[:, :, None]
    # NOTE: the lowest finite float, not -inf: an all-padded image (the loop pads the last eval
    # batch) would give exp(-inf - -inf) = NaN; here it gives a uniform row, zeroed below.
    masked = jnp.where(valid, logits, jnp.finfo(logits.dtype).min)
    return jnp.where(valid, jax.nn.softmax(masked, axis=1), 0.0)


def combine_streams(
    cls_logits: jax.Array,
    det_logits: jax.Array,
    mask: jax.Array,
    cls_temperature: float = 1.0,
    det_temperature: float = 1.0,
) -> dict[str, jax.Array]:
    """The two-stream combination.

    Args:
      cls_logits, det_logits: [N, R, C].
      mask: [N, R] bool, True for real proposals.
      cls_temperature, det_temperature: softmax(x / T) (hbilen/WSDDN uses T = 2 for det).

    Returns dict of cls_probs (softmax over C), det_probs (softmax over valid R),
    region_scores = cls_probs * det_probs [N, R, C] and image_scores = sum over R [N, C].
    """
    cls_probs = jax.nn.softmax(cls_logits / cls_temperature, axis=-1)
    det_probs = masked_region_softmax(det_logits / det_temperature, mask)
    region_scores = cls_probs * det_probs
    return {
        "cls_probs": cls_probs,
        "det_probs": det_probs,
        "region_scores": region_scores,
        "image_scores": jnp.sum(region_scores, axis=1),
    }


class WSDDN(nn.Module):
    """The WSDDN detector (and OICR with refinements) on AlexNet or VGG16.

    Attributes:
      num_classes: C.
      backbone: 'alexnet' or 'vgg16' (RoI pool 7x7 for VGG16's fc6, 6x6 for AlexNet's).
      width: trunk channel multiplier (1.0 = torchvision; smaller only from scratch).
      batch_norm: BatchNorm in conv1-5 (from scratch only; adds batch_stats state).
      fc_features: fc6/fc7 width (4096 = torchvision).
      dropout_rate: dropout before fc6 and fc7 in training.
      pooling: 'roi_pool' (max, Fast R-CNN / WSDDN) or 'roi_align' (bilinear).
      pool_size: output bins per side (6: AlexNet's fc6 input).
      spatial_scale: feature cells per input pixel (1/16 for conv5).
      sampling_ratio: roi_align samples per bin and axis (<= 0: adaptive).
      cls_temperature, det_temperature: softmax temperatures of the two streams.
      box_score_scale: pooled features are multiplied by 1 + box_score_scale * proposal score
        (hbilen/WSDDN uses 10 with Edge Boxes scores); with 0, or all-zero scores, no change.
      num_refinements: K, OICR's refinement streams (0: WSDDN alone).
      box_regression: a per-class box regression head on fc7 (Yang et al., ICCV 2019), trained
        on the last stream's pseudo boxes (`jwsol.losses.box_regression_loss`).
    """

    num_classes: int = 20
    backbone: str = "alexnet"
    width: float = 1.0
    batch_norm: bool = False
    fc_features: int = 4096
    dropout_rate: float = 0.5
    pooling: str = "roi_pool"
    pool_size: int = 6
    spatial_scale: float = 1.0 / 16.0
    sampling_ratio: int = 2
    cls_temperature: float = 1.0
    det_temperature: float = 1.0
    box_score_scale: float = 0.0
    num_refinements: int = 0
    box_regression: bool = False

    @nn.compact
    def __call__(
        self,
        images: jax.Array,
        proposals: jax.Array,
        proposal_mask: jax.Array,
        proposal_scores: jax.Array | None = None,
        train: bool = False,
    ) -> dict[str, jax.Array]:
        """images [N, S, S, 3], proposals [N, R, 4] (x1, y1, x2, y2 in image pixels),
        proposal_mask [N, R] bool, proposal_scores [N, R] (optional).

        Returns dict: cls_logits, det_logits, cls_probs, det_probs, region_scores [N, R, C],
        image_scores [N, C], fc7 [N, R, fc_features], and with K refinements refine_probs
        [N, K, R, C + 1] (softmax over background + classes), with box_regression box_deltas
        [N, R, C, 4] (`jwsol.ops.box_coder`). Dropout needs a 'dropout' rng
        when train.
        """
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling={self.pooling!r}: expected one of {POOLINGS}")
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"model.backbone={self.backbone!r}: expected one of {tuple(BACKBONES)}"
            )
        trunk, fc67 = BACKBONES[self.backbone]
        conv5 = trunk(
            include_last_pool=False, width=self.width, batch_norm=self.batch_norm, name="features"
        )(images, train=train)  # [N, h, w, K]
        proposals = jax.lax.stop_gradient(proposals.astype(jnp.float32))
        if self.pooling == "roi_pool":
            pooled = batched_roi_pool(conv5, proposals, self.pool_size, self.spatial_scale)
        else:
            pooled = batched_roi_align(
                conv5,
                proposals,
                self.pool_size,
                spatial_scale=self.spatial_scale,
                sampling_ratio=self.sampling_ratio,
            )  # [N, R, p, p, K]
        if self.box_score_scale and proposal_scores is not None:
            boost = 1.0 + self.box_score_scale * proposal_scores.astype(pooled.dtype)
            pooled = pooled * boost[:, :, None, None, None]
        fc7 = fc67(self.dropout_rate, self.fc_features, name="fc67")(pooled, train=train)
        head_init = nn.initializers.normal(0.01)
        cls_logits = nn.Dense(self.num_classes, kernel_init=head_init, name="cls_head")(fc7)
        det_logits = nn.Dense(self.num_classes, kernel_init=head_init, name="det_head")(fc7)
        out = combine_streams(
            cls_logits, det_logits, proposal_mask, self.cls_temperature, self.det_temperature
        )
        out = dict(out, cls_logits=cls_logits, det_logits=det_logits, fc7=fc7)
        if self.num_refinements:
            refine = [
                nn.Dense(self.num_classes + 1, kernel_init=head_init, name=f"refine{k + 1}")(fc7)
                for k in range(self.num_refinements)
            ]
            out["refine_probs"] = jax.nn.softmax(jnp.stack(refine, axis=1), axis=-1)
        if self.box_regression:
            # Fast R-CNN's small init: regression starts near the identity (deltas ~ 0).
            deltas = nn.Dense(
                4 * self.num_classes, kernel_init=nn.initializers.normal(0.001), name="bbox_pred"
            )(fc7)
            out["box_deltas"] = deltas.reshape(*deltas.shape[:-1], self.num_classes, 4)
        return out
