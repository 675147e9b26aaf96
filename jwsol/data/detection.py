"""The one detection-data builder of the WSDDN and localizer jobs: scenes, VOC folder or tfds.

`build(config_data, split, train=..., seed=..., batch_size=...)` returns a `tf.data.Dataset` of
per-process batches with static shapes (B = batch_size // process_count, S = image_size,
R = max_proposals, G = max_gt_boxes, C = number of classes):

  image            float32 [B, S, S, 3]  normalised (ImageNet mean/std); zero padding at the
                                         bottom/right when the resized image is smaller than S
  labels           float32 [B, C]        multi-hot image labels (data.difficult_policy)
  label_weights    float32 [B, C]        0 for classes to ignore ('ignore' policy), else 1
  proposals        float32 [B, R, 4]     (x1, y1, x2, y2) in the resized (and flipped) image's
                                         pixels; rows past proposal_mask are 0
  proposal_scores  float32 [B, R]        the source's scores, 0 where it has none
  proposal_mask    bool    [B, R]        (the three proposal keys are absent with
                                         proposals.method 'none')
  gt_boxes         float32 [B, G, 4]     true boxes, same coordinates as proposals
  gt_classes       int32   [B, G]        (-1 in padding)
  gt_difficult     bool    [B, G]
  gt_mask          bool    [B, G]
  image_id         string  [B]           e.g. b'000005' (VOC) or b'test_00042' (scenes)
  image_index      int32   [B]           position of the image in the split's records
  example_index    int64   [B]           global example index (see below)
  orig_size        int32   [B, 2]        (height, width) of the original image
  image_size       int32   [B, 2]        (height, width) of the resized image before padding
  scale_xy         float32 [B, 2]        (sx, sy): resized = original * scale
  flipped          bool    [B]

`augment.boxes_to_original(boxes, scale_xy, image_size, flipped)` maps boxes back.

Determinism and resuming: examples follow the global-index plan of `jwsol.data.plan` (epoch
permutations, process slices), and every random choice for global index `g` (scale, flip) is a
stateless function of `(seed, g)`, so the batches from `start_index = k * batch_size` are exactly
those an uninterrupted run sees from step k. Evaluation (train=False) walks the images in order
once, without flips, at the eval scale; its last batch is short (the training loop pads it).

The records it reads (one split, cleaned, in NumPy) come from `jwsol.data.records`.
"""

from __future__ import annotations

from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from jwsol.data import augment, plan
from jwsol.data.records import Records, load_records
from jwsol.errors import ConfigError


def example_plan(
    num_images: int,
    *,
    train: bool,
    seed: int,
    batch_size: int,
    start_index: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
) -> Iterator[tuple[int, int]]:
    """Yields (global example index, image index) for this process, in batch order (`plan`).

    Training is infinite; evaluation covers each image once. Both start at global index
    `start_index`.
    """
    if start_index % batch_size:
        raise ConfigError(
            f"start_index {start_index} is not a multiple of batch size {batch_size}."
        )
    where = {"batch_size": batch_size, "process_index": process_index}
    where["process_count"] = process_count
    if not train:
        for g in plan.eval_plan(num_images, **where):
            yield from ((int(i), int(i)) for i in g if i >= start_index)
        return
    steps = plan.train_plan(
        num_images, seed=seed, start_step=start_index // batch_size, shuffle=shuffle, **where
    )
    for g, images in steps:
        yield from zip(g.tolist(), images.tolist(), strict=True)


_PROPOSAL_KEYS = ("proposals", "proposal_scores", "proposal_mask")


def _generator(records: Records, plan_kwargs: dict, max_proposals: int):
    def generate():
        for g, i in example_plan(len(records), **plan_kwargs):
            yield {
                "image": records.images[i],
                "image_id": records.image_ids[i],
                "image_index": np.int32(i),
                "example_index": np.int64(g),
                "orig_size": records.sizes[i],
                "labels": records.labels[i],
                "label_weights": records.label_weights[i],
                "proposals": records.proposals[i][:max_proposals],
                "proposal_scores": records.proposal_scores[i][:max_proposals],
                "gt_boxes": records.gt_boxes[i],
                "gt_classes": records.gt_classes[i],
                "gt_difficult": records.gt_difficult[i],
            }

    return generate


def _signature(records: Records) -> dict:
    c = records.labels.shape[1]
    if records.image_kind == "raw":
        image = tf.TensorSpec([None, None] + ([3] if records.images[0].ndim == 3 else []), tf.uint8)
    else:
        image = tf.TensorSpec([], tf.string)
    return {
        "image": image,
        "image_id": tf.TensorSpec([], tf.string),
        "image_index": tf.TensorSpec([], tf.int32),
        "example_index": tf.TensorSpec([], tf.int64),
        "orig_size": tf.TensorSpec([2], tf.int32),
        "labels": tf.TensorSpec([c], tf.float32),
        "label_weights": tf.TensorSpec([c], tf.float32),
        "proposals": tf.TensorSpec([None, 4], tf.float32),
        "proposal_scores": tf.TensorSpec([None], tf.float32),
        "gt_boxes": tf.TensorSpec([None, 4], tf.float32),
        "gt_classes": tf.TensorSpec([None], tf.int32),
        "gt_difficult": tf.TensorSpec([None], tf.bool),
    }


def _make_transform(c: ml_collections.ConfigDict, kind: str, *, train: bool, seed: int):
    size = int(c.image_size)
    max_props, max_gt = int(c.max_proposals), int(c.max_gt_boxes)
    scales = tf.constant([int(s) for s in c.scales] if train else [int(c.eval_scale)], tf.int32)
    flip_enabled = bool(c.flip) and train
    # proposals.method 'none': records carry empty proposals and batches none.
    with_proposals = c.proposals.method != "none"

    def transform(ex):
        if kind == "path":
            image = augment.decode_image(tf.io.read_file(ex["image"]))
        elif kind == "bytes":
            image = augment.decode_image(ex["image"])
        else:
            image = augment.to_rgb(ex["image"])
        key = tf.stack([tf.constant(seed, tf.int64), ex["example_index"]])
        scale_key = tf.random.experimental.stateless_fold_in(key, 1)
        flip_key = tf.random.experimental.stateless_fold_in(key, 2)
        pick = tf.random.stateless_uniform([], scale_key, 0, tf.shape(scales)[0], dtype=tf.int32)
        shape = tf.shape(image)
        new_h, new_w = augment.target_size(shape[0], shape[1], c.resize_mode, scales[pick], size)
        image, scale_xy = augment.resize_image(image, new_h, new_w, antialias=bool(c.antialias))
        props = augment.scale_boxes(ex["proposals"], scale_xy)
        gt = augment.scale_boxes(ex["gt_boxes"], scale_xy)
        flipped = tf.constant(False)
        if flip_enabled:
            flipped = tf.random.stateless_uniform([], flip_key) < 0.5
            image, (props, gt) = augment.flip_left_right(image, [props, gt], flipped)
        num_props = tf.shape(props)[0]
        num_gt = tf.shape(gt)[0]
        out = {
            "image": augment.pad_image(augment.normalize(image), size),
            "labels": ex["labels"],
            "label_weights": ex["label_weights"],
            "proposals": augment.pad_rows(props, max_props),
            "proposal_scores": augment.pad_rows(ex["proposal_scores"], max_props),
            "proposal_mask": augment.row_mask(num_props, max_props),
            "gt_boxes": augment.pad_rows(gt, max_gt),
            "gt_classes": augment.pad_rows(ex["gt_classes"], max_gt, fill=-1),
            "gt_difficult": augment.pad_rows(ex["gt_difficult"], max_gt, fill=False),
            "gt_mask": augment.row_mask(num_gt, max_gt),
            "image_id": ex["image_id"],
            "image_index": ex["image_index"],
            "example_index": ex["example_index"],
            "orig_size": ex["orig_size"],
            "image_size": tf.stack([new_h, new_w]),
            "scale_xy": scale_xy,
            "flipped": flipped,
        }
        if not with_proposals:
            out = {k: v for k, v in out.items() if k not in _PROPOSAL_KEYS}
        return out

    return transform


def build(
    config_data: ml_collections.ConfigDict,
    split: str,
    *,
    train: bool,
    seed: int,
    batch_size: int,
    start_index: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
    """The detection batches of `split` for this process (see the module docstring).

    Args:
      config_data: a `configs/common.py:detection_data()`-shaped ConfigDict.
      split: 'train'/'test' (scenes) or 'train'/'val'/'trainval'/'test' (VOC).
      train: infinite, shuffled, multi-scale and flipped; else one ordered pass, last batch short.
      seed: fixes the epoch permutations and every random choice.
      batch_size: the GLOBAL batch size; this process gets batch_size // process_count.
      start_index: global example index to start at (a multiple of batch_size), for resuming.
      process_index, process_count: this process's slice of each global batch.
    """
    records = load_records(config_data, split)
    max_proposals = int(config_data.max_proposals)
    over = sum(len(p) > max_proposals for p in records.proposals)
    if over:
        logging.warning(
            "%s/%s: %d of %d images have more than data.max_proposals=%d proposals; the first "
            "%d are used (%s).",
            config_data.source,
            split,
            over,
            len(records),
            max_proposals,
            max_proposals,
            "best scores" if records.has_scores else "in the source's order",
        )
    plan_kwargs = {
        "train": train,
        "seed": seed,
        "batch_size": batch_size,
        "start_index": start_index,
        "process_index": process_index,
        "process_count": process_count,
        "shuffle": bool(config_data.shuffle),
    }
    if not 0 <= process_index < process_count:
        raise ConfigError(f"process_index {process_index} outside 0..{process_count - 1}.")
    return _dataset(records, config_data, plan_kwargs)


def _dataset(records: Records, config_data: ml_collections.ConfigDict, plan_kwargs: dict):
    ds = tf.data.Dataset.from_generator(
        _generator(records, plan_kwargs, int(config_data.max_proposals)),
        output_signature=_signature(records),
    )
    train, seed = plan_kwargs["train"], plan_kwargs["seed"]
    transform = _make_transform(config_data, records.image_kind, train=train, seed=seed)
    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    local = plan.local_batch_size(plan_kwargs["batch_size"], plan_kwargs["process_count"])
    ds = ds.batch(local, drop_remainder=train)
    return ds.prefetch(tf.data.AUTOTUNE)


def from_records(
    records: Records, config_data: ml_collections.ConfigDict, batch_size: int
) -> tf.data.Dataset:
    """Evaluation batches (one ordered pass, last batch short) of records made elsewhere, e.g.
    a user's own images (`jwsol.data.images.unlabelled_records`)."""
    plan_kwargs = {"train": False, "seed": 0, "batch_size": batch_size, "shuffle": False}
    return _dataset(records, config_data, dict(plan_kwargs, process_index=0, process_count=1))
