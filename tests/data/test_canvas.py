import numpy as np
import pytest
import tensorflow as tf

from jwsol.data import canvas
from jwsol.ops.windows import WindowGeometry


def loop_targets(boxes, labels, geom):
    """Reference: one window at a time."""
    n, c = len(boxes), geom.count
    y0, y1, box = np.zeros((n, c, c)), np.zeros((n, c, c), int), np.zeros((n, c, c, 4))
    for b in range(n):
        x1, yy1, x2, yy2 = boxes[b]
        for i in range(c):
            for j in range(c):
                top, bottom = geom.span(i)
                left, right = geom.span(j)
                y0[b, i, j] = x1 >= left and x2 <= right and yy1 >= top and yy2 <= bottom
                y1[b, i, j] = labels[b]
                box[b, i, j] = [
                    (x1 - left) / geom.size,
                    (yy1 - top) / geom.size,
                    (x2 - left) / geom.size,
                    (yy2 - top) / geom.size,
                ]
    return y0, y1, box


@pytest.mark.parametrize(
    "geom", [WindowGeometry(48, 4, 0, 5, 64), WindowGeometry(14, 2, -2, 9, 20)]
)
def test_targets_match_loop(geom):
    rng = np.random.default_rng(0)
    xy = rng.integers(-2, geom.input_size - 10, (7, 2))
    wh = rng.integers(3, geom.size - 2, (7, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, geom.input_size)], axis=1)
    labels = rng.integers(0, 10, 7)
    got = canvas.window_targets(boxes, labels, geom)
    y0, y1, box = loop_targets(boxes, labels, geom)
    np.testing.assert_array_equal(got["y0"], y0)
    np.testing.assert_array_equal(got["y1"], y1)
    np.testing.assert_allclose(got["box"], box, rtol=1e-6, atol=1e-6)
    assert got["y0"].sum() > 0


def test_box_contained_in_some_window_by_hand():
    geom = WindowGeometry(48, 4, 0, 5, 64)
    t = canvas.window_targets(np.array([[10, 20, 50, 60]]), np.array([3]), geom)
    # x: windows starting at 4 and 8 hold 10..50; y: only the window at 12 (12..60) and 16 hold 20..60.
    assert np.argwhere(t["y0"][0]).tolist() == [[3, 1], [3, 2], [4, 1], [4, 2]]
    np.testing.assert_allclose(t["box"][0, 3, 1], [6 / 48, 8 / 48, 46 / 48, 1.0])


def test_window_box_round_trip():
    geom = WindowGeometry(48, 4, -3, 6, 64)
    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 64, (9, 4)).astype(np.float32)
    t = canvas.window_targets(boxes, np.zeros(9, int), geom)
    i, j = rng.integers(0, 6, 9), rng.integers(0, 6, 9)
    back = canvas.window_box_to_canvas(t["box"][np.arange(9), i, j], i, j, geom)
    np.testing.assert_allclose(back, boxes, atol=1e-4)


def _examples(seed, n=16, rot=15.0):
    rng = np.random.default_rng(3)
    images = np.zeros((4, 28, 28), np.uint8)
    for k in range(4):
        images[k, 4 + k : 20 + k, 6 : 12 + 3 * k] = rng.integers(50, 256)
    ds = canvas.canvas_dataset(
        images,
        np.arange(4, dtype=np.int32),
        tf.data.Dataset.range(n),
        seed=seed,
        canvas_size=64,
        scale_range=(0.75, 1.25),
        max_rotation_deg=rot,
        threshold=0.0,
        sample_with_replacement=True,
    )
    return list(ds.as_numpy_iterator())


def test_canvas_box_is_the_nonzero_extent_and_inside():
    for ex in _examples(seed=0):
        image, (x1, y1, x2, y2) = ex["image"][..., 0], ex["box"]
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
        rows, cols = np.nonzero(image > 0)
        assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (y1, y2, x1, x2)


def test_canvas_deterministic_for_a_seed_and_index():
    a, b, c = _examples(seed=5), _examples(seed=5), _examples(seed=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
    assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_scale_and_rotation_change_the_box():
    sizes = [(e["box"][2] - e["box"][0]) for e in _examples(seed=1, n=64, rot=0.0)]
    assert max(sizes) > min(sizes)  # scale varies in [0.75, 1.25]


def test_max_object_extent():
    assert canvas.max_object_extent(28, 1.0, 0.0) == pytest.approx(28.0)
    assert canvas.max_object_extent(28, 1.25, 45.0) == pytest.approx(35 * np.sqrt(2))
