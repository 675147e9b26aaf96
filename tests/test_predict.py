"""python -m jwsol.predict: image reading, bad inputs, and each job's predictions on a smoke run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from jwsol import predict, tasks
from jwsol.data import images
from jwsol.errors import DataError
from jwsol.training import config as config_lib
from jwsol.training import loop
from jwsol.training.task import PredictOptions

RNG = np.random.default_rng(0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def _oicr_config(cache_dir, **overrides):
    return config_lib.load("configs/oicr.py:smoke", {"data.cache_dir": cache_dir, **overrides})


def _write_config(workdir, config):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort())


# Image reading -------------------------------------------------------------------------------
def test_grayscale_palette_and_rgba_images_become_rgb(tmp_path):
    grey = RNG.integers(0, 256, (12, 9), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255  # transparent: white; opaque: its colour
    read_grey = images.read_rgb(_write(tmp_path / "g.png", grey))
    read_rgba = images.read_rgb(_write(tmp_path / "a.png", rgba))
    assert read_grey.shape == (12, 9, 3) and read_grey.dtype == np.uint8
    np.testing.assert_array_equal(read_grey, np.repeat(grey[:, :, None], 3, axis=2))
    assert read_rgba.shape == (5, 7, 3)
    np.testing.assert_array_equal(read_rgba[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(read_rgba[0, 1], rgba[0, 1, :3])


def test_folders_list_their_images_and_bad_files_are_skipped_by_name(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    _write(folder / "b.jpg", RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    _write(folder / "sub" / "a.PNG", RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not listed: not an image suffix")
    broken = folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    text = tmp_path / "named.png"
    text.write_text("a text file named .png, given explicitly")
    loaded = images.load([str(folder), str(text)])
    assert [os.path.basename(f) for f in loaded.files] == ["b.jpg", "a.PNG"]
    assert [os.path.basename(f) for f, _ in loaded.skipped] == ["broken.jpg", "named.png"]
    assert all("not a readable JPEG/PNG image" in why for _, why in loaded.skipped)


def test_no_readable_image_and_missing_paths_are_data_errors(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_text("nope")
    with pytest.raises(DataError, match="no readable JPEG/PNG image.*1 file"):
        images.load([str(bad)])
    with pytest.raises(DataError, match="missing.jpg: no such file or folder"):
        images.load([str(tmp_path / "missing.jpg")])


def test_selective_search_proposals_are_cached_per_file_version(tmp_path, monkeypatch):
    from jwsol.data.proposals import search

    config = _oicr_config(str(tmp_path / "cache"), **{"data.proposals.method": "selective_search"})
    scene = np.zeros((48, 64, 3), np.uint8)
    scene[8:30, 10:40] = 200  # one bright object for selective search to find
    path = _write(tmp_path / "scene.png", scene)
    (first,) = images.image_proposals(config.data, [path], [scene])
    assert len(first) and np.all(first[:, 2] <= 64) and np.all(first[:, 3] <= 48)

    def no_compute(*args, **kwargs):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(search, "compute", no_compute)
    (again,) = images.image_proposals(config.data, [path], [scene])
    np.testing.assert_array_equal(again, first)
    os.utime(path, ns=(0, 0))  # another version of the file: computed afresh
    with pytest.raises(AssertionError, match="recomputed"):
        images.image_proposals(config.data, [path], [scene])


def test_picture_names_stay_distinct():
    names = predict.picture_names(["a/x.jpg", "b/x.png", "c/y.jpg"])
    assert names == ["x_0.png", "x_1.png", "y.png"]


# Bad run folders -------------------------------------------------------------------------------
def test_run_folder_without_config_or_checkpoint_is_one_error_line(tmp_path, capsys):
    image = _write(tmp_path / "i.png", RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert predict.main(["--workdir", str(tmp_path / "nowhere"), "--images", image]) == 2
    assert "no such folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict.main(["--workdir", str(empty), "--images", image]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "config.json" in err[0]
    _write_config(str(empty), _oicr_config(str(tmp_path / "cache")))
    assert predict.main(["--workdir", str(empty), "--images", image]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint" in err[0] and "train first" in err[0]
    assert not os.path.exists(empty / "checkpoints")  # predicting creates nothing in the run


# Detections (WSDDN/OICR) -----------------------------------------------------------------------
def test_detection_records_are_in_original_pixels_through_nms(tmp_path):
    """Hand-built batch: a 40 x 100 (h x w) original resized by (sx, sy) = (0.64, 1.6)."""
    from jwsol.tasks.wsddn_predict import DetectionPredictor

    task = tasks.build(_oicr_config(str(tmp_path)))
    task.class_names = ("a", "b")
    original = np.array([[[10, 4, 50, 30], [12, 4, 50, 30], [60, 0, 100, 40], [0, 0, 0, 0]]])
    scale = np.array([[0.64, 1.6]], np.float32)
    batch = {
        "proposals": (original * np.tile(scale, 2)[:, None]).astype(np.float32),
        "proposal_mask": np.array([[True, True, True, False]]),
        "scale_xy": scale,
        "image_size": np.array([[64, 64]], np.int32),
        "flipped": np.array([False]),
    }
    scores = np.zeros((1, 4, 2), np.float32)
    scores[0, 0, 0], scores[0, 1, 0] = 0.9, 0.8  # IoU 0.95 with box 0: removed by NMS
    scores[0, 2, 1] = 0.6
    scores[0, 3, 1] = 0.99  # padding: never a detection
    outputs = {"region_scores": scores, "image_scores": np.array([[0.9, 0.6]])}
    predictor = DetectionPredictor(task, PredictOptions(score_threshold=0.5))
    (record,) = predictor.records(batch, outputs)
    found = [(d["category_id"], d["bbox"], round(d["score"], 4)) for d in record["detections"]]
    assert found == [(1, [10.0, 4.0, 40.0, 26.0], 0.9), (2, [60.0, 0.0, 40.0, 40.0], 0.6)]
    assert record["image_scores"] == {"a": 0.9, "b": 0.6}
    only_best = DetectionPredictor(task, PredictOptions(score_threshold=0.5, max_per_image=1))
    assert len(only_best.records(batch, outputs)[0]["detections"]) == 1


@pytest.fixture(scope="module")
def oicr_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("oicr_run"))
    cache = str(tmp_path_factory.mktemp("oicr_cache"))
    loop.run(tasks.build(_oicr_config(cache)), workdir)
    return workdir


@pytest.mark.slow
def test_oicr_smoke_run_predicts_coco_detections_on_png_and_jpeg(oicr_run, tmp_path):
    from pycocotools.coco import COCO

    files = [
        _write(tmp_path / "wide.jpg", RNG.integers(0, 256, (60, 150, 3), dtype=np.uint8)),
        _write(tmp_path / "grey.png", RNG.integers(0, 256, (90, 40), dtype=np.uint8)),
    ]
    (tmp_path / "junk.png").write_text("not an image")
    out = str(tmp_path / "out")
    argv = ["--workdir", oicr_run, "--images", *files, str(tmp_path / "junk.png"), "--out", out]
    status = predict.main(argv + ["--score-threshold", "0", "--max-per-image", "7"])
    assert status == 0
    with open(os.path.join(out, "predictions.json")) as f:
        doc = json.load(f)
    assert doc["task"] == "wsddn" and doc["step"] == 4
    assert [(i["file_name"], i["height"], i["width"]) for i in doc["images"]] == [
        (files[0], 60, 150), (files[1], 90, 40)
    ]  # fmt: skip
    assert [os.path.basename(s["file_name"]) for s in doc["skipped"]] == ["junk.png"]
    assert len(doc["categories"]) == 10
    config = _oicr_config(str(tmp_path / "cache2"))
    for image in doc["images"]:
        mine = [d for d in doc["detections"] if d["image_id"] == image["id"]]
        assert len(mine) == 7  # every proposal scores above 0: the cap decides
        # Every box is one of the image's proposals in ORIGINAL pixels (the model saw it at
        # 64 x 64): the mapping back is exact, not a box of the resized canvas.
        array = images.read_rgb(image["file_name"])
        (props,) = images.image_proposals(config.data, [image["file_name"]], [array])
        for d in mine:
            x, y, w, h = d["bbox"]
            assert np.min(np.abs(props - [x, y, x + w, y + h]).max(axis=1)) < 0.01
    assert sorted(os.listdir(os.path.join(out, "pictures"))) == ["grey.png", "wide.png"]
    picture = np.asarray(Image.open(os.path.join(out, "pictures", "wide.png")))
    assert picture.ndim == 3 and picture.shape[2] in (3, 4)
    # The detections load into pycocotools as results against the listed images.
    gt = COCO()
    gt.dataset = {"images": doc["images"], "categories": doc["categories"], "annotations": []}
    gt.createIndex()
    assert len(gt.loadRes(doc["detections"]).getAnnIds()) == 14


@pytest.mark.slow
def test_step_flag_restores_that_checkpoint_and_a_missing_step_is_one_line(
    oicr_run, tmp_path, capsys
):
    image = _write(tmp_path / "i.png", RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    doc = predict.predict(oicr_run, [image], str(tmp_path / "o"), step=2, progress=False)
    assert doc["step"] == 2
    assert predict.main(["--workdir", oicr_run, "--images", image, "--step", "3"]) == 2
    assert "checkpoint step 3" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_mode_writes_coco_detections_and_coco_ap(oicr_run, tmp_path):
    config = _oicr_config(str(tmp_path / "cache"), **{"eval.coco_ap": True})
    metrics = loop.run(tasks.build(config), oicr_run, mode="eval")
    assert 0.0 <= metrics["coco/ap50"] <= 1.0 and 0.0 <= metrics["coco/ap"] <= 1.0
    with open(os.path.join(oicr_run, "detections_coco.json")) as f:
        found = json.load(f)
    with open(os.path.join(oicr_run, "ground_truth_coco.json")) as f:
        truth = json.load(f)
    assert len(truth["images"]) == config.data.scenes.num_test
    assert {d["image_id"] for d in found} <= {i["id"] for i in truth["images"]}
    assert truth["images"][0]["file_name"] == "test_00000"


# Other jobs ------------------------------------------------------------------------------------
def test_top_classes_keep_the_best_k_above_the_threshold_and_always_the_best():
    from jwsol.tasks.image_label_predict import top_classes

    scores = np.array([0.2, 0.9, 0.05, 0.6])
    assert top_classes(scores, "abcd", 3) == [(1, 0.9), (3, 0.6), (0, 0.2)]
    assert top_classes(scores, "abcd", 0, threshold=0.5) == [(1, 0.9), (3, 0.6)]
    assert top_classes(scores, "abcd", 2, threshold=0.95) == [(1, 0.9)]


def test_localizer_heatmap_box_is_in_original_pixels(tmp_path):
    """Score map 8 x 8 on an S px canvas, 1 on its left four columns: spread over the canvas
    ('stretch'), it crosses 0.5 at canvas x = S / 2, the middle: x2 = 150 / 2 in a 150 px wide
    original that the pipeline resized to fill the S x S canvas."""
    from jwsol.tasks.image_label_predict import LocalizerPredictor

    config = config_lib.load(
        "configs/localizer.py:smoke",
        {"data.cache_dir": str(tmp_path), "eval.heatmap_alignment": "stretch"},
    )
    task = tasks.build(config)
    score_map = np.zeros((1, 8, 8, task.num_classes), np.float32)
    score_map[0, :, :4, 2] = 1.0
    logits = np.full((1, task.num_classes), -3.0)
    logits[0, 2] = 2.0
    side = config.data.image_size
    batch = {"image_size": np.array([[side, side]]), "orig_size": np.array([[90, 150]])}
    options = PredictOptions(top_k=1)
    (record,) = LocalizerPredictor(task, options).records(
        batch, {"logits": logits, "score_map": score_map}
    )
    (entry,) = record["classes"]
    assert entry["category_id"] == 3 and entry["score"] == pytest.approx(1 / (1 + np.exp(-2)))
    assert entry["bbox"] == [0.0, 0.0, 75.0, 90.0]
    assert record["_maps"][0].heatmap.shape == (90, 150)


def test_sliding_window_box_scales_from_the_canvas_to_the_original(tmp_path):
    from jwsol.tasks.classifier_predict import SlidingWindowPredictor

    config = config_lib.load("configs/sliding_window.py:smoke")
    task = tasks.build(config)
    g, size = task.geom, config.data.canvas_size
    outputs = {
        "label": np.array([7]),
        "score": np.array([0.8]),
        "box": np.array([[0.25, 0.0, 0.75, 0.5]], np.float32),  # in window sizes
        "window_i": np.array([1]),
        "window_j": np.array([0]),
    }
    batch = {"orig_size": np.array([[2 * size, 3 * size]])}  # (h, w): y x2, x x3
    (record,) = SlidingWindowPredictor(task, PredictOptions()).records(batch, outputs)
    x1, y1 = g.offset + 0.25 * g.size, g.offset + g.stride
    x2, y2 = g.offset + 0.75 * g.size, g.offset + g.stride + 0.5 * g.size
    expected = [3 * x1, 2 * y1, 3 * (x2 - x1), 2 * (y2 - y1)]
    assert record["category_id"] == 8 and record["score"] == pytest.approx(0.8)
    np.testing.assert_allclose(record["bbox"], expected, atol=0.01)


def test_multilabel_gradcam_keeps_the_image_part_of_the_canvas():
    from jwsol.tasks.image_label_predict import canvas_map_on_image

    # The image fills the canvas's top half; the padding's cells (bottom row) are the hottest.
    cam = np.array([[4.0, 0.0], [9.0, 9.0]])
    heat = canvas_map_on_image(cam, 64, (32, 64), (50, 100))
    assert heat.shape == (50, 100) and heat.max() == pytest.approx(1.0)
    # Left hot, right cold along the image; the padding's 9s only bleed in at the bottom edge.
    assert heat[:25, :20].mean() > 0.5 > heat[:25, 80:].mean()
    assert heat[0, 0] == pytest.approx(heat[:10].max(), abs=1e-6)


def test_classifier_scores_are_the_softmax_best_first(tmp_path):
    from jwsol.tasks.classifier_predict import ClassificationPredictor

    task = type("T", (), {"class_names": ("a", "b", "c")})()
    logits = np.array([[1.0, 3.0, 2.0]])
    outputs = {"logits": logits, "cam_pred": np.ones((1, 2, 2))}
    (record,) = ClassificationPredictor(task, PredictOptions(top_k=2)).records({}, outputs)
    softmax = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert [e["name"] for e in record["classes"]] == ["b", "c"]
    np.testing.assert_allclose([e["score"] for e in record["classes"]], softmax[[1, 2]], atol=1e-6)


def _job_run(tmp_path_factory, spec):
    workdir = str(tmp_path_factory.mktemp("run"))
    cache = str(tmp_path_factory.mktemp("cache"))
    config = config_lib.load(spec)
    if "cache_dir" in config.data:
        config.data.cache_dir = cache
    loop.run(tasks.build(config), workdir)
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        "configs/localizer.py:smoke",
        "configs/resnet_voc.py:smoke",
        "configs/resnet_tinyimagenet.py:smoke",
        "configs/sliding_window.py:smoke",
    ],
)
def test_each_job_predicts_on_its_smoke_run(spec, tmp_path_factory, tmp_path):
    workdir = _job_run(tmp_path_factory, spec)
    files = [
        _write(tmp_path / "rgb.jpg", RNG.integers(0, 256, (70, 50, 3), dtype=np.uint8)),
        _write(tmp_path / "rgba.png", RNG.integers(0, 256, (40, 90, 4), dtype=np.uint8)),
        _write(tmp_path / "grey.png", RNG.integers(0, 256, (64, 64), dtype=np.uint8)),
    ]
    doc = predict.predict(workdir, files, str(tmp_path / "out"), progress=False, batch_size=2)
    records = doc["predictions"]
    assert [r["image_id"] for r in records] == [1, 2, 3]
    for image, record in zip(doc["images"], records):
        assert not any(k.startswith("_") for k in record)  # picture-only keys are not written
        entries = record.get("classes", [record])
        assert entries and entries[0]["score"] == max(e["score"] for e in entries)
        for e in entries:
            assert 1 <= e["category_id"] <= 10 or doc["task"] == "classification"
            if e.get("bbox"):
                x, y, w, h = e["bbox"]
                assert 0 <= x and 0 <= y and w > 0 and h > 0
                assert x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01
        picture = Image.open(os.path.join(tmp_path, "out", "pictures", image["picture"]))
        assert picture.size[0] > 100
    with open(os.path.join(tmp_path, "out", "predictions.json")) as f:
        assert json.load(f) == json.loads(json.dumps(doc))


@pytest.mark.slow
def test_a_run_saved_on_eight_devices_predicts_on_one(tmp_path):
    import subprocess
    import sys

    workdir = str(tmp_path / "run")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    args = ["--config", "configs/localizer.py:smoke", "--workdir", workdir]
    args.append(f"--config.data.cache_dir={tmp_path / 'cache'}")
    train = [sys.executable, "train.py", *args]
    subprocess.run(train, env=env, check=True, capture_output=True, cwd=ROOT)
    image = _write(tmp_path / "i.png", RNG.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    doc = predict.predict(workdir, [image], str(tmp_path / "out"), progress=False)
    assert doc["step"] == 4 and len(doc["predictions"][0]["classes"]) == 5


@pytest.mark.slow
def test_python_dash_m_form_reports_one_error_line(tmp_path):
    import subprocess
    import sys

    image = _write(tmp_path / "i.png", RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    run = subprocess.run(
        [sys.executable, "-m", "jwsol.predict", "--workdir", str(tmp_path), "--images", image],
        check=False,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        cwd=ROOT,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "config.json does not exist" in run.stderr
