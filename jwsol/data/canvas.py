"""One MNIST-style object randomly rotated, scaled and placed in a zero canvas, in tf.data.

Example i of a split is a pure function of (seed, i): stateless random ops keyed by the index,
so the pipeline can start at any example (resume) and is the same on every run.
Boxes are (x1, y1, x2, y2) in canvas pixels with exclusive ends: the object's nonzero pixels
span columns x1 .. x2 - 1 and rows y1 .. y2 - 1.

Per-window targets (NumPy, vectorised over the batch and the windows) live here too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from jwsol.data import plan
from jwsol.ops.windows import WindowGeometry


def max_object_extent(source_size: int, max_scale: float, max_rotation_deg: float) -> float:
    """Largest side of the rotated, scaled `source_size` square: a bound on the object's box."""
    theta = math.radians(min(abs(max_rotation_deg), 45.0))
    return source_size * max_scale * (math.cos(theta) + math.sin(theta))


def _affine(angle: tf.Tensor, scale: tf.Tensor, src_center: float, dst_center: float) -> tf.Tensor:
    """Output pixel -> input pixel map (as ImageProjectiveTransform wants it), 8 floats.

    The source is rotated by `angle` (radians) and scaled by `scale` about its centre, which
    lands on `dst_center` of the canvas. Pixel centres sit at integer coordinates.
    """
    c, s = tf.cos(angle) / scale, tf.sin(angle) / scale
    # input = R(-angle) / scale @ (output - dst_center) + src_center
    a0, a1 = c, s
    b0, b1 = -s, c
    a2 = src_center - a0 * dst_center - a1 * dst_center
    b2 = src_center - b0 * dst_center - b1 * dst_center
    return tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])


def _nonzero_extent(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """First index and one-past-last index of True along a 1-D boolean mask."""
    n = tf.shape(mask, out_type=tf.int64)[0]
    first = tf.argmax(tf.cast(mask, tf.int32), output_type=tf.int64)
    last = n - tf.argmax(tf.cast(mask[::-1], tf.int32), output_type=tf.int64)
    return first, last


def place_object(
    image: tf.Tensor,
    seed: tf.Tensor,
    canvas_size: int,
    scale_range: tuple[float, float],
    max_rotation_deg: float,
    threshold: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Randomly rotates, scales and places `image` (uint8 [h, w]) fully inside a zero canvas.

    Args:
      seed: int64 [2], the stateless seed of this example.
    Returns:
      canvas float32 [S, S, 1] in [0, 1]; box int64 [4] (x1, y1, x2, y2), exclusive ends, from
      the pixels above `threshold` of the transformed object.
    """
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
        images=src, transforms=_affine(angle, scale, src_center, dst_center)[None],
        output_shape=[canvas_size, canvas_size], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]  # fmt: skip
    on = centred[:, :, 0] > threshold
    y1, y2 = _nonzero_extent(tf.reduce_any(on, axis=1))
    x1, x2 = _nonzero_extent(tf.reduce_any(on, axis=0))
    # An integer shift keeps the pixels exact; every allowed shift keeps the box inside.
    dx = tf.random.stateless_uniform([], seeds[2], -x1, canvas_size - x2 + 1, dtype=tf.int64)
    dy = tf.random.stateless_uniform([], seeds[3], -y1, canvas_size - y2 + 1, dtype=tf.int64)
    canvas = tf.roll(centred, shift=tf.stack([dy, dx]), axis=[0, 1])
    return canvas, tf.stack([x1 + dx, y1 + dy, x2 + dx, y2 + dy])


def crop_around_box(
    canvas: tf.Tensor, box: tf.Tensor, seed: tf.Tensor, crop_size: int, step: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """A random `crop_size` square of `canvas` [S, S, 1] that holds the whole `box`.

    The crop's top-left corner is a multiple of `step` on each axis (the net's window stride:
    then the crop's windows are windows of the whole canvas), drawn uniformly among those that
    keep the box (x1, y1, x2, y2, exclusive ends) inside. Returns (crop [C, C, 1], box in crop
    pixels). The caller guarantees such a corner exists (`min_crop_size`).
    """
    size = tf.shape(canvas, out_type=tf.int64)[0]
    corner = []
    for k, s in enumerate(tf.unstack(tf.random.experimental.stateless_split(seed, 2))):
        lo = tf.maximum(box[k + 2] - crop_size, 0)  # x2 - C (k = 0) or y2 - C, at least 0
        hi = tf.minimum(box[k], size - crop_size)  # x1 (k = 0) or y1, at most S - C
        first, last = (lo + step - 1) // step, hi // step
        corner.append(tf.random.stateless_uniform([], s, first, last + 1, dtype=tf.int64) * step)
    x0, y0 = corner
    crop = canvas[y0 : y0 + crop_size, x0 : x0 + crop_size]
    return tf.ensure_shape(crop, [crop_size, crop_size, 1]), box - tf.stack([x0, y0, x0, y0])


def min_crop_size(max_extent: float, step: int) -> int:
    """Smallest crop that holds any object `max_extent` px wide at some corner on the step grid.

    An object whose pixel box is w <= ceil(max_extent) + 1 wide (bilinear sampling can add a
    pixel) fits a crop at C - w + 1 consecutive corners, `step` of which cover every residue.
    """
    return math.ceil(max_extent) + step


def canvas_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    indices: tf.data.Dataset,
    *,
    seed: int,
    canvas_size: int,
    scale_range: tuple[float, float],
    max_rotation_deg: float,
    threshold: float,
    sample_with_replacement: bool,
    crop: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Maps example indices (int64) to dicts image [S,S,1], box int64 [4], label int32 [].

    `sample_with_replacement`: example i takes a random source image (training); otherwise
    source image i % N (the fixed test split). `crop` = (C, step): return instead a random
    C x C crop of each canvas holding the whole object, its corner on a `step` grid
    (`crop_around_box`); image [C, C, 1], box in crop pixels.
    """
    if crop is not None and (crop[0] > canvas_size or (canvas_size - crop[0]) % crop[1]):
        raise ValueError(
            f"crop {crop[0]} of a {canvas_size} px canvas: canvas - crop must be a multiple of "
            f"{crop[1]} (the crop's corner is on that grid) and not negative"
        )
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    n = len(images)

    def make(index):
        seed_pair = tf.stack([tf.constant(seed, tf.int64), index])
        pick, place = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 2))
        if sample_with_replacement:
            src = tf.random.stateless_uniform([], pick, 0, n, dtype=tf.int64)
        else:
            src = index % n
        canvas, box = place_object(
            images_t[src], place, canvas_size, scale_range, max_rotation_deg, threshold
        )
        if crop is not None:
            cut = tf.random.experimental.stateless_fold_in(place, 1)
            canvas, box = crop_around_box(canvas, box, cut, *crop)
        return {"image": canvas, "box": box, "label": labels_t[src], "index": index}

    return indices.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def window_targets(
    boxes: np.ndarray, labels: np.ndarray, geom: WindowGeometry
) -> dict[str, np.ndarray]:
    """Per-window targets for the whole batch, no loops over windows.

    Args:
      boxes: [N, 4] (x1, y1, x2, y2) canvas pixels, exclusive ends.
      labels: [N] class ids.
      geom: the net's window geometry; window (i, j) spans rows geom.span(i), columns geom.span(j).
    Returns:
      y0 float32 [N, H, W]: 1 where the object's box lies entirely inside the window;
      y1 int32 [N, H, W]: the class (everywhere; only used where y0 = 1);
      box float32 [N, H, W, 4]: (x1, y1, x2, y2) in the window's own coordinates, 0 at its
        top/left edge and 1 at its bottom/right edge.
    """
    boxes = np.asarray(boxes, np.float32)
    starts = (geom.offset + geom.stride * np.arange(geom.count)).astype(np.float32)
    wy, wx = starts[None, :, None], starts[None, None, :]  # [1, H, 1], [1, 1, W]
    x1, y1, x2, y2 = (boxes[:, k, None, None] for k in range(4))  # each [N, 1, 1]
    inside = (x1 >= wx) & (y1 >= wy) & (x2 <= wx + geom.size) & (y2 <= wy + geom.size)
    local = np.stack(
        np.broadcast_arrays((x1 - wx), (y1 - wy), (x2 - wx), (y2 - wy)), axis=-1
    ) / np.float32(geom.size)
    shape = inside.shape
    return {
        "y0": inside.astype(np.float32),
        "y1": np.broadcast_to(np.asarray(labels, np.int32)[:, None, None], shape).copy(),
        "box": local.astype(np.float32),
    }


def window_box_to_canvas(
    box: np.ndarray, i: np.ndarray, j: np.ndarray, geom: WindowGeometry
) -> np.ndarray:
    """Inverse of the window coordinates: box [..., 4] of window (i, j) -> canvas pixels."""
    y0 = geom.offset + geom.stride * np.asarray(i, np.float32)
    x0 = geom.offset + geom.stride * np.asarray(j, np.float32)
    origin = np.stack([x0, y0, x0, y0], axis=-1)
    return origin + np.asarray(box, np.float32) * geom.size


def _with_targets(batch: dict[str, np.ndarray], geom: WindowGeometry) -> dict[str, np.ndarray]:
    """`batch` plus its window targets as `target_<name>` (see `window_targets`)."""
    targets = window_targets(batch["box"], batch["label"], geom)
    return {**batch, **{f"target_{k}": v for k, v in targets.items()}}


def train_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    geom: WindowGeometry,
    seed: int,
    start_step: int,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    **canvas_kwargs,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless host batches of B = batch_size // process_count random canvases with the window
    targets of `geom`; global example g of the plan (`jwsol.data.plan`) draws its source image
    and placement from (seed, g). `canvas_kwargs`: those of `canvas_dataset`."""
    local = plan.local_batch_size(batch_size, process_count)
    indices = plan.plan_dataset(
        len(labels), train=True, batch_size=batch_size, start_step=start_step,
        process_index=process_index, process_count=process_count,
    ).map(lambda g, _: g)  # fmt: skip
    ds = canvas_dataset(
        images, labels, indices, seed=seed, sample_with_replacement=True, **canvas_kwargs
    )
    for batch in ds.batch(local, drop_remainder=True).prefetch(2).as_numpy_iterator():
        yield _with_targets(batch, geom)


def eval_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    geom: WindowGeometry,
    seed: int,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    **canvas_kwargs,
) -> Iterator[dict[str, np.ndarray]]:
    """One canvas per source image, in order (fixed placements from `seed`), with the window
    targets of `geom`; this process's share, the last batch short."""
    local = plan.local_batch_size(batch_size, process_count)
    indices = plan.plan_dataset(
        len(labels), train=False, batch_size=batch_size, process_index=process_index,
        process_count=process_count,
    ).map(lambda g, _: g)  # fmt: skip
    ds = canvas_dataset(
        images, labels, indices, seed=seed, sample_with_replacement=False, **canvas_kwargs
    )
    for batch in ds.batch(local).prefetch(2).as_numpy_iterator():
        yield _with_targets(batch, geom)
