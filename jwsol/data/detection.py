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

The records it reads (one split, cleaned, in NumPy) come from `jwsol.data.records`. Two paths
give the same values: in-memory images of one shape resized to one shape (the scenes) are
gathered and transformed a whole batch at a time; files, bytes and mixed sizes go per example.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from jwsol.data import augment, plan
from jwsol.data.records import Records, load_records
from jwsol.data.stats import IMAGENET_MEAN, IMAGENET_STD
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


def _draws(seed: int, example_index: tf.Tensor, num_scales: tf.Tensor):
    """The random choices of global example `example_index` (int64 scalar): (scale pick int32,
    flip bool), stateless in (seed, index) so that resuming and process slices see the same."""
    key = tf.stack([tf.constant(seed, tf.int64), example_index])
    scale_key = tf.random.experimental.stateless_fold_in(key, 1)
    flip_key = tf.random.experimental.stateless_fold_in(key, 2)
    pick = tf.random.stateless_uniform([], scale_key, 0, num_scales, dtype=tf.int32)
    return pick, tf.random.stateless_uniform([], flip_key) < 0.5


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
        pick, flip = _draws(seed, ex["example_index"], tf.shape(scales)[0])
        shape = tf.shape(image)
        new_h, new_w = augment.target_size(shape[0], shape[1], c.resize_mode, scales[pick], size)
        image, scale_xy = augment.resize_image(image, new_h, new_w, antialias=bool(c.antialias))
        props = augment.scale_boxes(ex["proposals"], scale_xy)
        gt = augment.scale_boxes(ex["gt_boxes"], scale_xy)
        flipped = tf.constant(False)
        if flip_enabled:
            flipped = flip
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
    train, seed = plan_kwargs["train"], plan_kwargs["seed"]
    local = plan.local_batch_size(plan_kwargs["batch_size"], plan_kwargs["process_count"])
    parallel = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True}
    if _one_shape(records, config_data, train):
        arrays = _stacked(records, int(config_data.max_proposals), int(config_data.max_gt_boxes))
        ds = tf.data.Dataset.from_generator(
            _batch_generator(arrays, plan_kwargs, local),
            output_signature=_batch_signature(arrays, local if train else None),
        )
        shape = records.images[0].shape
        ds = ds.map(_make_batch_transform(config_data, shape, train=train, seed=seed), **parallel)
        return ds.prefetch(tf.data.AUTOTUNE)
    ds = tf.data.Dataset.from_generator(
        _generator(records, plan_kwargs, int(config_data.max_proposals)),
        output_signature=_signature(records),
    )
    transform = _make_transform(config_data, records.image_kind, train=train, seed=seed)
    ds = ds.map(transform, **parallel)
    ds = ds.batch(local, drop_remainder=train)
    return ds.prefetch(tf.data.AUTOTUNE)


# In-memory images of one shape, all resized to one shape: whole batches are gathered in NumPy
# and transformed at once: the per-example path's values at a fraction of its CPU time
# (its per-element generator and ops were most of it; docs/speed.md).


def _one_shape(records: Records, c: ml_collections.ConfigDict, train: bool) -> bool:
    """Whether every image is raw, of one shape, and resized to one shape (mode 'fixed', or a
    single side in use)."""
    if records.image_kind != "raw" or not len(records):
        return False
    if any(image.shape != records.images[0].shape for image in records.images):
        return False
    return c.resize_mode == "fixed" or not train or len(set(c.scales)) == 1


def _pad_stack(rows: list[np.ndarray], count: int, fill, dtype) -> np.ndarray:
    """[N, count, ...]: the first `count` rows of each entry, padded with `fill`."""
    out = np.full((len(rows), count) + rows[0].shape[1:], fill, dtype)
    for n, values in enumerate(rows):
        out[n, : len(values[:count])] = values[:count]
    return out


def _counts(rows: list[np.ndarray], count: int) -> np.ndarray:
    """int32 [N]: min(rows of each entry, count)."""
    return np.array([min(len(values), count) for values in rows], np.int32)


def _stacked(records: Records, max_proposals: int, max_gt: int) -> dict[str, np.ndarray]:
    """The records as arrays over the N images, box sets padded to R / G rows (counts kept)."""
    return {
        "image": np.stack(records.images),
        "image_id": np.array([i.encode() for i in records.image_ids], object),
        "image_index": np.arange(len(records), dtype=np.int32),
        "orig_size": np.asarray(records.sizes, np.int32),
        "labels": np.asarray(records.labels, np.float32),
        "label_weights": np.asarray(records.label_weights, np.float32),
        "proposals": _pad_stack(records.proposals, max_proposals, 0, np.float32),
        "proposal_scores": _pad_stack(records.proposal_scores, max_proposals, 0, np.float32),
        "num_proposals": _counts(records.proposals, max_proposals),
        "gt_boxes": _pad_stack(records.gt_boxes, max_gt, 0, np.float32),
        "gt_classes": _pad_stack(records.gt_classes, max_gt, -1, np.int32),
        "gt_difficult": _pad_stack(records.gt_difficult, max_gt, False, bool),
        "num_gt": _counts(records.gt_boxes, max_gt),
    }


def _batch_generator(arrays: dict[str, np.ndarray], plan_kwargs: dict, local: int):
    """Batches of `example_plan`, cut as `batch(local, drop_remainder=train)` would cut them."""

    def generate():
        examples = example_plan(len(arrays["image"]), **plan_kwargs)
        while chunk := list(itertools.islice(examples, local)):
            if plan_kwargs["train"] and len(chunk) < local:
                return
            g, i = np.array(chunk, np.int64).T
            yield {"example_index": g, **{k: v[i] for k, v in arrays.items()}}

    return generate


def _batch_signature(arrays: dict[str, np.ndarray], batch: int | None) -> dict:
    out = {"example_index": tf.TensorSpec([batch], tf.int64)}
    for key, value in arrays.items():
        dtype = tf.string if key == "image_id" else tf.as_dtype(value.dtype)
        out[key] = tf.TensorSpec([batch, *value.shape[1:]], dtype)
    return out


def _normalize_by_channel(image: tf.Tensor) -> tf.Tensor:
    """`augment.normalize` of float [B, h, w, C] (C = 1: grey, or 3) -> [B, h, w, 3], one channel
    at a time: the same float32 ops, without TensorFlow's slow broadcast over the last axis."""
    channels = [image[..., c if image.shape[-1] == 3 else 0] / 255.0 for c in range(3)]
    pairs = zip(channels, IMAGENET_MEAN, IMAGENET_STD, strict=True)
    return tf.stack([(v - mean) / std for v, mean, std in pairs], axis=-1)


def _make_batch_transform(
    c: ml_collections.ConfigDict, image_shape: tuple, *, train: bool, seed: int
):
    """`_make_transform` for a whole batch of raw images of `image_shape` ([H, W] or [H, W, C]),
    all resized to the one shape of the first side in use (`_one_shape`)."""
    size = int(c.image_size)
    sides = [int(s) for s in c.scales] if train else [int(c.eval_scale)]
    height, width = image_shape[:2]
    new_h, new_w = (
        int(v) for v in augment.target_size(height, width, c.resize_mode, sides[0], size)
    )
    scale_xy = tf.cast([new_w, new_h], tf.float32) / tf.cast([width, height], tf.float32)
    flip_enabled = bool(c.flip) and train
    with_proposals = c.proposals.method != "none"
    # NOTE: the per-example path's float32 ops, reordered only where that is exact: grey is
    # resized and flipped as one channel, and an unresized image is normalised through a table
    # of the 256 levels.
    levels = augment.normalize(tf.range(256, dtype=tf.float32)[:, None] * tf.ones([3]))
    resized = (new_h, new_w) != (height, width)

    def pixels(image: tf.Tensor, flipped: tf.Tensor) -> tf.Tensor:
        """uint8 [B, H, W, C] (C = 1 or 3), flipped bool [B] -> float32 [B, new_h, new_w, 3]."""
        if resized:
            image, _ = augment.resize_image(image, new_h, new_w, antialias=bool(c.antialias))
        if flip_enabled:  # NOTE: per example, only those flipped: a batched select costs more
            flip = lambda pair: tf.cond(pair[1], lambda: tf.reverse(pair[0], [1]), lambda: pair[0])
            image = tf.map_fn(flip, (image, flipped), fn_output_signature=image.dtype)
        if resized:
            return _normalize_by_channel(image)
        if image.shape[-1] == 1:
            return tf.gather(levels, tf.cast(image[..., 0], tf.int32))
        index = tf.cast(image, tf.int32) * 3 + tf.range(3)
        return tf.gather(tf.reshape(levels, [-1]), index)

    def per_example(value: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
        """value [K] -> [B, K], B the batch of `like` [B] (static when it is)."""
        tiled = tf.broadcast_to(value[None], tf.stack([tf.shape(like)[0], tf.size(value)]))
        return tf.ensure_shape(tiled, [like.shape[0], value.shape[0]])

    def transform(ex):
        image = ex["image"]
        if image.shape.rank == 3:
            image = image[..., None]
        flipped = tf.zeros_like(ex["image_index"], tf.bool)
        if flip_enabled:
            draw = lambda g: _draws(seed, g, len(sides))[1]
            flipped = tf.map_fn(draw, ex["example_index"], fn_output_signature=tf.bool)
        image = pixels(image, flipped)

        def place(boxes, num_rows):
            """Scaled (and flipped) boxes [B, K, 4], padding rows kept 0, and their mask."""
            boxes = augment.scale_boxes(boxes, scale_xy)
            if flip_enabled:
                boxes = tf.where(flipped[:, None, None], augment.flip_boxes(boxes, new_w), boxes)
            mask = tf.range(boxes.shape[1])[None, :] < num_rows[:, None]
            return tf.where(mask[..., None], boxes, 0.0), mask

        gt, gt_mask = place(ex["gt_boxes"], ex["num_gt"])
        out = {
            "image": augment.pad_image(image, size) if (new_h, new_w) != (size, size) else image,
            "labels": ex["labels"],
            "label_weights": ex["label_weights"],
            "gt_boxes": gt,
            "gt_classes": ex["gt_classes"],
            "gt_difficult": ex["gt_difficult"],
            "gt_mask": gt_mask,
            "image_id": ex["image_id"],
            "image_index": ex["image_index"],
            "example_index": ex["example_index"],
            "orig_size": ex["orig_size"],
            "image_size": per_example(tf.stack([new_h, new_w]), ex["image_index"]),
            "scale_xy": per_example(scale_xy, ex["image_index"]),
            "flipped": flipped,
        }
        if with_proposals:
            out["proposals"], out["proposal_mask"] = place(ex["proposals"], ex["num_proposals"])
            out["proposal_scores"] = ex["proposal_scores"]
        return out

    return transform


def from_records(
    records: Records, config_data: ml_collections.ConfigDict, batch_size: int
) -> tf.data.Dataset:
    """Evaluation batches (one ordered pass, last batch short) of records made elsewhere, e.g.
    a user's own images (`jwsol.data.images.unlabelled_records`)."""
    plan_kwargs = {"train": False, "seed": 0, "batch_size": batch_size, "shuffle": False}
    return _dataset(records, config_data, dict(plan_kwargs, process_index=0, process_count=1))
