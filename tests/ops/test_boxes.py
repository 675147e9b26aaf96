"""Boxes and NMS against an independent oracle of torchvision's CPU NMS kernel (a plain
double loop written below) and hand-worked cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jwsol.ops import boxes as B
from jwsol.ops import boxes_np as N


def oracle_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """torchvision's CPU algorithm, loop for loop: stable descending order (torch's
    sort(stable=True), which is also what its default sort gives for <= 16 boxes), keep the
    first unsuppressed box, suppress later boxes whose IoU is strictly above the threshold."""
    order = torch.sort(torch.from_numpy(scores), descending=True, stable=True)[1].tolist()
    zero = boxes.dtype.type(0)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    suppressed = [False] * len(boxes)
    keep = []
    for position, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[position + 1 :]:
            if suppressed[j]:
                continue
            p, q = boxes[i], boxes[j]
            w = max(zero, min(p[2], q[2]) - max(p[0], q[0]))
            h = max(zero, min(p[3], q[3]) - max(p[1], q[1]))
            inter = w * h
            with np.errstate(invalid="ignore"):
                overlap = inter / (areas[i] + areas[j] - inter)  # NaN for 0/0: not > t
            if overlap > threshold:
                suppressed[j] = True
    return keep


def random_boxes(rng, count, size=50.0, dtype=np.float32):
    xy = rng.uniform(0, size, (count, 2))
    wh = rng.uniform(1, size / 2, (count, 2))
    return np.concatenate([xy, xy + wh], 1).astype(dtype)


def test_area_and_pairwise_iou_hand_worked():
    a = jnp.array([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    b = jnp.array([[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0], [0.0, 0.0, 5.0, 20.0]])
    np.testing.assert_allclose(B.area(a), [100, 100])
    expected = np.array(
        [
            [1.0, 0.0, 50 / 150],  # touching edges do not overlap
            [25 / 175, 25 / 175, 0.0],
        ]
    )
    np.testing.assert_allclose(B.pairwise_iou(a, b), expected, rtol=1e-6)


def test_pairwise_iou_matches_direct_formula_and_degenerate_is_zero():
    rng = np.random.default_rng(0)
    a = random_boxes(rng, 7).astype(np.float64)
    b = random_boxes(rng, 5).astype(np.float64)
    expected = np.zeros((7, 5))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = w * h
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            expected[i, j] = inter / union
    np.testing.assert_allclose(B.pairwise_iou(jnp.asarray(a), jnp.asarray(b)), expected, rtol=1e-5)
    zero = jnp.zeros((2, 4))
    np.testing.assert_array_equal(B.pairwise_iou(zero, zero), np.zeros((2, 2)))


def test_devkit_plus_one_iou_by_hand():
    # Inclusive pixels 0..9 x 0..9 and 0..9 x 0..4: 50 of 100 pixels.
    np.testing.assert_allclose(N.iou_matrix([[0, 0, 9, 9]], [[0, 0, 9, 4]], True), [[0.5]])
    np.testing.assert_allclose(N.iou_matrix([[0, 0, 10, 10]], [[0, 0, 10, 5]]), [[0.5]])
    np.testing.assert_allclose(
        B.pairwise_iou(jnp.array([[0.0, 0, 9, 9]]), jnp.array([[0.0, 0, 9, 4]]), True), [[0.5]]
    )


@pytest.mark.parametrize("plus_one", [False, True])
def test_numpy_and_jnp_iou_are_twins(plus_one):
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 9), random_boxes(rng, 6)
    b[0] = a[0]  # an exact match
    b[1] = [60, 60, 70, 70]  # disjoint from every box of a
    matrix = N.iou_matrix(a, b, plus_one)
    assert matrix.dtype == np.float32 and matrix.shape == (9, 6)
    np.testing.assert_allclose(
        matrix, B.pairwise_iou(jnp.asarray(a), jnp.asarray(b), plus_one), rtol=1e-6
    )
    assert matrix[0, 0] == pytest.approx(1.0) and np.all(matrix[:, 1] == 0)
    rows = N.iou(a[:6], b, plus_one)  # row-wise: the diagonal of the matrix
    np.testing.assert_array_equal(rows, np.diagonal(matrix))
    jnp_rows = B.iou(jnp.asarray(a[:6]), jnp.asarray(b), plus_one)
    np.testing.assert_allclose(jnp_rows, rows, rtol=1e-6)
    assert N.iou_matrix(np.zeros((2, 4)), np.zeros((3, 4))).tolist() == [[0.0] * 3] * 2
    assert N.iou_matrix([[0, 0, 2, 2]], [[1, 1, 3, 3]]).dtype == np.float64  # integers


def test_clip_boxes_twins():
    boxes = np.array([[-5.0, -1.0, 30.0, 8.0], [2.0, 3.0, 4.0, 50.0]])
    expected = [[0, 0, 20, 8], [2, 3, 4, 10]]
    np.testing.assert_array_equal(B.clip_boxes(jnp.asarray(boxes), height=10, width=20), expected)
    clipped = N.clip_boxes(boxes, height=10, width=20)
    np.testing.assert_array_equal(clipped, expected)
    assert clipped.dtype == np.float32


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("count", [1, 10, 60])
def test_nms_matches_oracle_on_random_boxes(threshold, count):
    rng = np.random.default_rng(count)
    boxes = random_boxes(rng, count)
    scores = rng.uniform(size=count).astype(np.float32)
    expected = oracle_nms(boxes, scores, threshold)
    np.testing.assert_array_equal(N.nms_numpy(boxes, scores, threshold), expected)
    np.testing.assert_array_equal(B.nms(boxes, scores, threshold), expected)


def test_nms_ties_keep_lower_index_first():
    # Identical boxes with equal scores: only the lowest index survives; order of kept boxes
    # is by score, ties by index.
    boxes = np.array([[0, 0, 10, 10]] * 3 + [[50, 50, 60, 60]] * 2, np.float32)
    scores = np.array([0.5, 0.5, 0.5, 0.9, 0.9], np.float32)
    assert N.nms_numpy(boxes, scores, 0.5).tolist() == [3, 0]
    assert np.asarray(B.nms(boxes, scores, 0.5)).tolist() == [3, 0]
    assert oracle_nms(boxes, scores, 0.5) == [3, 0]


def test_nms_threshold_is_strict():
    # IoU of these two is exactly 0.5 (intersection 50, union 100).
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert B.nms(boxes, scores, 0.5).tolist() == [0, 1]  # 0.5 is not > 0.5: kept
    assert B.nms(boxes, scores, 0.4999).tolist() == [0]
    assert N.nms_numpy(boxes, scores, 0.5).tolist() == [0, 1]


def test_nms_identical_boxes_and_zero_area():
    boxes = np.array([[1, 1, 5, 5], [1, 1, 5, 5], [3, 3, 3, 3], [3, 3, 3, 3]], np.float32)
    scores = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    # Zero-area boxes have IoU 0/0 with each other: never suppressed (torchvision: NaN > t).
    assert B.nms(boxes, scores, 0.5).tolist() == [3, 2, 1]
    assert oracle_nms(boxes, scores, 0.5) == [3, 2, 1]


def test_nms_empty_input():
    empty = np.zeros((0, 4), np.float32)
    assert B.nms(empty, np.zeros((0,), np.float32), 0.5).shape == (0,)
    assert N.nms_numpy(empty, np.zeros((0,), np.float32), 0.5).shape == (0,)
    indices, kept = B.nms_padded(jnp.zeros((0, 4)), jnp.zeros((0,)), 0.5, max_output=3)
    assert indices.tolist() == [-1, -1, -1] and not kept.any()


def test_nms_padded_under_jit_with_max_output_and_valid_mask():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 40)
    scores = rng.uniform(size=40).astype(np.float32)
    valid = np.arange(40) < 30  # the last 10 are padding
    expected = oracle_nms(boxes[:30], scores[:30], 0.4)

    @jax.jit
    def run(b, s, v):
        return B.nms_padded(b, s, 0.4, max_output=50, valid=v)

    indices, kept = run(boxes, scores, valid)
    assert indices.shape == (50,)
    assert np.asarray(indices[kept]).tolist() == expected
    assert np.all(np.asarray(indices[~kept]) == -1)
    top3, kept3 = jax.jit(lambda b, s: B.nms_padded(b, s, 0.4, max_output=3))(boxes, scores)
    assert np.asarray(top3).tolist() == oracle_nms(boxes, scores, 0.4)[:3] and kept3.all()
    assert N.nms_numpy(boxes, scores, 0.4, max_output=3).tolist() == top3.tolist()


def test_nms_padded_vmaps_over_a_batch():
    rng = np.random.default_rng(4)
    boxes = np.stack([random_boxes(rng, 20) for _ in range(3)])
    scores = rng.uniform(size=(3, 20)).astype(np.float32)
    indices, kept = jax.vmap(lambda b, s: B.nms_padded(b, s, 0.3, max_output=20))(boxes, scores)
    for n in range(3):
        assert np.asarray(indices[n][kept[n]]).tolist() == oracle_nms(boxes[n], scores[n], 0.3)


def test_nms_rejects_bad_shapes():
    with pytest.raises(ValueError, match="boxes"):
        B.nms(np.zeros((3, 5)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="scores"):
        N.nms_numpy(np.zeros((3, 4)), np.zeros(4), 0.5)
