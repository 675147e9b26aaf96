import numpy as np

from jwsol.ops import box_coder


def test_encode_matches_a_hand_worked_case():
    # centre (5, 10) size 10 x 20 -> centre (10, 20) size 10 x 40
    deltas = box_coder.encode(np.array([0.0, 0, 10, 20]), np.array([5.0, 0, 15, 40]))
    np.testing.assert_allclose(np.asarray(deltas), [5.0, 5.0, 0.0, np.log(2) / 0.2], rtol=1e-6)


def test_decode_inverts_encode_on_random_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (50, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 60, (50, 2))], 1).astype(np.float32)
    xy = rng.uniform(0, 100, (50, 2))
    targets = np.concatenate([xy, xy + rng.uniform(2, 60, (50, 2))], 1).astype(np.float32)
    back = box_coder.decode(boxes, box_coder.encode(boxes, targets))
    np.testing.assert_allclose(np.asarray(back), targets, rtol=1e-5, atol=1e-3)


def test_zero_deltas_keep_the_box_and_huge_ones_stay_finite():
    boxes = np.array([[3.0, 4.0, 13.0, 9.0], [5.0, 5.0, 5.0, 5.0]], np.float32)
    np.testing.assert_allclose(np.asarray(box_coder.decode(boxes[:1], np.zeros(4))), boxes[:1])
    out = np.asarray(box_coder.decode(boxes, np.full(4, 1e4, np.float32)))
    assert np.all(np.isfinite(out))
    assert np.all(np.isfinite(np.asarray(box_coder.encode(boxes[1:], boxes[:1]))))
