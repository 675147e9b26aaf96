"""Detection input pipeline throughput (images/s): VOC-sized JPEGs with 2000 proposals, and scenes.

Each case is measured against a reference run in the same process: the same per-image work
(decode, resize, flip, normalise, pad proposals) as a plain sequential OpenCV/NumPy loop. The
ratio says what tf.data's parallel map buys on this machine. "host side only" is the index plan
and record lookups through `from_generator` alone, the single-threaded part. Results: a table in
the pytest summary and benchmarks/results/data_pipeline.json (machine described by
benchmarks/conftest.py).
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image

from configs import common
from jwsol.data import augment, detection
from jwsol.data import records as records_lib

NUM_VOC_IMAGES = 48
NUM_PROPOSALS = 2000
BATCH = 8


def _make_voc(root: str) -> tuple[str, str]:
    """NUM_VOC_IMAGES 500x375 / 375x500 JPEGs with XMLs and one `.mat` of 2000 proposals each."""
    rng = np.random.default_rng(0)
    voc = os.path.join(root, "VOCdevkit", "VOC2007")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    ids, boxes = [], []
    for n in range(NUM_VOC_IMAGES):
        image_id = f"{n:06d}"
        width, height = (500, 375) if n % 3 else (375, 500)
        # Smooth noise plus rectangles: compresses like a photo, not like a flat colour.
        small = rng.integers(0, 255, [height // 16 + 1, width // 16 + 1, 3], dtype=np.uint8)
        pixels = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(voc, "JPEGImages", f"{image_id}.jpg"), quality=90)
        with open(os.path.join(voc, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(
                f"<annotation><size><width>{width}</width><height>{height}</height></size>"
                "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>20</xmin>"
                "<ymin>30</ymin><xmax>200</xmax><ymax>300</ymax></bndbox></object></annotation>"
            )
        x1 = rng.uniform(1, width - 40, NUM_PROPOSALS)
        y1 = rng.uniform(1, height - 40, NUM_PROPOSALS)
        x2 = np.minimum(width, x1 + rng.uniform(20, 400, NUM_PROPOSALS))
        y2 = np.minimum(height, y1 + rng.uniform(20, 400, NUM_PROPOSALS))
        boxes.append(np.round(np.stack([y1, x1, y2, x2], 1)))
        ids.append(image_id)
    with open(os.path.join(voc, "ImageSets", "Main", "trainval.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    images = np.empty([len(ids), 1], dtype=object)
    cells = np.empty([1, len(ids)], dtype=object)
    for i, image_id in enumerate(ids):
        images[i, 0], cells[0, i] = image_id, boxes[i]
    mat = os.path.join(root, "voc_2007_trainval.mat")
    scipy.io.savemat(mat, {"images": images, "boxes": cells})
    return os.path.join(root, "VOCdevkit"), os.path.join(root, "voc_2007_{split}.mat")


def _pipeline_rate(config, split: str, batches: int) -> float:
    ds = detection.build(config, split, train=True, seed=0, batch_size=BATCH)
    it = ds.as_numpy_iterator()
    for _ in range(3):  # warm-up: tracing, thread pools, prefetch
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - start)


def _generator_rate(config, split: str, count: int) -> float:
    """The host side alone: index plan and record lookups through `from_generator`."""
    import tensorflow as tf

    records = records_lib.load_records(config, split)
    plan = {"train": True, "seed": 0, "batch_size": BATCH}
    ds = tf.data.Dataset.from_generator(
        detection._generator(records, plan, int(config.max_proposals)),
        output_signature=detection._signature(records),
    )
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(count):
        next(it)
    return count / (time.perf_counter() - start)


def _reference_rate(config, split: str, count: int) -> float:
    """The same per-example work, sequential, with OpenCV and NumPy."""
    records = records_lib.load_records(config, split)
    size, r = int(config.image_size), int(config.max_proposals)
    mean = np.array(augment.IMAGENET_MEAN, np.float32)
    std = np.array(augment.IMAGENET_STD, np.float32)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for k in range(count):
        i = k % len(records)
        item = records.images[i]
        if records.image_kind == "path":
            image = cv2.imdecode(np.fromfile(item, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        else:
            image = np.repeat(np.asarray(item)[:, :, None], 3, axis=2)
        h, w = image.shape[:2]
        resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        props = records.proposals[i][:r] * np.array([size / w, size / h] * 2, np.float32)
        if rng.random() < 0.5:
            resized = resized[:, ::-1]
            props = np.stack([size - props[:, 2], props[:, 1], size - props[:, 0], props[:, 3]], 1)
        _ = (resized / 255.0 - mean) / std
        padded = np.zeros([r, 4], np.float32)
        padded[: len(props)] = props
    return count / (time.perf_counter() - start)


@pytest.fixture(scope="module")
def results(write_results, report_table, format_table):
    """Collects one row per case; writes the JSON and prints the table when the module ends."""
    import tensorflow as tf

    rows: list[dict] = []
    yield rows
    path = write_results(
        "data_pipeline",
        rows,
        {
            "versions_extra": {"tensorflow": tf.__version__, "opencv": cv2.__version__},
            "batch": BATCH,
        },
    )
    columns = [
        ("case", "case", ""),
        ("pipeline_images_per_s", "pipeline img/s", ".1f"),
        ("reference_images_per_s", "reference img/s", ".1f"),
        ("ratio", "ratio", ".2f"),
        ("generator_only_images_per_s", "host side only img/s", ".0f"),
    ]
    report_table(f"detection input pipeline ({path.name})", format_table(rows, columns))


@pytest.mark.parametrize("image_size", [224, 512])
def test_voc_sized_images_with_2000_proposals(tmp_path_factory, results, image_size):
    root = str(tmp_path_factory.mktemp("voc_bench"))
    voc_root, mat = _make_voc(root)
    config = common.voc_data()
    config.voc_root, config.proposals.mat_file, config.cache_dir = voc_root, mat, root
    config.image_size, config.max_proposals = image_size, NUM_PROPOSALS
    records = records_lib.load_records(config, "trainval")
    assert len(records) == NUM_VOC_IMAGES and min(len(p) for p in records.proposals) > 1500
    pipeline = _pipeline_rate(config, "trainval", batches=12)
    reference = _reference_rate(config, "trainval", count=48)
    results.append(
        {
            "case": f"voc 500x375 -> {image_size}, R=2000",
            "pipeline_images_per_s": pipeline,
            "reference_images_per_s": reference,
            "ratio": pipeline / reference,
            "note": "reference: sequential cv2 decode + INTER_AREA resize + flip + normalise + pad",
            "generator_only_images_per_s": _generator_rate(config, "trainval", count=200),
        }
    )
    assert pipeline > 0 and reference > 0


def test_scenes(tmp_path_factory, results):
    config = common.detection_data()
    config.cache_dir = str(tmp_path_factory.mktemp("scenes_bench"))
    config.scenes.num_train, config.scenes.num_test = 96, 8
    config.proposals.num_workers = 1
    records = records_lib.load_records(config, "train")
    pipeline = _pipeline_rate(config, "train", batches=24)
    reference = _reference_rate(config, "train", count=192)
    results.append(
        {
            "case": "scenes 128 -> 224, R=200",
            "pipeline_images_per_s": pipeline,
            "reference_images_per_s": reference,
            "ratio": pipeline / reference,
            "mean_proposals": float(np.mean([len(p) for p in records.proposals])),
            "generator_only_images_per_s": _generator_rate(config, "train", count=500),
        }
    )
    assert pipeline > 0 and reference > 0
