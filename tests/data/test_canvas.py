import numpy as np
import pytest

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


def _examples(seed, n=16, rot=15.0, images=None, crop=None):
    if images is None:
        rng = np.random.default_rng(3)
        images = np.zeros((4, 28, 28), np.uint8)
        for k in range(4):
            images[k, 4 + k : 20 + k, 6 : 12 + 3 * k] = rng.integers(50, 256)
    ds = canvas.canvas_dataset(
        images,
        np.arange(len(images), dtype=np.int32),
        lambda: np.array_split(np.arange(n), range(5, n, 5)),
        batch_size=None,
        seed=seed,
        canvas_size=64,
        scale_range=(0.75, 1.25),
        max_rotation_deg=rot,
        threshold=0.0,
        sample_with_replacement=True,
        crop=crop,
    )
    batches = list(ds.as_numpy_iterator())
    return [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b["index"]))]


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


def test_min_crop_size_by_hand():
    # Objects up to 28 * 1.25 * (cos 15 + sin 15) = 42.87 px: 43 (+1 for bilinear) + 4 - 1.
    extent = canvas.max_object_extent(28, 1.25, 15.0)
    assert canvas.min_crop_size(extent, 4) == 47
    assert canvas.min_crop_size(10.0, 1) == 11


@pytest.mark.parametrize("crop_size", [56, 48])
def test_crop_is_a_grid_aligned_part_of_the_canvas_that_holds_the_object(crop_size):
    # Full 28x28 squares at scale up to 1.25 and 15 degrees: the widest objects there are.
    images = np.full((2, 28, 28), 255, np.uint8)
    full = _examples(seed=4, n=300, images=images)
    cropped = _examples(seed=4, n=300, images=images, crop=(crop_size, 4))
    geom = WindowGeometry(48, 4, 0, 3, 56)  # the default net's windows on a 56 px crop
    corners = set()
    for f, c in zip(full, cropped):
        x1, y1, x2, y2 = c["box"]
        assert 0 <= x1 < x2 <= crop_size and 0 <= y1 < y2 <= crop_size
        dx, dy = f["box"][:2] - c["box"][:2]
        np.testing.assert_array_equal(f["box"] - c["box"], [dx, dy, dx, dy])
        assert dx % 4 == 0 and dy % 4 == 0
        np.testing.assert_array_equal(
            f["image"][dy : dy + crop_size, dx : dx + crop_size], c["image"]
        )
        assert c["label"] == f["label"]
        corners.add((int(dx), int(dy)))
        if crop_size == 56:  # some window of the crop holds the whole object
            assert canvas.window_targets(c["box"][None], c["label"][None], geom)["y0"].sum() >= 1
    assert len(corners) > 4  # the corner is random, not always the same


def test_crop_off_the_window_grid_is_an_error():
    with pytest.raises(ValueError, match="multiple of 4"):
        _examples(seed=0, n=1, crop=(50, 4))


@pytest.mark.slow
def test_batches_follow_the_plan_resume_and_carry_window_targets():
    from jwsol.data import fake

    images, labels = fake.mnist("test")
    geom = WindowGeometry(size=48, stride=4, offset=0, count=5, input_size=64)
    kwargs = {"canvas_size": 64, "scale_range": (0.75, 1.25), "max_rotation_deg": 15.0,
              "threshold": 0.0}  # fmt: skip
    train = canvas.train_batches(images, labels, geom=geom, seed=1, start_step=0, batch_size=4,
                                 **kwargs)  # fmt: skip
    first = [next(train) for _ in range(3)]
    resumed = next(canvas.train_batches(images, labels, geom=geom, seed=1, start_step=2,
                                        batch_size=4, **kwargs))  # fmt: skip
    for key in first[2]:
        np.testing.assert_array_equal(resumed[key], first[2][key], err_msg=key)
    halves = [
        next(canvas.train_batches(images, labels, geom=geom, seed=1, start_step=1, batch_size=4,
                                  process_index=p, process_count=2, **kwargs))
        for p in range(2)
    ]  # fmt: skip
    np.testing.assert_array_equal(np.concatenate([h["image"] for h in halves]), first[1]["image"])
    y0, y1, box = loop_targets(first[0]["box"], first[0]["label"], geom)
    np.testing.assert_array_equal(first[0]["target_y0"], y0)
    np.testing.assert_array_equal(first[0]["target_y1"], y1)
    np.testing.assert_allclose(first[0]["target_box"], box, atol=1e-6)
    evals = list(canvas.eval_batches(images[:10], labels[:10], geom=geom, seed=2, batch_size=4,
                                     **kwargs))  # fmt: skip
    assert [len(b["label"]) for b in evals] == [4, 4, 2]  # one canvas per image, last batch short
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in evals]), labels[:10])
