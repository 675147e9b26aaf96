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
