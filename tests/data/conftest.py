"""Fixtures of the data tests: the made-up VOCdevkit folder and proposal files (jwsol.data.fake),
configs pointing at them, and a tfds mock of voc/2007."""

from __future__ import annotations

import os
import shutil
import types

import numpy as np
import pytest

from configs import common
from jwsol.data import fake


def mock_as_dataset(voc_root, broken_id=None):
    """`_as_dataset` for tfds.testing.mock_data: tfds voc/2007 examples made from the test folder,
    with the builder's own conventions (bbox = (ymin/h, xmin/w, ymax/h, xmax/w), 1-based)."""
    # NOTE: TensorFlow is imported inside the helpers, so the other data tests do not pay for it.
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from jwsol.data import voc

    split_ids = {"train": ["000001", "000002"], "validation": ["000003"], "test": ["000004"]}

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        del self, read_config, shuffle_files
        assert isinstance(decoders["image"], tfds.decode.SkipDecoding)

        def examples():
            for image_id in split_ids[str(split)]:
                spec = fake.VOC_IMAGES[image_id]
                width, height = spec["size"]
                with open(
                    os.path.join(voc_root, "VOC2007", "JPEGImages", f"{image_id}.jpg"), "rb"
                ) as f:
                    data = f.read()
                boxes = [
                    [
                        o["box"][1] / height,
                        o["box"][0] / width,
                        o["box"][3] / height,
                        o["box"][2] / width,
                    ]
                    for o in spec["objects"]
                ]
                labels = [voc.VOC_CLASSES.index(o["name"]) for o in spec["objects"]]
                difficult = [bool(o.get("difficult", 0)) for o in spec["objects"]]
                if image_id == broken_id:
                    difficult = difficult + [False]
                yield {
                    "image": data,
                    "image/filename": f"{image_id}.jpg",
                    "objects": {
                        "bbox": np.asarray(boxes, np.float32),
                        "label": np.asarray(labels, np.int64),
                        "is_difficult": np.asarray(difficult, bool),
                        "is_truncated": np.asarray(
                            [bool(o.get("truncated", 0)) for o in spec["objects"]]
                        ),
                        "pose": np.zeros([len(labels)], np.int64),
                    },
                    "labels": np.asarray(sorted(set(labels)), np.int64),
                    "labels_no_difficult": np.asarray(sorted(set(labels)), np.int64),
                }

        return tf.data.Dataset.from_generator(
            examples,
            output_signature={
                "image": tf.TensorSpec([], tf.string),
                "image/filename": tf.TensorSpec([], tf.string),
                "objects": {
                    "bbox": tf.TensorSpec([None, 4], tf.float32),
                    "label": tf.TensorSpec([None], tf.int64),
                    "is_difficult": tf.TensorSpec([None], tf.bool),
                    "is_truncated": tf.TensorSpec([None], tf.bool),
                    "pose": tf.TensorSpec([None], tf.int64),
                },
                "labels": tf.TensorSpec([None], tf.int64),
                "labels_no_difficult": tf.TensorSpec([None], tf.int64),
            },
        )

    return as_dataset


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory) -> str:
    """A clean, read-only-by-convention VOCdevkit folder (copy it before breaking files)."""
    return fake.make_vocdevkit(str(tmp_path_factory.mktemp("voc")))


@pytest.fixture
def voc_copy(voc_root, tmp_path) -> str:
    """A private copy of the VOCdevkit folder that a test may damage."""
    return shutil.copytree(voc_root, os.path.join(str(tmp_path), "VOCdevkit"))


@pytest.fixture(scope="session")
def tin_folder(tmp_path_factory) -> str:
    """A small made-up tiny-imagenet-200 folder (3 classes, 24 px)."""
    return fake.write_tinyimagenet_folder(
        str(tmp_path_factory.mktemp("tin")), num_classes=3, train_per_class=4, val_per_class=2,
        size=24,
    )  # fmt: skip


@pytest.fixture(scope="session")
def voc_mat_template(tmp_path_factory) -> str:
    return fake.make_voc_mats(str(tmp_path_factory.mktemp("mat")), with_scores=True)


def voc_data_config(voc_root: str, mat_template: str, cache_dir: str, **overrides):
    """A data config for the test VOC folder with `.mat` proposals."""
    c = common.voc_data()
    c.voc_root = voc_root
    c.cache_dir = cache_dir
    c.proposals.mat_file = mat_template
    c.image_size = 60
    c.scales = (60,)
    c.eval_scale = 60
    c.max_proposals = 8
    c.max_gt_boxes = 4
    c.lock()  # a misspelt field is an error, as in train.py
    c.update_from_flattened_dict(overrides)
    return c


def scenes_data_config(idx_folder: str, cache_dir: str, **overrides):
    """A small scenes config on the synthetic IDX folder (rectangles), selective search in-process."""
    c = common.detection_data()
    c.cache_dir = cache_dir
    c.mnist.folder = idx_folder
    c.scenes.num_train = 12
    c.scenes.num_test = 6
    c.scenes.canvas_size = 64
    c.scenes.min_object_size = 20
    c.scenes.max_object_size = 32
    c.scenes.max_objects = 3
    c.image_size = 64
    c.scales = (64,)
    c.eval_scale = 64
    c.proposals.num_workers = 1
    c.max_proposals = 64
    c.max_gt_boxes = 4
    c.lock()  # a misspelt field is an error, as in train.py
    c.update_from_flattened_dict(overrides)
    return c


@pytest.fixture(scope="session")
def data_tools():
    """The config makers and the tfds mock above (conftest modules are not importable by name;
    the made-up data sets themselves are in jwsol.data.fake)."""
    return types.SimpleNamespace(
        voc_data_config=voc_data_config,
        mock_as_dataset=mock_as_dataset,
        scenes_data_config=scenes_data_config,
    )
