"""Tests of jwsol.anchors (k-means anchor boxes) and jwsol.viz.anchors.

References: a hand-worked IoU, a loop-based IoU of boxes placed at the origin, per-cluster
np.median / np.mean loops, d^2 sampling probabilities worked by hand, elbows worked by hand,
and box sizes known by construction for every source.
"""

from __future__ import annotations

import json
import os
import types
from unittest import mock

import numpy as np
import pytest

from jwsol import anchors
from jwsol.errors import DataError, UserError
from jwsol.viz import anchors as viz

CENTRES = np.array([[0.08, 0.10], [0.20, 0.50], [0.60, 0.30], [0.70, 0.80]])


def _clustered_boxes(per_centre: int = 150, spread: float = 0.05, seed: int = 1) -> np.ndarray:
    """Boxes drawn around CENTRES with multiplicative log-normal noise: [4 * per_centre, 2]."""
    rng = np.random.default_rng(seed)
    return np.concatenate([c * np.exp(rng.normal(0.0, spread, (per_centre, 2))) for c in CENTRES])


def _box_iou_loop(a, b) -> float:
    """Reference IoU of two (x1, y1, x2, y2) boxes, written out."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ----------------------------------------------------------------------------- geometry


def test_iou_wh_hand_worked():
    # (2 x 3) against (4 x 1): intersection 2 * 1 = 2, union 6 + 4 - 2 = 8.
    iou = anchors.iou_wh(np.array([[2.0, 3.0]]), np.array([[4.0, 1.0], [2.0, 3.0], [1.0, 1.5]]))
    np.testing.assert_allclose(iou, [[0.25, 1.0, 0.25]])


def test_iou_wh_matches_corner_aligned_box_iou():
    rng = np.random.default_rng(0)
    wh, anc = rng.uniform(0.01, 1.0, (30, 2)), rng.uniform(0.01, 1.0, (7, 2))
    expected = [[_box_iou_loop((0, 0, w, h), (0, 0, aw, ah)) for aw, ah in anc] for w, h in wh]
    np.testing.assert_allclose(anchors.iou_wh(wh, anc), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- k-means pieces


@pytest.mark.parametrize("update", ["median", "mean"])
def test_update_centres_matches_per_cluster_loop(update):
    rng = np.random.default_rng(3)
    wh = rng.uniform(0.1, 1.0, (41, 2))
    labels = rng.integers(0, 5, 41)
    labels[labels == 3] = 4  # cluster 3 empty; sizes odd and even by chance
    reduce = np.median if update == "median" else np.mean
    expected = np.full((5, 2), np.nan)
    for j in range(5):
        if np.any(labels == j):
            expected[j] = reduce(wh[labels == j], axis=0)
    got = anchors.update_centres(wh, labels, 5, update)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert np.isnan(got[3]).all()


def test_update_centres_median_even_count_averages_middle_pair():
    wh = np.array([[1.0, 8.0], [4.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    np.testing.assert_allclose(anchors.update_centres(wh, np.zeros(4, int), 1), [[2.5, 5.0]])


def test_kmeanspp_draws_next_centre_with_probability_d_squared():
    # With (1, 1) chosen: (2, 1) has IoU 1/2 (d = 1/2), (4, 1) has IoU 1/4 (d = 3/4), so
    # P(2, 1) = 0.25 / (0.25 + 0.5625) = 0.3077; (1, 1) itself has d = 0 and is never drawn.
    wh = np.array([[1.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    rng = np.random.default_rng(0)
    picks = [tuple(anchors.kmeanspp_init(wh, 2, rng, initial=wh[:1])[1]) for _ in range(3000)]
    assert (1.0, 1.0) not in picks
    assert picks.count((2.0, 1.0)) / 3000 == pytest.approx(0.25 / 0.8125, abs=0.03)


def test_lloyd_never_ends_below_its_start():
    wh = np.exp(np.random.default_rng(5).normal(-2.0, 0.7, (400, 2)))
    for seed in range(5):
        start = anchors.kmeanspp_init(wh, 6, np.random.default_rng(seed))
        start_iou = anchors.iou_wh(wh, start).max(axis=1).mean()
        best, best_iou, _, _ = anchors.lloyd(wh, start.copy())
        assert best_iou >= start_iou
        assert best_iou == pytest.approx(anchors.iou_wh(wh, best).max(axis=1).mean())


# ----------------------------------------------------------------------------- k-means results


@pytest.mark.parametrize("update", ["median", "mean"])
def test_recovers_known_centres(update):
    wh = _clustered_boxes()
    result = anchors.kmeans_anchors(wh, 4, restarts=3, seed=0, update=update)
    # CENTRES are already in area order, as the result's anchors are.
    np.testing.assert_allclose(result.anchors, CENTRES, rtol=0.03)
    np.testing.assert_array_equal(result.cluster_sizes, [150, 150, 150, 150])
    np.testing.assert_array_equal(result.assignment, np.repeat(np.arange(4), 150))
    assert result.mean_iou > 0.9


def test_scores_are_recomputed_from_the_anchors():
    wh = _clustered_boxes(per_centre=40)
    result = anchors.kmeans_anchors(wh, 3, restarts=2, seed=1)
    best = np.array(
        [max(_box_iou_loop((0, 0, *b), (0, 0, *a)) for a in result.anchors) for b in wh]
    )
    assert result.mean_iou == pytest.approx(best.mean(), rel=1e-12)
    assert result.cost == pytest.approx(np.sum(1.0 - best), rel=1e-12)
    assert result.cluster_sizes.sum() == len(wh)
    assert np.all(np.diff(result.anchors.prod(axis=1)) >= 0)


def test_mean_iou_is_monotone_in_k_on_a_fixed_seed():
    wh = np.exp(np.random.default_rng(7).normal(-2.0, 0.8, (600, 2)))
    for seed in (0, 1):
        results = anchors.anchors_for_range(wh, 1, 9, restarts=2, seed=seed)
        assert [r.k for r in results] == list(range(1, 10))
        mean_ious = np.array([r.mean_iou for r in results])
        costs = np.array([r.cost for r in results])
        assert np.all(np.diff(mean_ious) >= 0), mean_ious
        assert np.all(np.diff(costs) <= 1e-9), costs


def test_same_seed_same_anchors_other_seed_runs():
    wh = np.exp(np.random.default_rng(8).normal(-2.0, 0.6, (300, 2)))
    a = anchors.kmeans_anchors(wh, 5, restarts=2, seed=3)
    b = anchors.kmeans_anchors(wh, 5, restarts=2, seed=3)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    c = anchors.kmeans_anchors(wh, 5, restarts=2, seed=4)
    assert c.mean_iou == pytest.approx(a.mean_iou, abs=0.05)


def test_k_equal_to_distinct_boxes_reaches_iou_one():
    wh = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0]] * 5)
    result = anchors.kmeans_anchors(wh, 3, restarts=1)
    assert result.mean_iou == pytest.approx(1.0)
    np.testing.assert_allclose(result.anchors, [[1.0, 1.0], [1.0, 2.0], [2.0, 1.0]])


# ----------------------------------------------------------------------------- degenerate input


def test_no_boxes_is_a_clear_error():
    with pytest.raises(UserError, match="no boxes"):
        anchors.kmeans_anchors(np.zeros((0, 2)), 3)
    with pytest.raises(UserError, match="no boxes"):
        anchors.anchors_for_range(np.zeros((0, 2)), 1, 3)


def test_zero_width_boxes_are_a_clear_error_or_counted_when_dropped():
    wh = np.array([[0.2, 0.3], [0.0, 0.4], [0.5, 0.5], [0.1, 0.0]])
    with pytest.raises(UserError, match=r"2 of 4 boxes have a zero.*box 1"):
        anchors.kmeans_anchors(wh, 2)
    kept, dropped = anchors.drop_degenerate(wh)
    assert dropped == 2
    np.testing.assert_array_equal(kept, [[0.2, 0.3], [0.5, 0.5]])


def test_k_larger_than_distinct_boxes_is_a_clear_error():
    wh = np.array([[0.2, 0.3], [0.2, 0.3], [0.5, 0.5]])
    with pytest.raises(UserError, match="only 2 distinct"):
        anchors.kmeans_anchors(wh, 3)
    with pytest.raises(UserError, match="only 2 distinct"):
        anchors.anchors_for_range(wh, 1, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"k": 0}, "positive integer"), ({"k": 2, "update": "mode"}, "unknown update")],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        anchors.kmeans_anchors(_clustered_boxes(per_centre=5), **kwargs)


def test_bad_shape_and_bad_range_are_clear_errors():
    with pytest.raises(UserError, match=r"\[N, 2\]"):
        anchors.kmeans_anchors(np.ones((5, 4)), 2)
    with pytest.raises(UserError, match="k_min <= k_max"):
        anchors.anchors_for_range(_clustered_boxes(per_centre=5), 4, 2)


# ----------------------------------------------------------------------------- elbow rule


def test_elbow_hand_worked_curves():
    # x = 0, .2, ..., 1; y = (c - 1) / 9 = 1, .444, .111, .056, .022, 0;
    # (1 - x) - y = 0, .356, .489, .344, .178, 0 -> k = 3.
    assert anchors.choose_elbow([1, 2, 3, 4, 5, 6], [10, 5, 2, 1.5, 1.2, 1.0]) == 3
    # Steep (-30 per k) to k = 4, then shallow (-1 per k): gaps .382 (k=3), .572 (k=4), .458 (k=5).
    assert anchors.choose_elbow(range(1, 10), [100, 70, 40, 10, 9, 8, 7, 6, 5]) == 4
    # The rule only depends on the normalised curve: rescaling cost or shifting k changes nothing.
    assert (
        anchors.choose_elbow(range(3, 12), [3 * c + 7 for c in [100, 70, 40, 10, 9, 8, 7, 6, 5]])
        == 6
    )


def test_elbow_ties_go_to_the_smaller_k_and_no_elbow_cases():
    # y = 1, .5, .25, .125, 0 at x = 0, .25, .5, .75, 1: gaps 0, .25, .25, .125, 0 (exact in binary).
    assert anchors.choose_elbow([1, 2, 3, 4, 5], [8, 4, 2, 1, 0]) == 2
    assert anchors.choose_elbow([1, 2], [5.0, 1.0]) is None  # fewer than 3 values of k
    assert anchors.choose_elbow([1, 2, 3, 4], [3, 2, 1, 0]) is None  # a straight line
    assert anchors.choose_elbow([1, 2, 3], [1, 1, 1]) is None  # flat
    with pytest.raises(UserError, match="strictly increasing"):
        anchors.choose_elbow([1, 3, 2], [3, 2, 1])


def test_elbow_of_four_separated_clusters_is_four():
    results = anchors.anchors_for_range(_clustered_boxes(per_centre=60), 1, 8, restarts=2)
    assert anchors.choose_elbow([r.k for r in results], [r.cost for r in results]) == 4


# ----------------------------------------------------------------------------- COCO source


def _coco(tmp_path, data, name="instances.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def _coco_data():
    return {
        "images": [{"id": 1, "width": 200, "height": 100}, {"id": 7, "width": 50, "height": 40}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 20, 50, 25]},
            {"id": 11, "image_id": 7, "category_id": 3, "bbox": [0.5, 1.5, 10.0, 30.0]},
            {"id": 12, "image_id": 1, "category_id": 5, "bbox": [0, 0, 200, 100]},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
    }


def test_load_coco_relative_and_absolute(tmp_path):
    path = _coco(tmp_path, _coco_data())
    np.testing.assert_allclose(anchors.load_coco(path), [[0.25, 0.25], [0.2, 0.75], [1.0, 1.0]])
    np.testing.assert_allclose(
        anchors.load_coco(path, absolute=True), [[50, 25], [10, 30], [200, 100]]
    )


def _broken(change):
    data = _coco_data()
    change(data)
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "JSON object"),
        (_broken(lambda d: d.pop("categories")), "missing top-level key 'categories'"),
        (_broken(lambda d: d.update(images={})), "'images' must be a list"),
        (
            _broken(lambda d: d["annotations"][1].pop("bbox")),
            r"annotations\[1\] \(id 11\) has no 'bbox'",
        ),
        (_broken(lambda d: d["annotations"][0].update(bbox=[1, 2, 3])), "4 finite numbers"),
        (_broken(lambda d: d["annotations"][0].update(bbox=[1, 2, "3", 4])), "4 finite numbers"),
        (
            _broken(lambda d: d["annotations"][2].update(image_id=99)),
            "image_id 99 is not in 'images'",
        ),
        (_broken(lambda d: d["annotations"][2].update(category_id=8)), "category_id 8 is not in"),
        (
            _broken(lambda d: d["images"][1].pop("width")),
            r"images\[1\] \(id 7\) needs positive 'width'",
        ),
        (
            _broken(lambda d: d["images"].append({"id": 1, "width": 2, "height": 2})),
            "appears twice",
        ),
    ],
)
def test_load_coco_malformed_files_name_the_problem(tmp_path, data, message):
    path = _coco(tmp_path, data)
    with pytest.raises(DataError, match=message) as info:
        anchors.load_coco(path)
    assert path in str(info.value)


def test_load_coco_missing_file_and_absolute_without_sizes(tmp_path):
    with pytest.raises(DataError, match="no such COCO annotation file"):
        anchors.load_coco(str(tmp_path / "absent.json"))
    path = _coco(tmp_path, _broken(lambda d: [im.pop("width") for im in d["images"]]))
    np.testing.assert_allclose(anchors.load_coco(path, absolute=True)[:, 0], [50, 10, 200])


# ----------------------------------------------------------------------------- VOC sources

# (image id, width, height, [(name, difficult, xmin, ymin, xmax, ymax), ...])
VOC_IMAGES = [
    ("000001", 40, 30, [("dog", 0, 2, 3, 20, 25), ("cat", 1, 5, 1, 30, 12)]),
    ("000002", 64, 48, [("person", 0, 10, 10, 42, 40)]),
    (
        "000003",
        50,
        50,
        [("car", 0, 1, 1, 50, 50), ("car", 0, 20, 30, 26, 41), ("bus", 1, 3, 4, 9, 7)],
    ),
]
VOC_SETS = {
    "train": ["000001", "000002"],
    "val": ["000003"],
    "trainval": ["000001", "000002", "000003"],
}


def _voc_expected(ids, *, absolute=False, exclude_difficult=False):
    rows = []
    for image_id, w, h, objects in VOC_IMAGES:
        if image_id not in ids:
            continue
        for _, difficult, xmin, ymin, xmax, ymax in objects:
            if not (exclude_difficult and difficult):
                bw, bh = xmax - xmin + 1, ymax - ymin + 1  # inclusive 1-based pixel indices
                rows.append([bw, bh] if absolute else [bw / w, bh / h])
    return np.array(rows, np.float64)


def _write_voc_year(root) -> str:
    """A VOCdevkit/VOC2007-shaped folder (JPEG, XML, image sets) under `root`."""
    import cv2

    year = os.path.join(root, "VOCdevkit", "VOC2007")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(year, sub), exist_ok=True)
    for image_id, w, h, objects in VOC_IMAGES:
        cv2.imwrite(
            os.path.join(year, "JPEGImages", f"{image_id}.jpg"), np.zeros((h, w, 3), np.uint8)
        )
        xml_objects = "".join(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for name, difficult, x1, y1, x2, y2 in objects
        )
        with open(os.path.join(year, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(
                f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename><size>"
                f"<width>{w}</width><height>{h}</height><depth>3</depth></size>"
                f"<segmented>0</segmented>{xml_objects}</annotation>"
            )
    for name, ids in {**VOC_SETS, "test": ["000001"]}.items():
        with open(os.path.join(year, "ImageSets", "Main", f"{name}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    return year


def _sorted_rows(a):
    """Rows in (width, height) order; the order key is rounded so float32 noise cannot swap rows."""
    a = np.asarray(a)
    return a[np.lexsort(np.round(a, 4).T[::-1])]


@pytest.fixture(scope="module")
def voc_year(tmp_path_factory):
    return _write_voc_year(str(tmp_path_factory.mktemp("voc")))


def test_voc_folder_boxes_through_data_voc(voc_year):
    root = os.path.dirname(os.path.dirname(voc_year))  # holds VOCdevkit/
    np.testing.assert_allclose(
        anchors.load_boxes("voc_folder", root), _voc_expected(VOC_SETS["trainval"]), rtol=1e-6
    )
    np.testing.assert_allclose(
        anchors.load_boxes(
            "voc_folder", voc_year, split="train", absolute=True, exclude_difficult=True
        ),
        _voc_expected(VOC_SETS["train"], absolute=True, exclude_difficult=True),
    )


def test_voc_folder_errors_are_data_voc_errors(voc_year, tmp_path):
    with pytest.raises(DataError, match="unknown VOC split 'nosuch'"):
        anchors.load_boxes("voc_folder", voc_year, split="nosuch")
    with pytest.raises(DataError, match="no VOC2007 folder with JPEGImages"):
        anchors.load_boxes("voc_folder", str(tmp_path / "absent"))


@pytest.fixture(scope="module")
def tfds_voc_dir(tmp_path_factory, voc_year):
    """A real tfds `voc/2007` prepared from the small VOCdevkit folder (download step replaced)."""
    import tensorflow_datasets as tfds

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = tfds.builder("voc/2007", data_dir=data_dir)
    root = os.path.dirname(os.path.dirname(voc_year))  # holds VOCdevkit/
    # NOTE: tfds' own DownloadManager needs network (and importlib_resources for checksums);
    # the builder only calls download_and_extract and reads downloaded_size.
    fake = types.SimpleNamespace(
        download_and_extract=lambda urls: {k: root for k in urls}, downloaded_size=0
    )
    with mock.patch.object(type(builder), "_make_download_manager", lambda self, **kw: fake):
        builder.download_and_prepare()
    return data_dir


def test_tfds_boxes_match_the_xml_boxes(tfds_voc_dir):
    got = anchors.load_boxes("tfds", tfds_voc_dir)  # trainval
    np.testing.assert_allclose(
        _sorted_rows(got), _sorted_rows(_voc_expected(VOC_SETS["trainval"])), rtol=1e-6
    )
    got = anchors.load_boxes(
        "tfds", tfds_voc_dir, split="train", absolute=True, exclude_difficult=True
    )
    expected = _voc_expected(VOC_SETS["train"], absolute=True, exclude_difficult=True)
    np.testing.assert_allclose(_sorted_rows(got), _sorted_rows(expected), rtol=1e-5)


def test_tfds_absent_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"'voc/2007'.*not found.*tfds build voc/2007"):
        anchors.load_boxes("tfds", str(tmp_path), split="train")


# ----------------------------------------------------------------------------- scenes source


def test_scenes_boxes_are_the_jobs_scene_boxes(tmp_path):
    from jwsol.data import records, scenes

    data = anchors.scenes_data_config(cache_dir=str(tmp_path))
    with data.unlocked():
        data.scenes.update(canvas_size=64, min_object_size=16, max_object_size=32,
                           num_train=12, num_test=3)  # fmt: skip
    absolute = anchors.load_scenes(data, "train", absolute=True)
    # The training job's own cache file, read back.
    scene_data = scenes.load(
        records.scene_settings(data), "train", cache_dir=os.path.join(str(tmp_path), "scenes")
    )
    expected = [
        [x2 - x1, y2 - y1]
        for n in range(len(scene_data))
        for x1, y1, x2, y2 in scene_data.boxes[n, : scene_data.counts[n]].tolist()
    ]
    np.testing.assert_allclose(absolute, expected)
    relative = anchors.load_scenes(data, "train")
    np.testing.assert_allclose(relative, np.asarray(expected) / 64)
    assert np.all((relative > 0) & (relative <= 0.5))  # objects are at most 32 of 64 pixels


def test_scenes_data_config_of_a_job_config(tmp_path):
    from jwsol.data import records, scenes

    default = anchors.scenes_data_config()
    assert records.scene_settings(default) == scenes.SceneSettings()
    job = anchors.scenes_data_config("configs/localizer.py:scenes", str(tmp_path))
    assert job.scenes.canvas_size == 192 and job.cache_dir == str(tmp_path)


# ----------------------------------------------------------------------------- CLI and pictures


def _png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_json_and_pictures(tmp_path, capsys):
    data = _coco_data()
    wh = _clustered_boxes(per_centre=25)
    data["images"] = [{"id": 1, "width": 100, "height": 100}]
    data["annotations"] = [
        {"id": i, "image_id": 1, "category_id": 3, "bbox": [0, 0, 100 * w, 100 * h]}
        for i, (w, h) in enumerate(wh)
    ]
    data["annotations"].append({"id": 999, "image_id": 1, "category_id": 3, "bbox": [0, 0, 0, 10]})
    path = _coco(tmp_path, data)
    out = tmp_path / "out"
    argv = ["--source", "coco", "--path", path, "--k-min", "2", "--k-max", "6", "--restarts", "2",
            "--seed", "0", "--out", str(out)]  # fmt: skip
    assert anchors.main(argv) == 2  # the zero-width box stops the run ...
    assert "zero" in capsys.readouterr().err
    assert anchors.main(argv + ["--drop-degenerate"]) == 0  # ... unless dropped (and counted)
    assert "dropped 1 boxes" in capsys.readouterr().out
    summary = json.loads((out / "anchors.json").read_text())
    assert summary["num_boxes"] == 100 and summary["dropped_degenerate"] == 1
    assert summary["units"] == "relative" and summary["chosen_k"] == 4
    assert [r["k"] for r in summary["results"]] == [2, 3, 4, 5, 6]
    expected = anchors.anchors_for_range(wh, 2, 6, restarts=2, seed=0)
    for entry, result in zip(summary["results"], expected):
        np.testing.assert_allclose(entry["anchors"], result.anchors, atol=1e-6)
        assert entry["mean_iou"] == pytest.approx(result.mean_iou)
        assert len(entry["anchors"]) == entry["k"] == len(entry["cluster_sizes"])
    files = sorted(os.listdir(out))
    assert files == ["anchors.json", "clusters_k2.png", "clusters_k3.png", "clusters_k4.png",
                     "clusters_k5.png", "clusters_k6.png", "elbow.png"]  # fmt: skip
    assert all(_png(out / f) for f in files if f.endswith(".png"))


def test_cli_reports_user_errors(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert (
        anchors.main(["--source", "coco", "--path", str(tmp_path / "none.json"), "--out", out]) == 2
    )
    assert "no such COCO annotation file" in capsys.readouterr().err
    assert anchors.main(["--source", "voc_folder", "--out", out]) == 2
    assert "needs --path" in capsys.readouterr().err


def test_plot_clusters_subsamples_and_plot_elbow_without_elbow(tmp_path):
    wh = _clustered_boxes(per_centre=50)
    result = anchors.kmeans_anchors(wh, 4, restarts=1)
    viz.plot_clusters(wh, result.assignment, result.anchors, str(tmp_path / "c.png"), max_points=30)
    viz.plot_elbow([1, 2], [5.0, 1.0], [0.4, 0.6], None, str(tmp_path / "sub" / "e.png"))
    assert _png(tmp_path / "c.png") and _png(tmp_path / "sub" / "e.png")
    assert viz.cluster_colors(12).shape == (12, 4)
    assert len({tuple(c) for c in viz.cluster_colors(25)}) == 25
