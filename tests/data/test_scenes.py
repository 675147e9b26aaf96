"""Offline scenes: placement, true boxes from pixels, determinism, caching, proposal recall."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from jwsol.data import mnist, proposals, scenes
from jwsol.data.proposals import search as proposal_search
from jwsol.errors import ConfigError, DataError
from jwsol.metrics.detection import proposal_recall
from jwsol.ops.boxes_np import iou_matrix


@pytest.fixture(scope="module")
def fashion_test():
    return mnist.load("idx", "test")


def _tight(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def test_single_object_box_is_the_tight_box_of_its_pixels(fashion_test):
    images, labels = fashion_test
    settings = scenes.SceneSettings(min_objects=1, max_objects=1, canvas_size=96)
    data = scenes.generate(images, labels, 20, settings, "test")
    assert data.images.shape == (20, 96, 96) and data.images.dtype == np.uint8
    for n in range(20):
        assert data.counts[n] == 1
        expected = _tight(data.images[n] >= settings.pixel_threshold)
        np.testing.assert_array_equal(data.boxes[n, 0], expected)
        assert data.classes[n, 0] == labels[data.sources[n, 0]]
        side = data.boxes[n, 0, 2:] - data.boxes[n, 0, :2]
        assert np.all(side <= settings.max_object_size)


def test_objects_overlap_at_most_max_overlap_and_boxes_are_tight(fashion_test):
    images, labels = fashion_test
    settings = scenes.SceneSettings(max_overlap=0.0)
    data = scenes.generate(images, labels, 40, settings, "test")
    assert data.counts.min() >= 1 and data.counts.max() <= 4 and len(set(data.counts)) > 1
    for n in range(40):
        boxes = data.boxes[n, : data.counts[n]]
        canvas = data.images[n] >= settings.pixel_threshold
        covered = np.zeros_like(canvas)
        for x1, y1, x2, y2 in boxes.astype(int):
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
            inside = canvas[y1:y2, x1:x2]
            # Tight: object pixels touch all four sides of the box.
            assert (
                inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            )
            covered[y1:y2, x1:x2] = True
        assert not np.any(canvas & ~covered)  # no object pixel outside every box
        iou = iou_matrix(boxes, boxes)
        assert np.all(iou[~np.eye(len(boxes), dtype=bool)] == 0.0)
        assert np.all(data.classes[n, data.counts[n] :] == -1)
    labels_multi_hot = data.labels()
    for n in range(40):
        assert set(np.flatnonzero(labels_multi_hot[n])) == set(data.classes[n, : data.counts[n]])


def test_scenes_are_fixed_by_seed(fashion_test):
    images, labels = fashion_test
    settings = scenes.SceneSettings()
    a = scenes.generate(images, labels, 8, settings, "test")
    b = scenes.generate(images, labels, 5, settings, "test")
    np.testing.assert_array_equal(a.images[:5], b.images)  # scene i does not depend on the count
    np.testing.assert_array_equal(a.boxes[:5], b.boxes)
    c = scenes.generate(images, labels, 5, dataclasses.replace(settings, seed=1), "test")
    assert not np.array_equal(a.images[:5], c.images)
    d = scenes.generate(images, labels, 5, settings, "train")
    assert not np.array_equal(a.images[:5], d.images)


def test_load_caches_once_per_settings(idx_folder, tmp_path, monkeypatch):
    settings = scenes.SceneSettings(num_train=6, num_test=3, mnist_folder=idx_folder)
    train = scenes.load(settings, "train", cache_dir=str(tmp_path))
    assert len(train) == 6 and os.path.exists(scenes.cache_file(str(tmp_path), settings))

    def fail(*args, **kwargs):
        raise AssertionError("regenerated despite the cache")

    monkeypatch.setattr(scenes, "generate", fail)
    test = scenes.load(settings, "test", cache_dir=str(tmp_path))
    assert len(test) == 3
    np.testing.assert_array_equal(
        scenes.load(settings, "train", cache_dir=str(tmp_path)).images, train.images
    )
    with pytest.raises(ConfigError, match="splits"):
        scenes.load(settings, "val", cache_dir=str(tmp_path))


def test_bad_settings_and_sources(tmp_path):
    with pytest.raises(ConfigError, match="min_objects"):
        scenes.SceneSettings(min_objects=3, max_objects=2).check()
    with pytest.raises(ConfigError, match="object sizes"):
        scenes.SceneSettings(max_object_size=200).check()
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        scenes.load(
            scenes.SceneSettings(mnist_folder=str(tmp_path)), "train", cache_dir=str(tmp_path)
        )
    blank = np.zeros([4, 28, 28], np.uint8)
    with pytest.raises(DataError, match="could not place any object"):
        scenes.generate(blank, np.zeros([4], np.int32), 1, scenes.SceneSettings(), "test")


def test_selective_search_recall_on_scenes(fashion_test):
    """WSDDN cannot beat its proposals: selective search must cover the scene objects."""
    images, labels = fashion_test
    data = scenes.generate(images, labels, 24, scenes.SceneSettings(), "test")
    gts = [data.boxes[n, : data.counts[n]] for n in range(len(data))]
    settings = proposal_search.SearchSettings(method="selective_search")
    boxes = proposal_search.compute(list(data.images), settings, num_workers=1)
    cleaned = [proposals.clean_proposals(b, None, 128, 128, min_size=4, top_k=0)[0] for b in boxes]
    assert proposal_recall(cleaned, gts, 0.5, plus_one=False) >= 0.9
    assert max(len(b) for b in cleaned) <= 200  # fits the default max_proposals
