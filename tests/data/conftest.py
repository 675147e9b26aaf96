"""Small detection data made by the tests: VOCdevkit folders (JPEG + XML), proposal `.mat`
files in the Fast R-CNN and the course layouts, and configs pointing at them."""

from __future__ import annotations

import os
import shutil
import types

import numpy as np
import pytest
import scipy.io
from PIL import Image

from configs import common

BACKGROUND = (128, 128, 128)

# The test VOC set. Boxes are VOC's 1-based inclusive (xmin, ymin, xmax, ymax); each object is
# painted as a solid rectangle of its colour over the pixels it covers, so tests can check
# that a transformed box still sits on its colour.
VOC_IMAGES = {
    "000001": {
        "size": (120, 90),  # (width, height)
        "objects": [
            {"name": "dog", "box": (11, 21, 60, 80), "color": (220, 30, 30)},
            {"name": "person", "box": (61, 11, 110, 50), "color": (30, 30, 220), "difficult": 1},
        ],
    },
    "000002": {
        "size": (100, 140),
        "objects": [
            {"name": "car", "box": (1, 1, 100, 70), "color": (30, 200, 30), "truncated": 1},
            {"name": "cat", "box": (21, 81, 70, 130), "color": (230, 230, 40)},
        ],
    },
    "000003": {
        "size": (80, 60),
        "objects": [{"name": "bird", "box": (5, 5, 40, 30), "color": (200, 40, 200)}],
    },
    "000004": {
        "size": (64, 64),
        "objects": [{"name": "chair", "box": (10, 10, 50, 50), "color": (40, 200, 200)}],
    },
}
VOC_SPLITS = {
    "train": ["000001", "000002"],
    "val": ["000003", "000004"],
    "trainval": ["000001", "000002", "000003", "000004"],
    "test": ["000001", "000002", "000003", "000004"],
}


def edges(box_1based) -> np.ndarray:
    """VOC 1-based inclusive box -> edge convention, computed by hand's rule."""
    xmin, ymin, xmax, ymax = box_1based
    return np.array([xmin - 1, ymin - 1, xmax, ymax], np.float32)


def write_jpeg(path: str, size: tuple[int, int], objects: list[dict]) -> None:
    width, height = size
    pixels = np.empty([height, width, 3], np.uint8)
    pixels[:] = BACKGROUND
    for obj in objects:
        x1, y1, x2, y2 = edges(obj["box"]).astype(int)
        pixels[y1:y2, x1:x2] = obj["color"]
    Image.fromarray(pixels).save(path, quality=95)


def write_xml(path: str, image_id: str, size: tuple[int, int], objects: list[dict]) -> None:
    width, height = size
    parts = [
        f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for obj in objects:
        xmin, ymin, xmax, ymax = obj["box"]
        parts.append(
            f"<object><name>{obj['name']}</name><pose>Unspecified</pose>"
            f"<truncated>{obj.get('truncated', 0)}</truncated>"
            f"<difficult>{obj.get('difficult', 0)}</difficult>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
            f"<ymax>{ymax}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    with open(path, "w") as f:
        f.write("".join(parts))


def make_vocdevkit(root: str, images: dict = VOC_IMAGES, splits: dict = VOC_SPLITS) -> str:
    """A VOCdevkit/VOC2007 folder under `root`; returns the VOCdevkit path."""
    voc = os.path.join(root, "VOCdevkit", "VOC2007")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    for image_id, spec in images.items():
        write_jpeg(
            os.path.join(voc, "JPEGImages", f"{image_id}.jpg"), spec["size"], spec["objects"]
        )
        write_xml(
            os.path.join(voc, "Annotations", f"{image_id}.xml"),
            image_id,
            spec["size"],
            spec["objects"],
        )
    for split, ids in splits.items():
        with open(os.path.join(voc, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    return os.path.join(root, "VOCdevkit")


def write_mat(path: str, ids, boxes, scores=None, *, ids_as_column: bool = True) -> None:
    """A proposal file: `images` (cell), `boxes` (cell of [P, 4]), and `boxScores` when given.

    Fast R-CNN's files hold `images` as an [N, 1] cell and `boxes` as a [1, N] cell.
    """
    n = len(ids)
    images = np.empty([n, 1] if ids_as_column else [1, n], dtype=object)
    cell_boxes = np.empty([1, n], dtype=object)
    for i, image_id in enumerate(ids):
        images.reshape(-1)[i] = image_id
        b = np.asarray(boxes[i], np.float64)
        cell_boxes[0, i] = b if b.ndim == 2 else b.reshape(-1, 4)
    content = {"images": images, "boxes": cell_boxes}
    if scores is not None:
        cell_scores = np.empty([1, n], dtype=object)
        for i in range(n):
            cell_scores[0, i] = np.asarray(scores[i], np.float64).reshape(-1, 1)
        content["boxScores"] = cell_scores
    scipy.io.savemat(path, content)


def yxyx_1based(box_edges) -> list[float]:
    """Edge-convention (x1, y1, x2, y2) -> the `.mat` layout (y1, x1, y2, x2), 1-based."""
    x1, y1, x2, y2 = box_edges
    return [y1 + 1, x1 + 1, y2, x2]


def voc_proposals(image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the true boxes, a shifted box, a duplicate, a 1-pixel box and (000001 only) a
    box crossing the border; edge-convention boxes with increasing scores."""
    spec = VOC_IMAGES[image_id]
    width, height = spec["size"]
    out = [edges(o["box"]) for o in spec["objects"]]
    out.append(out[0] + np.array([2, 2, 2, 2], np.float32))
    out.append(out[0].copy())
    out.append(np.array([3, 3, 4, 4], np.float32))
    if image_id == "000001":
        out.append(np.array([width - 10, height - 10, width + 20, height + 20], np.float32))
    scores = np.linspace(0.1, 0.9, len(out)).astype(np.float32)
    return np.stack(out), scores


def make_voc_mats(folder: str, *, with_scores: bool, order: str = "yxyx") -> str:
    """One `.mat` per split for VOC_IMAGES; returns the `{split}` path template."""
    os.makedirs(folder, exist_ok=True)
    for split, ids in VOC_SPLITS.items():
        boxes, scores = [], []
        for image_id in ids:
            b, s = voc_proposals(image_id)
            raw = np.array([yxyx_1based(r) for r in b], np.float32)
            boxes.append(raw if order == "yxyx" else raw[:, [1, 0, 3, 2]])
            scores.append(s)
        write_mat(
            os.path.join(folder, f"voc_2007_{split}.mat"),
            ids,
            boxes,
            scores if with_scores else None,
        )
    return os.path.join(folder, "voc_2007_{split}.mat")


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
                spec = VOC_IMAGES[image_id]
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
    return make_vocdevkit(str(tmp_path_factory.mktemp("voc")))


@pytest.fixture
def voc_copy(voc_root, tmp_path) -> str:
    """A private copy of the VOCdevkit folder that a test may damage."""
    return shutil.copytree(voc_root, os.path.join(str(tmp_path), "VOCdevkit"))


@pytest.fixture(scope="session")
def voc_mat_template(tmp_path_factory) -> str:
    return make_voc_mats(str(tmp_path_factory.mktemp("mat")), with_scores=True)


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
    for key, value in overrides.items():
        target = c
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return c


def scenes_data_config(idx_folder: str, cache_dir: str, **overrides):
    """A small scenes config on the synthetic IDX folder (rectangles), selective search in-process."""
    c = common.detection_data()
    c.cache_dir = cache_dir
    c.mnist_folder = idx_folder
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
    for key, value in overrides.items():
        target = c
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return c


@pytest.fixture(scope="session")
def data_tools():
    """The helpers above for tests (conftest modules are not importable by name: tests/ has
    its own conftest.py)."""
    return types.SimpleNamespace(
        VOC_IMAGES=VOC_IMAGES,
        VOC_SPLITS=VOC_SPLITS,
        edges=edges,
        write_jpeg=write_jpeg,
        write_xml=write_xml,
        make_vocdevkit=make_vocdevkit,
        write_mat=write_mat,
        yxyx_1based=yxyx_1based,
        voc_proposals=voc_proposals,
        make_voc_mats=make_voc_mats,
        voc_data_config=voc_data_config,
        mock_as_dataset=mock_as_dataset,
        scenes_data_config=scenes_data_config,
    )
