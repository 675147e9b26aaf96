"""The whole-batch canvas pipeline gives the per-example pipeline's batches, value for value.

The reference is the per-example pipeline as it was before the whole-batch one (one example
index at a time through TensorFlow's stateless ops, `ImageProjectiveTransformV3` per example,
`tf.roll`, a slice per crop, then `.batch` and the window targets in NumPy), kept here only as
the test's oracle: training with and without crops, evaluation with a short last batch, resuming
at a `start_step`, two processes' slices.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from jwsol.data import canvas, plan
from jwsol.ops.windows import WindowGeometry

# The per-example reference -------------------------------------------------------------------


def _ref_affine(angle, scale, src_center, dst_center):
    c, s = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1 = c, s
    b0, b1 = -s, c
    a2 = src_center - a0 * dst_center - a1 * dst_center
    b2 = src_center - b0 * dst_center - b1 * dst_center
    return tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])


def _ref_extent(mask):
    n = tf.shape(mask, out_type=tf.int64)[0]
    first = tf.argmax(tf.cast(mask, tf.int32), output_type=tf.int64)
    last = n - tf.argmax(tf.cast(mask[::-1], tf.int32), output_type=tf.int64)
    return first, last


def _ref_place(image, seed, canvas_size, scale_range, max_rotation_deg, threshold):
    seeds = tf.random.experimental.stateless_split(seed, 4)
    angle = tf.random.stateless_uniform(
        [], seeds[0], -max_rotation_deg, max_rotation_deg, dtype=tf.float32
    ) * (math.pi / 180.0)
    scale = tf.random.stateless_uniform(
        [], seeds[1], scale_range[0], scale_range[1], dtype=tf.float32
    )
    src = tf.cast(image, tf.float32)[None, :, :, None] / 255.0
    src_center = (float(image.shape[0]) - 1.0) / 2.0
    dst_center = (canvas_size - 1.0) / 2.0
    centred = tf.raw_ops.ImageProjectiveTransformV3(
        images=src, transforms=_ref_affine(angle, scale, src_center, dst_center)[None],
        output_shape=[canvas_size, canvas_size], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]  # fmt: skip
    on = centred[:, :, 0] > threshold
    y1, y2 = _ref_extent(tf.reduce_any(on, axis=1))
    x1, x2 = _ref_extent(tf.reduce_any(on, axis=0))
    dx = tf.random.stateless_uniform([], seeds[2], -x1, canvas_size - x2 + 1, dtype=tf.int64)
    dy = tf.random.stateless_uniform([], seeds[3], -y1, canvas_size - y2 + 1, dtype=tf.int64)
    placed = tf.roll(centred, shift=tf.stack([dy, dx]), axis=[0, 1])
    return placed, tf.stack([x1 + dx, y1 + dy, x2 + dx, y2 + dy])


def _ref_crop(image, box, seed, crop_size, step):
    size = tf.shape(image, out_type=tf.int64)[0]
    corner = []
    for k, s in enumerate(tf.unstack(tf.random.experimental.stateless_split(seed, 2))):
        lo = tf.maximum(box[k + 2] - crop_size, 0)
        hi = tf.minimum(box[k], size - crop_size)
        first, last = (lo + step - 1) // step, hi // step
        corner.append(tf.random.stateless_uniform([], s, first, last + 1, dtype=tf.int64) * step)
    x0, y0 = corner
    crop = image[y0 : y0 + crop_size, x0 : x0 + crop_size]
    return tf.ensure_shape(crop, [crop_size, crop_size, 1]), box - tf.stack([x0, y0, x0, y0])


def _ref_batches(images, labels, *, geom, seed, train, batch_size, start_step=0,
                 process_index=0, process_count=1, canvas_size, scale_range, max_rotation_deg,
                 threshold, crop=None):  # fmt: skip
    images_t, labels_t, n = tf.constant(images), tf.constant(labels), len(images)

    def make(index):
        seed_pair = tf.stack([tf.constant(seed, tf.int64), index])
        pick, place = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 2))
        if train:
            src = tf.random.stateless_uniform([], pick, 0, n, dtype=tf.int64)
        else:
            src = index % n
        image, box = _ref_place(
            images_t[src], place, canvas_size, scale_range, max_rotation_deg, threshold
        )
        if crop is not None:
            cut = tf.random.experimental.stateless_fold_in(place, 1)
            image, box = _ref_crop(image, box, cut, *crop)
        return {"image": image, "box": box, "label": labels_t[src], "index": index}

    local = plan.local_batch_size(batch_size, process_count)
    where = {"batch_size": batch_size, "process_index": process_index}
    where["process_count"] = process_count
    if train:
        where["start_step"] = start_step
    indices = plan.plan_dataset(n, train=train, **where).map(lambda g, _: g)
    ds = indices.map(make).batch(local, drop_remainder=train)
    for batch in ds.as_numpy_iterator():
        targets = canvas.window_targets(batch["box"], batch["label"], geom)
        yield {**batch, **{f"target_{k}": v for k, v in targets.items()}}


# The comparison ------------------------------------------------------------------------------


def _images(n=7):
    """Grey objects with texture and soft edges, so that bilinear sampling makes every level."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, 28, 28), np.uint8)
    for k in range(n):
        h, w = rng.integers(5, 22, 2)
        y, x = rng.integers(0, 28 - h), rng.integers(0, 28 - w)
        images[k, y : y + h, x : x + w] = rng.integers(1, 256, (h, w))
    return images, np.arange(n, dtype=np.int32) % 3


KWARGS = {"canvas_size": 64, "scale_range": (0.75, 1.25), "max_rotation_deg": 15.0}
GEOM_64 = WindowGeometry(size=48, stride=4, offset=0, count=5, input_size=64)
GEOM_56 = WindowGeometry(size=48, stride=4, offset=0, count=3, input_size=56)


def _assert_same(new, reference, count=None):
    new, reference = list(new)[:count], list(reference)[:count]
    assert len(new) == len(reference) > 0
    for a, b in zip(new, reference, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _train(images, labels, count, **kwargs):
    new = canvas.train_batches(images, labels, **kwargs)
    new = [next(new) for _ in range(count)]
    ref = _ref_batches(images, labels, train=True, **kwargs)
    return new, [next(ref) for _ in range(count)]


@pytest.mark.parametrize(
    "case",
    [
        {"crop": (56, 4), "geom": GEOM_56, "threshold": 0.0},
        {"crop": None, "geom": GEOM_64, "threshold": 0.0},
        {"crop": (48, 8), "geom": WindowGeometry(48, 4, 0, 1, 48), "threshold": 0.3},
    ],
    ids=["crop56", "whole", "crop48_threshold"],
)
def test_training_batches_equal_the_per_example_pipeline(case):
    images, labels = _images()
    kwargs = {**KWARGS, **case, "seed": 3, "batch_size": 6}
    new, ref = _train(images, labels, 4, start_step=0, **kwargs)
    _assert_same(new, ref)
    boxes = np.concatenate([b["box"] for b in new])
    assert len({tuple(b) for b in boxes.tolist()}) > 12  # placements vary


def test_resume_and_process_slices_equal_the_per_example_pipeline():
    images, labels = _images()
    kwargs = {**KWARGS, "crop": (56, 4), "geom": GEOM_56, "threshold": 0.0, "seed": 11}
    _assert_same(*_train(images, labels, 3, start_step=5, batch_size=4, **kwargs))
    for p in range(2):
        where = {"process_index": p, "process_count": 2, "start_step": 2, "batch_size": 4}
        _assert_same(*_train(images, labels, 2, **where, **kwargs))


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_equal_the_per_example_pipeline(process_count):
    images, labels = _images(11)  # 11 = 2 x 4 + 3: a short last batch, split unevenly
    for p in range(process_count):
        kwargs = {**KWARGS, "geom": GEOM_64, "threshold": 0.0, "seed": 2, "batch_size": 4,
                  "process_index": p, "process_count": process_count}  # fmt: skip
        new = list(canvas.eval_batches(images, labels, **kwargs))
        _assert_same(new, _ref_batches(images, labels, train=False, **kwargs))
        sizes = [len(b["index"]) for b in new]
        assert sizes == ([4, 4, 3] if process_count == 1 else [2, 2, 1 + p])


def test_transforms_equal_the_per_example_ones_bit_for_bit():
    """The batch's affine maps equal the scalar ones exactly (TensorFlow's vectorised cos/sin
    would change about 2% of the canvases by a last bit)."""
    rng = np.random.default_rng(5)
    angle = (rng.uniform(-15, 15, 400) * (math.pi / 180)).astype(np.float32)
    scale = rng.uniform(0.75, 1.25, 400).astype(np.float32)
    want = [_ref_affine(tf.constant(a), tf.constant(s), 13.5, 31.5) for a, s in zip(angle, scale)]
    static = canvas._affine(tf.constant(angle), tf.constant(scale), 13.5, 31.5)
    np.testing.assert_array_equal(static.numpy(), np.stack(want))
    dynamic = tf.function(
        lambda a, s: canvas._affine(a, s, 13.5, 31.5),
        input_signature=[tf.TensorSpec([None], tf.float32)] * 2,
    )  # an evaluation batch: its size unknown when traced
    np.testing.assert_array_equal(dynamic(angle, scale).numpy(), np.stack(want))
