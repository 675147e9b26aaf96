"""WSDDN model and losses: shapes, masking, the two-stream combination by hand, box-score scaling,
the parameter tree the AlexNet port fills, and the BCE / spatial regulariser against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jwsol import losses
from jwsol.models.alexnet import AlexNet
from jwsol.models.wsddn import WSDDN, combine_streams, masked_region_softmax

SMALL = {"num_classes": 3, "width": 0.125, "fc_features": 16, "dropout_rate": 0.0}


def _inputs(n=2, r=5, size=64, seed=0):
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.normal(size=(n, size, size, 3)), jnp.float32)
    xy = rng.uniform(0, size - 24, size=(n, r, 2))
    wh = rng.uniform(8, 24, size=(n, r, 2))
    boxes = jnp.asarray(np.concatenate([xy, xy + wh], -1), jnp.float32)
    mask = jnp.asarray(np.arange(r)[None, :] < np.array([r, r - 2])[:, None])  # image 1: 2 padded
    return images, boxes, mask


@pytest.fixture(scope="module")
def small():
    model = WSDDN(**SMALL)
    images, boxes, mask = _inputs()
    variables = jax.jit(model.init)(jax.random.key(0), images, boxes, mask)
    return model, variables


@pytest.mark.parametrize("pooling", ["roi_pool", "roi_align"])
def test_output_shapes_and_ranges(small, pooling):
    _, variables = small
    model = WSDDN(**SMALL, pooling=pooling)
    images, boxes, mask = _inputs()
    out = jax.jit(model.apply)(variables, images, boxes, mask)
    for key in ("cls_logits", "det_logits", "cls_probs", "det_probs", "region_scores"):
        assert out[key].shape == (2, 5, 3), key
    assert out["image_scores"].shape == (2, 3)
    assert out["fc7"].shape == (2, 5, 16)
    scores = np.asarray(out["image_scores"])
    assert np.all(scores > 0) and np.all(scores < 1)
    np.testing.assert_allclose(np.asarray(out["det_probs"]).sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["cls_probs"]).sum(axis=2), 1.0, rtol=1e-5)


def test_padded_proposals_get_zero_weight_and_do_not_matter(small):
    model, variables = small
    images, boxes, mask = _inputs()
    out = model.apply(variables, images, boxes, mask)
    det = np.asarray(out["det_probs"])
    assert np.all(det[1, 3:] == 0.0) and np.all(np.asarray(out["region_scores"])[1, 3:] == 0.0)
    # Moving the padded boxes anywhere changes nothing.
    moved = boxes.at[1, 3:].set(jnp.array([0.0, 0.0, 63.0, 63.0]))
    again = model.apply(variables, images, moved, mask)
    np.testing.assert_array_equal(again["image_scores"], out["image_scores"])
    # An all-padded image (the loop pads the last eval batch) scores zeros, not NaN.
    empty = model.apply(variables, images, boxes, jnp.zeros_like(mask))
    assert np.all(np.asarray(empty["image_scores"]) == 0.0)


def test_two_stream_combination_by_hand():
    # One image, 3 regions (the last padded), 2 classes.
    cls = jnp.array([[[0.0, np.log(3.0)], [np.log(4.0), 0.0], [5.0, -5.0]]])
    det = jnp.array([[[0.0, 0.0], [np.log(3.0), np.log(1.0 / 3.0)], [9.0, 9.0]]])
    mask = jnp.array([[True, True, False]])
    out = combine_streams(cls, det, mask)
    # Class softmax: region 0 -> (1/4, 3/4), region 1 -> (4/5, 1/5).
    # Region softmax over the 2 valid regions: class 0 -> (1/4, 3/4), class 1 -> (3/4, 1/4).
    expected_regions = np.array([[1 / 4 * 1 / 4, 3 / 4 * 3 / 4], [4 / 5 * 3 / 4, 1 / 5 * 1 / 4]])
    np.testing.assert_allclose(out["region_scores"][0, :2], expected_regions, rtol=1e-6)
    np.testing.assert_allclose(out["region_scores"][0, 2], 0.0)
    np.testing.assert_allclose(out["image_scores"][0], [1 / 16 + 3 / 5, 9 / 16 + 1 / 20], rtol=1e-6)
    # Temperature T divides the logits: softmax over regions of det / 2.
    warm = combine_streams(cls, det, mask, det_temperature=2.0)
    np.testing.assert_allclose(
        warm["det_probs"][0, :2, 0], [1 / (1 + np.sqrt(3)), np.sqrt(3) / (1 + np.sqrt(3))],
        rtol=1e-6,
    )  # fmt: skip


def test_masked_region_softmax_matches_numpy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 6, 4)).astype(np.float32)
    mask = rng.random((2, 6)) < 0.6
    mask[:, 0] = True
    got = np.asarray(masked_region_softmax(jnp.asarray(logits), jnp.asarray(mask)))
    for n in range(2):
        e = np.exp(logits[n][mask[n]] - logits[n][mask[n]].max(0))
        np.testing.assert_allclose(got[n][mask[n]], e / e.sum(0), rtol=1e-5)
        assert np.all(got[n][~mask[n]] == 0)


def test_box_score_scaling_multiplies_the_pooled_features(small):
    # With every bias zero, AlexNet conv1-5 and RoIAlign are positively homogeneous, so scaling
    # the pooled features by 1 + 10 * 0.1 = 2 is the same as doubling the image.
    _, variables = small
    zero_bias = traverse_util.unflatten_dict({
        k: (jnp.zeros_like(v) if k[-1] == "bias" else v)
        for k, v in traverse_util.flatten_dict(variables).items()
    })  # fmt: skip
    images, boxes, mask = _inputs()
    scores = jnp.full(mask.shape, 0.1)
    boosted = WSDDN(**SMALL, pooling="roi_align", box_score_scale=10.0)
    plain = WSDDN(**SMALL, pooling="roi_align")
    a = boosted.apply(zero_bias, images, boxes, mask, scores)
    b = plain.apply(zero_bias, 2.0 * images, boxes, mask)
    np.testing.assert_allclose(a["fc7"], b["fc7"], rtol=1e-4, atol=1e-5)
    # All-zero scores (proposals without scores) leave the features alone.
    c = boosted.apply(zero_bias, images, boxes, mask, jnp.zeros_like(scores))
    d = plain.apply(zero_bias, images, boxes, mask)
    np.testing.assert_allclose(c["fc7"], d["fc7"], rtol=1e-6)


def test_dropout_in_training_only(small):
    model = WSDDN(**{**SMALL, "dropout_rate": 0.5})
    _, variables = small
    images, boxes, mask = _inputs()
    test = model.apply(variables, images, boxes, mask)
    again = model.apply(variables, images, boxes, mask)
    np.testing.assert_array_equal(test["fc7"], again["fc7"])
    train = model.apply(
        variables, images, boxes, mask, train=True, rngs={"dropout": jax.random.key(1)}
    )
    assert not np.allclose(train["fc7"], test["fc7"])


def test_parameter_tree_matches_the_alexnet_port():
    """features/* and fc67/* have AlexNet's names and shapes, so ported weights merge as is."""
    images, boxes, mask = _inputs(n=1, r=2, size=224)
    shapes = jax.eval_shape(WSDDN(num_classes=20).init, jax.random.key(0), images, boxes, mask)
    alexnet = jax.eval_shape(AlexNet().init, jax.random.key(0), images)
    flat = {k: v.shape for k, v in traverse_util.flatten_dict(shapes["params"], sep="/").items()}
    ref = {k: v.shape for k, v in traverse_util.flatten_dict(alexnet["params"], sep="/").items()}
    shared = {k: v for k, v in ref.items() if not k.startswith("fc8")}
    assert {k: flat[k] for k in shared} == shared
    assert flat["cls_head/kernel"] == flat["det_head/kernel"] == (4096, 20)
    assert set(flat) == set(shared) | {f"{h}/{p}" for h in ("cls_head", "det_head") for p in (
        "kernel", "bias")}  # fmt: skip


def test_bad_pooling_is_a_config_error():
    images, boxes, mask = _inputs(n=1, r=2)
    with pytest.raises(ValueError, match="model.pooling='avg'"):
        WSDDN(**SMALL, pooling="avg").init(jax.random.key(0), images, boxes, mask)


# Losses ---------------------------------------------------------------------------------------


def test_wsddn_loss_matches_numpy_bce():
    rng = np.random.default_rng(4)
    scores = rng.uniform(0, 1, size=(3, 5)).astype(np.float32)
    scores[0, 0], scores[1, 1] = 0.0, 1.0  # clipped, stays finite
    labels = (rng.random((3, 5)) < 0.4).astype(np.float32)
    weights = np.ones((3, 5), np.float32)
    weights[2, 3] = 0.0
    loss, metrics = losses.wsddn_loss(
        jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(weights)
    )
    # Clip in float32 as the loss does (1 - 1e-6 is 0.99999899 there).
    s = np.clip(scores, np.float32(1e-6), np.float32(1 - 1e-6)).astype(np.float64)
    bce = -(labels * np.log(s) + (1 - labels) * np.log(1 - s))
    np.testing.assert_allclose(loss, (weights * bce).sum(1).mean(), rtol=1e-5)
    agree = ((scores > 0.5) == (labels > 0.5)) * weights
    np.testing.assert_allclose(metrics["label_accuracy"], agree.sum() / weights.sum(), rtol=1e-6)


def _spatial_reference(scores, feats, boxes, mask, labels, iou_threshold, num_boxes):
    """Loop transcription of hbilen/WSDDN LossTopBoxSmoothProb's forward (continuous IoU)."""
    total = np.zeros(len(scores))
    for n in range(len(scores)):
        valid = np.nonzero(mask[n])[0]
        for c in np.nonzero(labels[n] > 0.5)[0]:
            order = valid[np.argsort(-scores[n, valid, c], kind="stable")]
            top, rest = order[0], order[1:num_boxes]
            for r in rest:
                a, b = boxes[n, top], boxes[n, r]
                iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
                ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
                inter = iw * ih
                union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
                if inter / union > iou_threshold:
                    d = scores[n, r, c] * (feats[n, r] - feats[n, top])
                    total[n] += 0.5 * np.sum(d**2)
    return total


def test_spatial_regulariser_matches_loop_reference():
    rng = np.random.default_rng(5)
    n, r, c, f = 3, 14, 4, 6
    base = rng.uniform(0, 40, size=(n, 1, 2))
    jitter = rng.normal(0, 3, size=(n, r, 4))  # boxes around one place: many overlap > 0.6
    boxes = (np.concatenate([base, base + 30], -1) + jitter).astype(np.float32)
    scores = rng.uniform(0, 1, size=(n, r, c)).astype(np.float32)
    feats = rng.normal(size=(n, r, f)).astype(np.float32)
    mask = np.ones((n, r), bool)
    mask[1, 9:] = False
    labels = (rng.random((n, c)) < 0.6).astype(np.float32)
    labels[:, 0] = 1
    got = losses.wsddn_spatial_regulariser(
        jnp.asarray(scores), jnp.asarray(feats), jnp.asarray(boxes), jnp.asarray(mask),
        jnp.asarray(labels), iou_threshold=0.6, num_boxes=10,
    )  # fmt: skip
    want = _spatial_reference(scores, feats, boxes, mask, labels, 0.6, 10)
    assert np.all(want > 0)  # the case exercises the regulariser
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_spatial_regulariser_gradient_pulls_towards_the_top_box():
    # Two regions, IoU 0.9 > 0.6; scores (0.9, 0.5): gradient on f_1 is 0.5^2 (f_1 - f_0).
    boxes = jnp.array([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0]]])
    scores = jnp.array([[[0.9], [0.5]]])
    feats = jnp.array([[[1.0, 2.0], [3.0, -1.0]]])
    grad = jax.grad(
        lambda f: losses.wsddn_spatial_regulariser(
            scores, f, boxes, jnp.ones((1, 2), bool), jnp.ones((1, 1))
        ).sum()
    )(feats)
    np.testing.assert_allclose(grad[0, 1], 0.25 * np.array([2.0, -3.0]), rtol=1e-6)
    np.testing.assert_allclose(grad[0, 0], -0.25 * np.array([2.0, -3.0]), rtol=1e-6)


@pytest.mark.slow
def test_batch_norm_trunk_keeps_statistics_and_is_affine_at_eval():
    model = WSDDN(**SMALL, batch_norm=True)
    images, boxes, mask = _inputs()
    variables = model.init(jax.random.key(0), images, boxes, mask)
    stats = traverse_util.flatten_dict(variables["batch_stats"])
    assert {k[:2] for k in stats} == {("features", f"bn{i}") for i in range(1, 6)}
    assert "bias" not in variables["params"]["features"]["conv1"]  # BN's bias replaces it
    out, updated = model.apply(variables, images, boxes, mask, train=True, mutable=["batch_stats"])
    moved = traverse_util.flatten_dict(updated["batch_stats"])
    assert any(not np.allclose(moved[k], stats[k]) for k in stats)
    # At eval the statistics are constants: an image's scores do not depend on its batch-mates.
    alone = model.apply(variables, images[:1], boxes[:1], mask[:1])
    both = model.apply(variables, images, boxes, mask)
    np.testing.assert_allclose(alone["image_scores"], both["image_scores"][:1], rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(out["image_scores"])))


def test_refinement_streams_share_fc7_and_are_softmaxes_over_background_and_classes():
    model = WSDDN(**SMALL, num_refinements=2)
    images, boxes, mask = _inputs()
    variables = model.init(jax.random.key(0), images, boxes, mask)
    assert {"refine1", "refine2"} <= set(variables["params"])
    assert variables["params"]["refine1"]["kernel"].shape == (16, 4)  # fc7 -> C + 1
    out = model.apply(variables, images, boxes, mask)
    probs = np.asarray(out["refine_probs"])
    assert probs.shape == (2, 2, 5, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    head = variables["params"]["refine2"]
    fc7 = np.asarray(out["fc7"], np.float64)
    logits = fc7 @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
    want = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs[:, 1], want, rtol=1e-4, atol=1e-6)
    assert "refine_probs" not in WSDDN(**SMALL).apply(
        {"params": {k: v for k, v in variables["params"].items() if "refine" not in k}},
        images, boxes, mask,
    )  # fmt: skip


def test_vgg16_backbone_pools_conv5_3_at_stride_16_into_7x7_and_its_fc67():
    model = WSDDN(**SMALL, backbone="vgg16", pool_size=7, num_refinements=1)
    images, boxes, mask = _inputs()
    variables = jax.eval_shape(model.init, jax.random.key(0), images, boxes, mask)
    features = variables["params"]["features"]
    assert {"conv1_1", "conv5_3"} <= set(features) and "conv1" not in features
    # fc6 takes the 7 x 7 RoI bins of conv5_3's 512 x width channels.
    assert variables["params"]["fc67"]["fc6"]["kernel"].shape == (7 * 7 * 64, 16)
    out = jax.eval_shape(model.apply, variables, images, boxes, mask)
    assert out["region_scores"].shape == (2, 5, 3) and out["refine_probs"].shape == (2, 1, 5, 4)
    with pytest.raises(ValueError, match="model.backbone='resnet'"):
        WSDDN(**SMALL, backbone="resnet").init(jax.random.key(0), images, boxes, mask)
