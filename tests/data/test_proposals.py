"""Proposal files, selective search, the grid, cleaning and caching."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jwsol.data import fake, proposals
from jwsol.data.proposals import mat as proposal_mat
from jwsol.data.proposals import search as proposal_search
from jwsol.errors import DataError
from jwsol.ops.boxes_np import iou_matrix


def test_read_fast_rcnn_layout(tmp_path):
    path = str(tmp_path / "ss.mat")
    # (y1, x1, y2, x2), 1-based: rows 5..20 (y) and columns 11..40 (x).
    fake.write_mat(path, ["000005", "000007"], [[[5, 11, 20, 40]], [[1, 1, 8, 9], [2, 3, 4, 5]]])
    mat = proposal_mat.read_mat(path)
    assert mat.ids == ["000005", "000007"] and mat.scores is None
    joined, order = proposal_mat.join_mat(mat, {"000005": (50, 60), "000007": (10, 10)}, "yxyx")
    assert order == "yxyx"
    boxes, scores = joined["000005"]
    np.testing.assert_array_equal(boxes, [[10, 4, 40, 20]])  # x1-1, y1-1, x2, y2
    assert scores is None
    np.testing.assert_array_equal(joined["000007"][0], [[0, 0, 9, 8], [2, 1, 5, 4]])


def test_read_course_layout_with_scores_and_row_ids(tmp_path):
    path = str(tmp_path / "course.mat")
    fake.write_mat(
        path,
        ["a", "b"],
        [[[1, 1, 4, 4], [2, 2, 3, 3]], [[1, 1, 2, 2]]],
        scores=[[0.2, 0.9], [0.5]],
        ids_as_column=False,
    )
    mat = proposal_mat.read_mat(path)
    assert mat.ids == ["a", "b"]
    np.testing.assert_allclose(mat.scores[0], [0.2, 0.9])
    joined, _ = proposal_mat.join_mat(mat, {"a": (10, 10)}, "yxyx")
    assert set(joined) == {"a"}  # only the ids asked for
    np.testing.assert_allclose(joined["a"][1], [0.2, 0.9])


def test_bad_mat_files_name_the_file(tmp_path):
    import scipy.io

    with pytest.raises(DataError, match="nothere.mat: proposal file not found"):
        proposal_mat.read_mat(str(tmp_path / "nothere.mat"))
    garbage = str(tmp_path / "garbage.mat")
    with open(garbage, "wb") as f:
        f.write(b"\x00" * 300)
    with pytest.raises(DataError, match="garbage.mat"):
        proposal_mat.read_mat(garbage)
    no_boxes = str(tmp_path / "noboxes.mat")
    scipy.io.savemat(no_boxes, {"images": np.array(["a"], dtype=object), "rois": np.zeros([1, 4])})
    with pytest.raises(DataError, match=r"noboxes.mat: missing variable\(s\) \['boxes'\]"):
        proposal_mat.read_mat(no_boxes)
    uneven = str(tmp_path / "uneven.mat")
    fake.write_mat(uneven, ["a"], [[[1, 1, 2, 2], [1, 1, 3, 3]]], scores=[[0.5]])
    with pytest.raises(DataError, match="uneven.mat: image 'a' has 2 boxes but 1 boxScores"):
        proposal_mat.read_mat(uneven)
    wide = str(tmp_path / "wide.mat")
    fake.write_mat(wide, ["a"], [np.ones([2, 5])])
    with pytest.raises(DataError, match=r"wide.mat: boxes of image 'a' have shape \(2, 5\)"):
        proposal_mat.read_mat(wide)


def test_coordinate_order_is_checked_against_image_sizes(tmp_path):
    # Wide images (200 x 50): boxes stored as (x1, y1, x2, y2) do not fit when read as yxyx.
    rng = np.random.default_rng(0)
    ids = [f"{i:06d}" for i in range(5)]
    boxes = []
    for _ in ids:
        x1 = rng.uniform(1, 150, 20)
        y1 = rng.uniform(1, 30, 20)
        boxes.append(
            np.stack([x1, y1, x1 + rng.uniform(10, 49, 20), y1 + rng.uniform(5, 19, 20)], 1)
        )
    path = str(tmp_path / "xyxy.mat")
    fake.write_mat(path, ids, boxes)
    sizes = dict.fromkeys(ids, (50, 200))
    mat = proposal_mat.read_mat(path)
    with pytest.raises(
        DataError,
        match="xyxy.mat: with coordinate order 'yxyx'.*set data.proposals.mat_order='xyxy'",
    ):
        proposal_mat.join_mat(mat, sizes, "yxyx")
    joined, order = proposal_mat.join_mat(mat, sizes, "auto")
    assert order == "xyxy"
    np.testing.assert_allclose(joined[ids[0]][0], boxes[0] - [1, 1, 0, 0], rtol=1e-6)
    # A file for other images fits neither order.
    with pytest.raises(DataError, match="does not belong to these images"):
        proposal_mat.join_mat(mat, dict.fromkeys(ids, (20, 20)), "yxyx")


def test_clean_proposals_by_hand():
    boxes = np.array(
        [
            [-5, 2, 30, 20],  # crosses the left border -> clipped to x1 = 0
            [0, 2, 30, 20],  # duplicate of the clipped box above
            [10, 10, 12, 30],  # 2 wide: under min_size 3
            [40, 5, 20, 25],  # x2 < x1
            [50, 50, 70, 70],  # entirely outside the 40 x 60 (w x h) image -> empty after clipping
            [1, 1, 39, 59],
            [np.nan, 1, 5, 5],
        ],
        np.float32,
    )
    scores = np.array([0.5, 0.9, 0.1, 0.8, 0.7, 0.6, 0.95], np.float32)
    kept, kept_scores = proposals.clean_proposals(boxes, scores, 60, 40, min_size=3, top_k=0)
    # survivors: [0, 2, 30, 20] (first occurrence, score 0.5) and [1, 1, 39, 59] (0.6), by score.
    np.testing.assert_array_equal(kept, [[1, 1, 39, 59], [0, 2, 30, 20]])
    np.testing.assert_array_equal(kept_scores, np.float32([0.6, 0.5]))
    top, top_scores = proposals.clean_proposals(boxes, scores, 60, 40, min_size=3, top_k=1)
    np.testing.assert_array_equal(top, [[1, 1, 39, 59]])
    np.testing.assert_array_equal(top_scores, np.float32([0.6]))
    unscored, none = proposals.clean_proposals(boxes, None, 60, 40, min_size=3, top_k=1)
    assert none is None
    np.testing.assert_array_equal(
        unscored, [[0, 2, 30, 20], [1, 1, 39, 59]]
    )  # source order, no cut


def _two_rectangles() -> tuple[np.ndarray, np.ndarray]:
    image = np.full([80, 120, 3], 20, np.uint8)
    image[10:40, 15:60] = (230, 40, 40)
    image[45:75, 70:110] = (40, 220, 60)
    return image, np.array([[15, 10, 60, 40], [70, 45, 110, 75]], np.float32)


def test_selective_search_finds_rectangles():
    image, truth = _two_rectangles()
    boxes = proposal_search.selective_search(image, mode="fast")
    assert boxes.dtype == np.float32 and boxes.shape[1] == 4
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= 120) and np.all(boxes[:, [1, 3]] <= 80)
    np.testing.assert_allclose(iou_matrix(truth, boxes).max(axis=1), [1.0, 1.0])
    # Run at twice the size, the boxes come back in the original pixels.
    upscaled = proposal_search.selective_search(image, mode="fast", resize=240)
    assert iou_matrix(truth, upscaled).max(axis=1).min() > 0.9
    # Same image -> same boxes in the same order (C rand() is seeded per image).
    np.testing.assert_array_equal(proposal_search.selective_search(image), boxes)


def test_also_resize_appends_the_new_boxes_of_each_scale_once():
    image, _ = _two_rectangles()
    native = proposal_search.selective_search(image, mode="fast")
    upscaled = proposal_search.selective_search(image, mode="fast", resize=240)
    both = proposal_search.propose(image, proposal_search.SearchSettings(also_resize=(240,)))
    np.testing.assert_array_equal(both[: len(native)], native)  # the first scale leads
    seen = {tuple(b) for b in native}
    new = [b for b in upscaled if tuple(b) not in seen]
    new = [b for i, b in enumerate(new) if all(tuple(b) != tuple(a) for a in new[:i])]
    np.testing.assert_array_equal(both[len(native) :], np.array(new).reshape(-1, 4))
    capped = proposal_search.SearchSettings(also_resize=(240,), max_boxes=len(native) + 1)
    assert len(proposal_search.propose(image, capped)) == len(native) + 1
    # The cache key of settings without it is the one made before the field existed.
    assert proposal_search.SearchSettings().key() != capped.key()


def test_grid_boxes_by_hand():
    boxes = proposal_search.grid_boxes(20, 30, sizes=[10], ratios=[1.0], stride=0.5)
    # x starts 0, 5, 10, 15, 20 (last flush with 30); y starts 0, 5, 10.
    assert len(boxes) == 15
    np.testing.assert_array_equal(boxes[0], [0, 0, 10, 10])
    np.testing.assert_array_equal(boxes[-1], [20, 10, 30, 20])
    tall = proposal_search.grid_boxes(20, 30, sizes=[8], ratios=[0.25], stride=1.0)  # 4 x 16 boxes
    np.testing.assert_allclose(tall[:, 2] - tall[:, 0], 4.0)
    np.testing.assert_allclose(tall[:, 3] - tall[:, 1], 16.0)
    assert np.all(tall[:, 3] <= 20) and np.all(tall[:, 2] <= 30)


def test_compute_in_workers_equals_in_process():
    image, _ = _two_rectangles()
    items = [image, image[:, ::-1].copy(), image[::-1].copy(), image[:40], image[:, :60]]
    settings = proposal_search.SearchSettings(method="selective_search")
    serial = proposal_search.compute(items, settings, num_workers=1)
    parallel = proposal_search.compute(items, settings, num_workers=2)
    assert len(parallel) == len(items)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_compute_cached_reads_the_cache(tmp_path, monkeypatch):
    image, _ = _two_rectangles()
    settings = proposal_search.SearchSettings(method="selective_search")
    first = proposal_search.compute_cached(
        [image], ["img"], settings, cache_dir=str(tmp_path), tag="t", split="train", num_workers=1
    )
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("t_train_selective_search_")

    def fail(*args, **kwargs):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(proposal_search, "compute", fail)
    again = proposal_search.compute_cached(
        [image], ["img"], settings, cache_dir=str(tmp_path), tag="t", split="train", num_workers=1
    )
    np.testing.assert_array_equal(first[0], again[0])
    other = proposal_search.SearchSettings(method="selective_search", resize=160)
    assert proposal_search.cache_path(str(tmp_path), "t", "train", other, ["img"]) != os.path.join(
        str(tmp_path), files[0]
    )
    with open(os.path.join(tmp_path, files[0]), "wb") as f:
        f.write(b"junk")
    with pytest.raises(DataError, match="unreadable proposal file"):
        proposal_search.compute_cached(
            [image],
            ["img"],
            settings,
            cache_dir=str(tmp_path),
            tag="t",
            split="train",
            num_workers=1,
        )
