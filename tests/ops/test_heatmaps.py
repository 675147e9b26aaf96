"""Heatmap -> boxes on hand-made maps, and components against a breadth-first flood fill."""

from collections import deque

import numpy as np
import pytest

from jwsol.ops import heatmaps as hm


def test_single_blob_box_uses_pixel_edges():
    heatmap = np.zeros((8, 8))
    heatmap[2:5, 3:7] = 1.0  # rows 2..4, columns 3..6
    np.testing.assert_array_equal(hm.boxes_from_heatmap(heatmap), [[3, 2, 7, 5]])


def test_largest_component_or_all():
    heatmap = np.zeros((10, 10))
    heatmap[0:2, 0:2] = 1.0  # 4 pixels
    heatmap[5:9, 4:9] = 0.8  # 20 pixels
    np.testing.assert_array_equal(hm.boxes_from_heatmap(heatmap, threshold=0.5), [[4, 5, 9, 9]])
    np.testing.assert_array_equal(
        hm.boxes_from_heatmap(heatmap, threshold=0.5, all_components=True),
        [[0, 0, 2, 2], [4, 5, 9, 9]],
    )
    # Above 0.8 only the small blob is left.
    np.testing.assert_array_equal(hm.boxes_from_heatmap(heatmap, threshold=0.9), [[0, 0, 2, 2]])


def test_diagonal_neighbours_are_connected():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True
    np.testing.assert_array_equal(hm.boxes_from_mask(mask, all_components=True), [[0, 0, 3, 3]])


def test_threshold_is_a_fraction_of_the_normalized_range():
    heatmap = np.array([[2.0, 4.0, 6.0, 10.0]])
    # minmax: (x - 2) / 8 = 0, .25, .5, 1 -> >= 0.5 keeps columns 2..3.
    np.testing.assert_array_equal(hm.boxes_from_heatmap(heatmap, threshold=0.5), [[2, 0, 4, 1]])
    # max: x / 10 = .2, .4, .6, 1 -> >= 0.5 keeps columns 2..3; >= 0.3 keeps 1..3.
    np.testing.assert_array_equal(
        hm.boxes_from_heatmap(heatmap, threshold=0.3, normalize="max"), [[1, 0, 4, 1]]
    )
    np.testing.assert_array_equal(
        hm.boxes_from_heatmap(heatmap, threshold=0.3, normalize="minmax"), [[2, 0, 4, 1]]
    )


def test_resize_to_image_first():
    heatmap = np.zeros((4, 4))
    heatmap[:2, :2] = 1.0
    # Nearest: each cell becomes 2x2 pixels. Bilinear (pixel centres aligned): pixel 3 samples
    # 0.75 of cell 1 and 0.25 of cell 2 -> 0.75 >= 0.5; pixel 4 -> 0.25: same box.
    for interpolation in ("nearest", "bilinear"):
        boxes = hm.boxes_from_heatmap(heatmap, (8, 8), 0.5, interpolation=interpolation)
        np.testing.assert_array_equal(boxes, [[0, 0, 4, 4]])
    # Non-square image: heights and widths scale separately.
    boxes = hm.boxes_from_heatmap(heatmap, (4, 12), 0.5, interpolation="nearest")
    np.testing.assert_array_equal(boxes, [[0, 0, 6, 2]])


def test_constant_or_empty_gives_no_box():
    assert hm.boxes_from_heatmap(np.full((5, 5), 3.0), threshold=0.5).shape == (0, 4)
    # Threshold 0 keeps everything, even a constant map: the whole image.
    np.testing.assert_array_equal(
        hm.boxes_from_heatmap(np.ones((5, 6)), threshold=0.0), [[0, 0, 6, 5]]
    )


def flood_fill_boxes(mask):
    seen = np.zeros_like(mask)
    boxes, sizes = [], []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        queue, pixels = deque([(y0, x0)]), []
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                    if inside and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        ys, xs = zip(*pixels)
        boxes.append([min(xs), min(ys), max(xs) + 1, max(ys) + 1])
        sizes.append(len(pixels))
    return boxes, sizes


@pytest.mark.parametrize("seed", range(5))
def test_components_match_flood_fill(seed):
    mask = np.random.default_rng(seed).uniform(size=(24, 30)) < 0.3
    boxes, sizes = flood_fill_boxes(mask)
    got = hm.boxes_from_mask(mask, all_components=True)
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, boxes))
    largest = hm.boxes_from_mask(mask)
    assert largest.tolist() == [boxes[int(np.argmax(sizes))]]


def test_bad_heatmap():
    with pytest.raises(ValueError, match="heatmap"):
        hm.boxes_from_heatmap(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        hm.boxes_from_heatmap(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="interpolation"):
        hm.resize_heatmap(np.zeros((2, 2)), (4, 4), "lanczos")
