"""roi_pool / roi_align against loop references of torchvision's CPU kernels (NCHW there,
NHWC here), written independently below from the kernels' documented semantics."""

import math

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

from jwsol.ops import roi_pool as rp


def c_round(x: np.float32) -> int:
    """C's round() on a float32: halves away from zero."""
    x = float(x)
    return int(math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)) if x != 0 else 0


def reference_roi_pool(features, rois, pooled, scale):
    """Loop version; returns (output [R, ph, pw, C], argmax flat index into H*W or -1)."""
    ph_n, pw_n = pooled
    height, width, channels = features.shape
    out = np.zeros((len(rois), ph_n, pw_n, channels), np.float32)
    argmax = np.full(out.shape, -1, np.int64)
    scale = np.float32(scale)
    for r, roi in enumerate(np.asarray(rois, np.float32)):
        x1, y1, x2, y2 = (c_round(np.float32(v) * scale) for v in roi)
        roi_w = max(x2 - x1 + 1, 1)
        roi_h = max(y2 - y1 + 1, 1)
        bin_h = np.float32(roi_h) / np.float32(ph_n)
        bin_w = np.float32(roi_w) / np.float32(pw_n)
        for i in range(ph_n):
            for j in range(pw_n):
                h0 = int(np.floor(np.float32(i) * bin_h)) + y1
                h1 = int(np.ceil(np.float32(i + 1) * bin_h)) + y1
                w0 = int(np.floor(np.float32(j) * bin_w)) + x1
                w1 = int(np.ceil(np.float32(j + 1) * bin_w)) + x1
                h0, h1 = min(max(h0, 0), height), min(max(h1, 0), height)
                w0, w1 = min(max(w0, 0), width), min(max(w1, 0), width)
                if h1 <= h0 or w1 <= w0:
                    continue
                # The kernel scans rows then columns keeping the first strict maximum:
                # NumPy's argmax over the row-major flattened bin picks the same cell.
                region = features[h0:h1, w0:w1].reshape(-1, channels)
                first = np.argmax(region, axis=0)  # [C]
                out[r, i, j] = region[first, np.arange(channels)]
                argmax[r, i, j] = (h0 + first // (w1 - w0)) * width + w0 + first % (w1 - w0)
    return out, argmax


def reference_roi_align(features, rois, pooled, scale, sampling_ratio, aligned):
    ph_n, pw_n = pooled
    channels = features.shape[2]
    out = np.zeros((len(rois), ph_n, pw_n, channels), np.float64)
    for r, roi in enumerate(np.asarray(rois, np.float64)):
        offset = 0.5 if aligned else 0.0
        sx, sy, ex, ey = (v * scale - offset for v in roi)
        rw, rh = ex - sx, ey - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph_n, rw / pw_n
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph_n)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw_n)
        count = max(gh * gw, 1)
        for i in range(ph_n):
            for j in range(pw_n):
                total = np.zeros(channels)
                for iy in range(max(gh, 0)):
                    y = sy + i * bh + (iy + 0.5) * bh / gh
                    for ix in range(max(gw, 0)):
                        x = sx + j * bw + (ix + 0.5) * bw / gw
                        total += bilinear(features, y, x)
                out[r, i, j] = total / count
    return out


def bilinear(features, y, x):
    height, width = features.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    f = features.astype(np.float64)
    return hy * hx * f[y0, x0] + hy * lx * f[y0, x1] + ly * hx * f[y1, x0] + ly * lx * f[y1, x1]


def random_rois(rng, count, image_h, image_w):
    """Boxes inside, across the border, tiny, larger than the image, malformed, at halves."""
    x1 = rng.uniform(-0.3 * image_w, 1.1 * image_w, count)
    y1 = rng.uniform(-0.3 * image_h, 1.1 * image_h, count)
    x2 = x1 + rng.uniform(-4, 1.3 * image_w, count)
    y2 = y1 + rng.uniform(-4, 1.3 * image_h, count)
    rois = np.stack([x1, y1, x2, y2], 1).astype(np.float32)
    rois[: count // 4] = np.round(rois[: count // 4] * 2) / 2  # exact .5 after scale 1
    rois[count // 4 : count // 4 + 3] = [[0, 0, 0, 0], [3, 3, 3.4, 3.2], [-50, -50, -20, -20]]
    return rois


@pytest.mark.parametrize(
    "shape, pooled, scale",
    [((13, 13, 5), (6, 6), 1 / 16), ((9, 11, 3), (7, 5), 0.5), ((5, 4, 2), (3, 3), 1.0)],
)
def test_roi_pool_matches_reference(shape, pooled, scale):
    rng = np.random.default_rng(0)
    features = rng.normal(size=shape).astype(np.float32)
    image_h, image_w = shape[0] / scale, shape[1] / scale
    rois = random_rois(rng, 40, image_h, image_w)
    expected, _ = reference_roi_pool(features, rois, pooled, scale)
    got = rp.roi_pool(jnp.asarray(features), jnp.asarray(rois), pooled, scale)
    assert got.shape == (40, *pooled, shape[2])
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_roi_pool_round_half_away_from_zero():
    # Values fall to the right (10 - column), so a bin's max is its leftmost column.
    features = jnp.broadcast_to(10.0 - jnp.arange(8.0)[None, :, None], (8, 8, 1))
    # Roi 0: x1 * 0.5 = 2.5 rounds to 3 (C round), not 2 (round half to even): max 7, not 8.
    # Roi 1: x2 * 0.5 = -0.5 rounds to -1, not 0: columns [-5, 0) clip to nothing -> 0, not 10.
    rois = np.array([[5.0, 0.0, 9.0, 3.0], [-10.0, 0.0, -1.0, 3.0]], np.float32)
    got = np.asarray(rp.roi_pool(features, jnp.asarray(rois), 1, 0.5))
    expected, _ = reference_roi_pool(np.asarray(features), rois, (1, 1), 0.5)
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0, 0, 0] == 7 and got[1, 0, 0, 0] == 0


def test_roi_pool_bin_edges_where_a_reciprocal_would_be_off():
    # Extent 14 in 6 bins: 14 / 6 = 2.3333333f and 3 * that is exactly 7, so bin 2 ends at
    # ceil(7) = 7. Computed as 14 * (1/6) it is 2.3333335f, 3x rounds to 7.0000005, ceil 8:
    # XLA does that rewrite for constant divisors, which jwsol's exact division avoids.
    features = jnp.broadcast_to(jnp.arange(16.0)[None, :, None], (1, 16, 1))
    rois = jnp.array([[0.0, 0.0, 13.0, 0.0]])  # columns 0..13: extent 14
    got = np.asarray(rp.roi_pool(features, rois, (1, 6), 1.0))[0, 0, :, 0]
    expected, _ = reference_roi_pool(np.asarray(features), np.asarray(rois), (1, 6), 1.0)
    np.testing.assert_array_equal(got, expected[0, 0, :, 0])
    assert got[2] == 6  # bin 2 = columns [4, 7)


def test_exact_division_matches_ieee():
    rng = np.random.default_rng(6)
    x = np.concatenate(
        [np.arange(0, 5000, dtype=np.float32), rng.uniform(-1e4, 1e4, 5000).astype(np.float32)]
    )
    divide = jax.jit(rp._divide)
    for divisor in range(1, 65):
        np.testing.assert_array_equal(np.asarray(divide(x, divisor)), x / np.float32(divisor))


def test_roi_pool_empty_bins_are_zero():
    features = jnp.full((4, 4, 2), -5.0)
    # Entirely outside the map: every bin clips to nothing -> 0, not -5 or -FLT_MAX.
    rois = jnp.array([[100.0, 100.0, 120.0, 120.0], [0.0, 0.0, 3.0, 3.0]])
    got = np.asarray(rp.roi_pool(features, rois, 2, 1.0))
    assert np.all(got[0] == 0)
    assert np.all(got[1] == -5)


def test_batched_roi_pool_with_padding_under_jit():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(3, 10, 12, 4)).astype(np.float32)
    rois = np.stack([random_rois(rng, 16, 80, 96) for _ in range(3)])
    rois[:, 10:] = 0  # padded slots, as a data pipeline fills them
    fn = jax.jit(lambda f, r: rp.batched_roi_pool(f, r, (3, 4), 0.125))
    got = np.asarray(fn(features, rois))
    assert got.shape == (3, 16, 3, 4, 4)
    for n in range(3):
        expected, _ = reference_roi_pool(features[n], rois[n], (3, 4), 0.125)
        np.testing.assert_array_equal(got[n], expected)


@pytest.mark.parametrize("ties", [False, True])
def test_roi_pool_gradient_goes_to_the_argmax(ties):
    rng = np.random.default_rng(2)
    features = rng.normal(size=(7, 9, 3)).astype(np.float32)
    if ties:  # few distinct values: the first maximum in row-major order must get it all
        features = np.round(features).clip(-1, 1)
    rois = random_rois(rng, 12, 28, 36)
    weights = rng.normal(size=(12, 2, 3, 3)).astype(np.float32)

    def loss(f):
        return jnp.sum(rp.roi_pool(f, jnp.asarray(rois), (2, 3), 0.25) * weights)

    grad = np.asarray(jax.grad(loss)(jnp.asarray(features)))
    _, argmax = reference_roi_pool(features, rois, (2, 3), 0.25)
    expected = np.zeros(features.shape, np.float64)
    for index in np.ndindex(argmax.shape):
        flat = argmax[index]
        if flat >= 0:
            expected[flat // 9, flat % 9, index[3]] += weights[index]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected).sum() > 0


def test_roi_pool_gradient_finite_differences():
    # Well-separated values: a small step never changes which cell is the max.
    rng = np.random.default_rng(3)
    features = rng.permutation(6 * 6 * 2).reshape(6, 6, 2).astype(np.float32)
    rois = jnp.array([[0.0, 0.0, 5.0, 5.0], [1.0, 2.0, 4.0, 3.0]])
    fn = jax.jit(lambda f: rp.roi_pool(f, rois, 2, 1.0))
    jax.test_util.check_grads(fn, (jnp.asarray(features),), order=1, eps=0.1)


@pytest.mark.parametrize("sampling_ratio", [1, 2, -1])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_matches_reference(sampling_ratio, aligned):
    rng = np.random.default_rng(4)
    features = rng.normal(size=(9, 11, 3)).astype(np.float32)
    rois = random_rois(rng, 24, 36, 44)
    expected = reference_roi_align(features, rois, (3, 4), 0.25, sampling_ratio, aligned)
    fn = jax.jit(
        lambda f, r: rp.roi_align(f, r, (3, 4), 0.25, sampling_ratio, aligned, max_samples=8)
    )
    got = np.asarray(fn(jnp.asarray(features), jnp.asarray(rois)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_roi_align_adaptive_cap_raises_eagerly():
    features = jnp.zeros((4, 4, 1))
    rois = jnp.array([[0.0, 0.0, 400.0, 4.0]])
    with pytest.raises(ValueError, match="max_samples"):
        rp.roi_align(features, rois, 2, 1.0, sampling_ratio=0, max_samples=3)


def test_roi_align_gradients():
    rng = np.random.default_rng(5)
    features = jnp.asarray(rng.normal(size=(6, 7, 2)).astype(np.float32))
    rois = jnp.asarray(random_rois(rng, 6, 24, 28))
    batched = jax.jit(
        lambda f: rp.batched_roi_align(
            f, rois[None], 2, spatial_scale=0.25, sampling_ratio=2, aligned=True
        )
    )
    jax.test_util.check_grads(batched, (features[None],), order=1, modes=["rev"], eps=1e-2)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="features"):
        rp.roi_pool(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4)), 2)
    with pytest.raises(ValueError, match="rois"):
        rp.roi_pool(jnp.zeros((4, 4, 2)), jnp.zeros((1, 5)), 2)
    with pytest.raises(ValueError, match="output_size"):
        rp.roi_align(jnp.zeros((4, 4, 2)), jnp.zeros((1, 4)), (0, 2))
