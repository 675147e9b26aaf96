"""data.source='folder': a CSV or COCO JSON of image labels read back by hand, class names from
the training file, the records and batches it gives, and every bad input as one line naming the
file and row."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from configs import common
from jwsol.data import detection, folder
from jwsol.data import records as records_lib
from jwsol.errors import ConfigError, DataError


def _image(path, size=(40, 30), fmt="JPEG"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full([size[1], size[0], 3], 90, np.uint8)).save(path, format=fmt)


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


@pytest.fixture
def own(tmp_path):
    """Three images (one PNG) and a CSV per split: train names cat, dog; test has a dog."""
    root = tmp_path / "own"
    _image(str(root / "img" / "a.jpg"))
    _image(str(root / "img" / "b.png"), size=(20, 24), fmt="PNG")
    _image(str(root / "img" / "c.jpg"))
    _write(root / "train.csv", "file,labels\nimg/a.jpg,dog cat\nimg/b.png,\n")
    _write(root / "test.csv", "img/c.jpg,dog\n")
    return root


def folder_config(tmp_path, labels, **overrides):
    c = common.detection_data()
    c.source = "folder"
    c.folder.labels = str(labels)
    c.cache_dir = str(tmp_path / "cache")
    c.proposals.method = "grid"
    c.proposals.grid_sizes = (8, 16)
    c.proposals.grid_ratios = (1.0,)
    c.image_size = c.eval_scale = 32
    c.scales = (32,)
    c.max_proposals = 64
    c.max_gt_boxes = 4
    c.lock()
    c.update_from_flattened_dict(overrides)
    return c


def test_csv_labels_by_hand(own, tmp_path):
    config = folder_config(tmp_path, own / "{split}.csv")
    assert records_lib.class_names(config) == ("cat", "dog")  # the train file's, sorted
    train = records_lib.load_records(config, "train")
    assert train.image_ids == ["img/a", "img/b"]
    np.testing.assert_array_equal(train.labels, [[1, 1], [0, 0]])
    np.testing.assert_array_equal(train.label_weights, 1.0)
    np.testing.assert_array_equal(train.sizes, [[30, 40], [24, 20]])
    assert train.images == [str(own / "img" / "a.jpg"), str(own / "img" / "b.png")]
    assert all(len(b) == 0 for b in train.gt_boxes)
    test = records_lib.load_records(config, "test")
    np.testing.assert_array_equal(test.labels, [[0, 1]])


def test_classes_field_fixes_the_label_order(own, tmp_path):
    config = folder_config(tmp_path, own / "{split}.csv", **{"folder.classes": ("dog", "cat", "x")})
    records = records_lib.load_records(config, "train")
    assert records.class_names == ("dog", "cat", "x")
    np.testing.assert_array_equal(records.labels[0], [1, 1, 0])


def test_coco_boxes_crowd_and_box_free_labels(tmp_path):
    root = tmp_path / "coco"
    _image(str(root / "p.jpg"), size=(50, 40))
    _image(str(root / "q.jpg"))
    coco = {
        "categories": [{"id": 7, "name": "boat"}, {"id": 2, "name": "car"}],
        "images": [
            {"id": 1, "file_name": "p.jpg", "width": 50, "height": 40},
            {"id": 2, "file_name": "q.jpg"},
        ],
        "annotations": [
            {"image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 20]},
            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1},
            {"image_id": 2, "category_id": 2},  # an image label without a box
        ],
    }
    _write(root / "train.json", json.dumps(coco))
    config = folder_config(tmp_path, root / "train.json", **{"folder.images": str(root)})
    records = records_lib.load_records(config, "train")
    assert records.class_names == ("car", "boat")  # categories by id
    np.testing.assert_array_equal(records.gt_boxes[0], [[2, 3, 12, 23], [0, 0, 5, 5]])
    np.testing.assert_array_equal(records.gt_classes[0], [1, 0])
    np.testing.assert_array_equal(records.gt_difficult[0], [False, True])
    np.testing.assert_array_equal(records.labels, [[1, 1], [1, 0]])
    assert len(records.gt_boxes[1]) == 0


def test_batches_of_a_folder(own, tmp_path):
    config = folder_config(tmp_path, own / "{split}.csv")
    batch = next(
        detection.build(config, "train", train=False, seed=0, batch_size=2).as_numpy_iterator()
    )
    assert batch["image"].shape == (2, 32, 32, 3) and batch["labels"].shape == (2, 2)
    np.testing.assert_array_equal(batch["orig_size"], [[30, 40], [24, 20]])
    np.testing.assert_array_equal(batch["labels"], [[1, 1], [0, 0]])
    assert batch["proposal_mask"].any(axis=1).all() and not batch["gt_mask"].any()
    # Pixels come through: the value 90 everywhere inside the resized image.
    mean, std = np.array(common.IMAGENET_MEAN), np.array(common.IMAGENET_STD)
    pixels = batch["image"][0, :24, :32] * std + mean
    np.testing.assert_allclose(pixels, 90 / 255, atol=2 / 255)


def test_selective_search_proposals_are_cached(own, tmp_path):
    config = folder_config(
        tmp_path, own / "{split}.csv", **{"proposals.method": "selective_search",
                                         "proposals.num_workers": 1}
    )  # fmt: skip
    records_lib.load_records(config, "test")
    cached = os.listdir(tmp_path / "cache" / "proposals")
    assert len(cached) == 1 and cached[0].startswith("folder_")


def _error(tmp_path, labels, split="train", **overrides):
    config = folder_config(tmp_path, labels, strict=True, **overrides)
    with pytest.raises(DataError) as info:
        records_lib.load_records(config, split)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_image_names_the_file_and_row(own, tmp_path):
    labels = _write(own / "gone.csv", "file,labels\nimg/a.jpg,cat\nimg/nope.jpg,dog\n")
    message = _error(tmp_path, labels)
    assert f"{labels} row 3" in message and "nope.jpg" in message and "not found" in message
    # Not strict: a counted skip.
    records = records_lib.load_records(folder_config(tmp_path, labels), "train")
    assert records.image_ids == ["img/a"] and len(records.skipped) == 1


def test_unknown_class_names_the_file_and_row(own, tmp_path):
    _write(own / "test.csv", "img/c.jpg,dog\nimg/a.jpg,cow\n")
    message = _error(tmp_path, own / "{split}.csv", split="test")
    assert f"{own / 'test.csv'} row 2" in message and "'cow'" in message
    assert str(own / "train.csv") in message  # where the classes come from


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "no images listed"),
        ("file,labels\n", "no images listed"),
        ("a.jpg,cat,extra\n", "row 1: expected two fields"),
        ("img/a.jpg,cat\nimg/a.jpg,dog\n", "row 2: image 'img/a.jpg' is listed twice"),
    ],
)
def test_malformed_csv(own, tmp_path, text, expected):
    labels = _write(own / "bad.csv", text)
    message = _error(tmp_path, labels)
    assert message.startswith(labels) and expected in message


@pytest.mark.parametrize(
    "content, expected",
    [
        ({"images": [], "annotations": []}, "no 'categories'"),
        ({"categories": [], "images": []}, "no 'categories'"),
        ({"categories": [{"id": 1}], "images": []}, "categories[0] needs an 'id' and a 'name'"),
        (
            {"categories": [{"id": 1, "name": "a"}], "images": [{"id": 1, "file_name": "x.jpg"}],
             "annotations": [{"image_id": 1, "category_id": 3}]},
            "annotations[0]: unknown class: category_id 3",
        ),
        (
            {"categories": [{"id": 1, "name": "a"}], "images": [{"id": 1, "file_name": "x.jpg"}],
             "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2]}]},
            "annotations[0]: 'bbox' must be [x, y, width, height]",
        ),
    ],
)  # fmt: skip
def test_malformed_coco(tmp_path, content, expected):
    labels = _write(tmp_path / "bad.json", json.dumps(content))
    message = _error(tmp_path, labels)
    assert message.startswith(labels) and expected in message


def test_unreadable_json_and_missing_file(tmp_path):
    labels = _write(tmp_path / "bad.json", "{not json")
    assert "not valid JSON" in _error(tmp_path, labels)
    assert "labels file not found" in _error(tmp_path, tmp_path / "none_{split}.csv")


def test_empty_labels_field_is_a_config_error(tmp_path):
    config = folder_config(tmp_path, "")
    with pytest.raises(ConfigError, match=r"data\.folder\.labels is empty"):
        records_lib.load_records(config, "train")


def test_image_size_reads_png_and_jpeg_headers(tmp_path):
    _image(str(tmp_path / "x.png"), size=(7, 5), fmt="PNG")
    _image(str(tmp_path / "y.jpg"), size=(3, 9))
    assert folder.image_size(str(tmp_path / "x.png")) == (5, 7)
    assert folder.image_size(str(tmp_path / "y.jpg")) == (9, 3)
    Image.fromarray(np.zeros([4, 4], np.uint8)).save(str(tmp_path / "z.bmp"))
    with pytest.raises(DataError, match="a BMP image"):
        folder.image_size(str(tmp_path / "z.bmp"))


@pytest.mark.parametrize(
    "spec", ["configs/wsddn.py:smoke", "configs/oicr.py:smoke", "configs/localizer.py:smoke",
             "configs/resnet_voc.py:smoke"],
)  # fmt: skip
def test_every_image_label_job_reads_a_folder(own, tmp_path, spec):
    from jwsol import tasks
    from jwsol.training import config as config_lib

    config = config_lib.load(
        spec, {"data.source": "folder", "data.folder.labels": str(own / "{split}.csv"),
               "data.cache_dir": str(tmp_path / "cache"), "data.verify_images": False},
    )  # fmt: skip
    task = tasks.build(config)
    assert task.class_names == ("cat", "dog") and task.num_train_examples == 2
    batch = next(iter(task.train_batches(0, 2, 0, 1)))
    assert sorted(map(tuple, batch["labels"].tolist())) == [(0, 0), (1, 1)]
