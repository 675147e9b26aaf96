import numpy as np
import pytest

from jwsol.ops import tta


def _box_means(images, boxes):
    """Mean pixel value inside each integer box, image by image (a NumPy loop)."""
    out = np.zeros(boxes.shape[:2])
    for n in range(len(boxes)):
        for r, (x1, y1, x2, y2) in enumerate(np.round(boxes[n]).astype(int)):
            out[n, r] = images[n, y1:y2, x1:x2].mean()
    return out


def test_flip_keeps_each_box_on_its_content_and_twice_is_identity():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    boxes = np.array([[[0, 0, 4, 8], [3, 5, 16, 9]], [[8, 2, 12, 14], [1, 1, 2, 2]]], np.float32)
    flipped, moved = tta.view(images, boxes, 16, True)
    np.testing.assert_allclose(
        _box_means(np.asarray(flipped), np.asarray(moved)), _box_means(images, boxes)
    )
    back, restored = tta.view(flipped, moved, 16, True)
    np.testing.assert_array_equal(np.asarray(back), images)
    np.testing.assert_array_equal(np.asarray(restored), boxes)


def test_rescale_moves_boxes_with_the_canvas():
    images = np.zeros((1, 16, 16, 1), np.float32)
    images[0, 4:8, 8:12] = 1.0  # a square whose box is (8, 4, 12, 8)
    big, boxes = tta.view(images, np.array([[[8, 4, 12, 8]]], np.float32), 32, False)
    assert big.shape == (1, 32, 32, 1)
    np.testing.assert_allclose(boxes, [[[16, 8, 24, 16]]])
    inside = np.asarray(big)[0, 9:15, 17:23]  # away from the bilinear edge
    np.testing.assert_allclose(inside, 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "canvas, base, scales, want",
    [
        (320, 320, (), (320,)),
        (320, 320, (256, 320, 384), (256, 320, 384)),
        (1600, 688, (688, 1200), (1600, 2791)),
    ],
)
def test_canvas_sizes_scale_the_canvas_by_scale_over_base(canvas, base, scales, want):
    assert tta.canvas_sizes(canvas, base, scales) == want


@pytest.mark.parametrize("size, flip", [(64, True), (80, False), (48, True)])
def test_unview_boxes_undoes_the_views_proposal_mapping(size, flip):
    rng = np.random.default_rng(size)
    xy = rng.uniform(0, 40, (2, 5, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 20, (2, 5, 2))], -1).astype(np.float32)
    images = np.zeros((2, 64, 64, 3), np.float32)
    _, moved = tta.view(images, boxes, size, flip)
    np.testing.assert_allclose(
        np.asarray(tta.unview_boxes(moved, 64, size, flip)), boxes, atol=1e-4
    )
