"""One MNIST-style object randomly rotated, scaled and placed in a zero canvas, in tf.data.

Example i of a split is a pure function of (seed, i): stateless random ops keyed by the index,
so the pipeline can start at any example (resume) and is the same on every run. Whole batches
are made at once, with the values the per-example ops gave: the draws of 1,024 examples at a
time in NumPy (`jwsol.data.stateless`: TensorFlow's stateless values), then per batch in
TensorFlow one bilinear transform, the extents, and the shift and crop as two gathers.
Boxes are (x1, y1, x2, y2) in canvas pixels with exclusive ends: the object's nonzero pixels
span columns x1 .. x2 - 1 and rows y1 .. y2 - 1.

Per-window targets (NumPy, vectorised over the batch and the windows) live here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

from jwsol.data import plan, stateless
from jwsol.ops.windows import WindowGeometry


def max_object_extent(source_size: int, max_scale: float, max_rotation_deg: float) -> float:
    """Largest side of the rotated, scaled `source_size` square: a bound on the object's box."""
    theta = math.radians(min(abs(max_rotation_deg), 45.0))
    return source_size * max_scale * (math.cos(theta) + math.sin(theta))


def _draws(
    seed: int,
    index: np.ndarray,
    num_images: int,
    canvas_size: int,
    sample_with_replacement: bool,
    scale_range: tuple[float, float],
    max_rotation_deg: float,
) -> dict[str, np.ndarray]:
    """The random choices of the examples `index` (int64 [N]), each from its own (seed, index).

    Returns src int64 [N] (the source image), angle float32 [N] (radians), scale float32 [N]
    and remainders int64 [N, 4, S + 1]: the x shift's, y shift's, crop corner x's and y's
    random bits modulo 1 .. S + 1, so that once the box fixes a draw's range [lo, hi) the draw,
    lo + bits mod (hi - lo), is a lookup (`_in_range`) in the whole-batch stage.
    """
    index = np.asarray(index, np.int64)
    pair = np.stack([np.full_like(index, seed), index], axis=-1)
    pick, place = np.moveaxis(stateless.split(pair, 2), 1, 0)
    if sample_with_replacement:
        src = stateless.uniform_int64(pick, 0, num_images)
    else:
        src = index % num_images
    seeds = stateless.split(place, 4)  # angle, scale, x shift, y shift
    low, high = [-max_rotation_deg, scale_range[0]], [max_rotation_deg, scale_range[1]]
    degrees, scale = stateless.uniform_float32(seeds[:, :2], low, high).T
    corner_seeds = stateless.split(stateless.fold_in(place, 1), 2)  # x, y
    bits = stateless.full_int64(np.concatenate([seeds[:, 2:], corner_seeds], axis=1), 1)
    spans = np.arange(1, canvas_size + 2)  # every range a shift or a corner can have
    return {
        "src": src,
        "angle": degrees * np.float32(math.pi / 180.0),
        "scale": scale,
        "remainders": stateless.in_range(bits, 0, spans),
    }


def _scalar_cos_sin(angle: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """cos and sin [B] of `angle` [B], one angle at a time.

    NOTE: TensorFlow's vectorised cos/sin differ from its scalar ones in the last bit for ~1%
    of angles, and every canvas so far was made with the scalar ones. A static batch is
    unstacked (4x cheaper than the loop a dynamic one needs).
    """
    if angle.shape[0] is None:
        both = tf.map_fn(lambda a: tf.stack([tf.cos(a), tf.sin(a)]), angle)
        return both[:, 0], both[:, 1]
    angles = tf.unstack(angle)
    return tf.stack([tf.cos(a) for a in angles]), tf.stack([tf.sin(a) for a in angles])


def _affine(angle: tf.Tensor, scale: tf.Tensor, src_center: float, dst_center: float) -> tf.Tensor:
    """Output pixel -> input pixel maps (as ImageProjectiveTransform wants them), float32 [B, 8].

    The source is rotated by `angle` [B] (radians) and scaled by `scale` [B] about its centre,
    which lands on `dst_center` of the canvas. Pixel centres sit at integer coordinates.
    """
    cos, sin = _scalar_cos_sin(angle)
    c, s = cos / scale, sin / scale
    # input = R(-angle) / scale @ (output - dst_center) + src_center
    a0, a1 = c, s
    b0, b1 = -s, c
    a2 = src_center - a0 * dst_center - a1 * dst_center
    b2 = src_center - b0 * dst_center - b1 * dst_center
    zero = tf.zeros_like(c)
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=-1)


def _centred(images: tf.Tensor, angle: tf.Tensor, scale: tf.Tensor, canvas_size: int) -> tf.Tensor:
    """`images` (uint8 [B, h, w]) rotated and scaled about the centre of a zero canvas, one
    bilinear resampling for the batch: float32 [B, S, S, 1] in [0, 1]."""
    src = tf.cast(images, tf.float32)[:, :, :, None] / 255.0
    src_center = (float(images.shape[1]) - 1.0) / 2.0
    dst_center = (canvas_size - 1.0) / 2.0
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=src, transforms=_affine(angle, scale, src_center, dst_center),
        output_shape=[canvas_size, canvas_size], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )  # fmt: skip


def _nonzero_extent(mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """First index and one-past-last index of True along each row of a boolean mask [B, n]."""
    n = tf.shape(mask, out_type=tf.int64)[1]
    first = tf.argmax(tf.cast(mask, tf.int32), axis=1, output_type=tf.int64)
    return first, n - tf.argmax(tf.cast(mask[:, ::-1], tf.int32), axis=1, output_type=tf.int64)


def _in_range(remainders: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor) -> tf.Tensor:
    """int64 [B, K]: draws in [lo, hi) ([B, K] each) from their `remainders` [B, K, M]."""
    return lo + tf.gather(remainders, hi - lo - 1, batch_dims=2)


def place_and_crop(
    centred: tf.Tensor, remainders: tf.Tensor, threshold: float, crop: tuple[int, int] | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Shifts each centred object to a random place where it lies fully inside its canvas, and
    with `crop` = (C, step) cuts a random C x C part of the canvas that holds the whole object.

    Args:
      centred: float32 [B, S, S, 1], the objects about the canvases' centre (`_centred`).
      remainders: int64 [B, 4, S + 1], the random draws of `_draws`.
    Returns:
      image float32 [B, S, S, 1] (or [B, C, C, 1]); box int64 [B, 4] (x1, y1, x2, y2) in its
      pixels, exclusive ends, from the pixels above `threshold`.
    """
    size = centred.shape[1]
    on = centred[..., 0] > threshold
    y1, y2 = _nonzero_extent(tf.reduce_any(on, axis=2))
    x1, x2 = _nonzero_extent(tf.reduce_any(on, axis=1))
    # An integer shift keeps the pixels exact; every allowed shift keeps the box inside.
    lo, hi = -tf.stack([x1, y1], 1), size - tf.stack([x2, y2], 1) + 1
    dx, dy = tf.unstack(_in_range(remainders[:, :2], lo, hi), axis=1)
    box = tf.stack([x1 + dx, y1 + dy, x2 + dx, y2 + dy], axis=-1)
    x0 = y0 = tf.zeros_like(dx)
    out = size
    if crop is not None:
        # The corner on the `step` grid (the net's window stride: then the crop's windows are
        # windows of the whole canvas), uniform among those that keep the box inside.
        out, step = crop
        lo, hi = tf.maximum(box[:, 2:] - out, 0), tf.minimum(box[:, :2], size - out)
        first, last = (lo + step - 1) // step, hi // step
        x0, y0 = tf.unstack(_in_range(remainders[:, 2:], first, last + 1) * step, axis=1)
        box = box - tf.stack([x0, y0, x0, y0], axis=-1)
    # The shift (a roll of the canvas) and the crop as two gathers.
    offsets = tf.range(out, dtype=tf.int64)
    rows = (y0[:, None] + offsets - dy[:, None]) % size  # [B, out]
    cols = (x0[:, None] + offsets - dx[:, None]) % size
    image = tf.gather(tf.gather(centred, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    return image, box


def min_crop_size(max_extent: float, step: int) -> int:
    """Smallest crop that holds any object `max_extent` px wide at some corner on the step grid.

    An object whose pixel box is w <= ceil(max_extent) + 1 wide (bilinear sampling can add a
    pixel) fits a crop at C - w + 1 consecutive corners, `step` of which cover every residue.
    """
    return math.ceil(max_extent) + step


_CHUNK = 1024  # examples whose draws are made together: NumPy's per-call cost, amortised


def _draw_chunks(index_batches: Callable[[], Iterable[np.ndarray]], draw: Callable):
    """A generator function of chunks of batches: dicts index int64 [K, B] and `draw(index)`
    reshaped to [K, B, ...], for the batches of `index_batches()` in order (a shorter batch in
    a chunk of its own)."""

    def generate():
        batches = iter(index_batches())
        while True:
            group, count = [], 0
            while count < _CHUNK and (batch := next(batches, None)) is not None:
                group.append(np.asarray(batch, np.int64))
                count += len(group[-1])
            if not group:
                return
            values = {"index": np.concatenate(group)}
            values |= draw(values["index"])
            start = 0
            for size in dict.fromkeys(len(g) for g in group):  # only the last batch is short
                count = sum(len(g) == size for g in group) * size
                yield {k: v[start : start + count].reshape(-1, size, *v.shape[1:])
                       for k, v in values.items()}  # fmt: skip
                start += count

    return generate


def canvas_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    index_batches: Callable[[], Iterable[np.ndarray]],
    *,
    batch_size: int | None,
    seed: int,
    canvas_size: int,
    scale_range: tuple[float, float],
    max_rotation_deg: float,
    threshold: float,
    sample_with_replacement: bool,
    crop: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of example indices (int64 [B], from the iterable `index_batches()` returns) as
    dicts image [B, S, S, 1], box int64 [B, 4], label int32 [B], index int64 [B], made a whole
    batch at a time; `batch_size`: B when every batch has it (a static shape), else None.

    `sample_with_replacement`: example i takes a random source image (training); otherwise
    source image i % N (the fixed test split). `crop` = (C, step): return instead a random
    C x C crop of each canvas holding the whole object, its corner on a `step` grid
    (`place_and_crop`); image [B, C, C, 1], box in crop pixels.
    """
    if crop is not None and (crop[0] > canvas_size or (canvas_size - crop[0]) % crop[1]):
        raise ValueError(
            f"crop {crop[0]} of a {canvas_size} px canvas: canvas - crop must be a multiple of "
            f"{crop[1]} (the crop's corner is on that grid) and not negative"
        )
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    draw_kwargs = {"num_images": len(images), "canvas_size": canvas_size,
                   "sample_with_replacement": sample_with_replacement,
                   "scale_range": scale_range, "max_rotation_deg": max_rotation_deg}  # fmt: skip
    b = batch_size
    signature = {
        "index": tf.TensorSpec([None, b], tf.int64), "src": tf.TensorSpec([None, b], tf.int64),
        "angle": tf.TensorSpec([None, b], tf.float32),
        "scale": tf.TensorSpec([None, b], tf.float32),
        "remainders": tf.TensorSpec([None, b, 4, canvas_size + 1], tf.int64),
    }  # fmt: skip
    # NOTE: Python runs once a chunk: per batch it would hold the GIL the training loop needs.
    draws = tf.data.Dataset.from_generator(
        _draw_chunks(index_batches, lambda index: _draws(seed, index, **draw_kwargs)),
        output_signature=signature,
    ).unbatch()

    def make(ex):
        centred = _centred(tf.gather(images_t, ex["src"]), ex["angle"], ex["scale"], canvas_size)
        image, box = place_and_crop(centred, ex["remainders"], threshold, crop)
        return {"image": image, "box": box, "label": tf.gather(labels_t, ex["src"]),
                "index": ex["index"]}  # fmt: skip

    return draws.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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


def _with_targets(batch: dict[str, tf.Tensor], geom: WindowGeometry) -> dict[str, tf.Tensor]:
    """`batch` plus its window targets as `target_<name>` (`window_targets`, in the pipeline)."""
    size = batch["box"].shape[0]
    shapes = {"y0": [size, geom.count, geom.count], "y1": [size, geom.count, geom.count],
              "box": [size, geom.count, geom.count, 4]}  # fmt: skip
    values = tf.numpy_function(
        lambda boxes, labels: tuple(window_targets(boxes, labels, geom)[k] for k in shapes),
        [batch["box"], batch["label"]], (tf.float32, tf.int32, tf.float32), stateful=False,
    )  # fmt: skip
    targets = {f"target_{k}": tf.ensure_shape(v, shapes[k]) for k, v in zip(shapes, values)}
    return {**batch, **targets}


def _index_batches(num_examples: int, *, train: bool, **where) -> Iterator[np.ndarray]:
    """This process's global example indices int64 [B] of each batch of the plan (`plan`):
    endless in training, from `start_step`; one pass in evaluation, the last batch short."""
    if train:  # the plan's epoch order is unused: each example draws its source (`_draws`)
        yield from (g for g, _ in plan.train_plan(num_examples, seed=0, **where))
    else:
        yield from (g for g in plan.eval_plan(num_examples, **where) if len(g))


def _batches(
    images: np.ndarray, labels: np.ndarray, geom: WindowGeometry, *, train: bool, where: dict,
    **canvas_kwargs,
) -> Iterator[dict[str, np.ndarray]]:  # fmt: skip
    local = plan.local_batch_size(where["batch_size"], where["process_count"])
    ds = canvas_dataset(
        images, labels, lambda: _index_batches(len(labels), train=train, **where),
        batch_size=local if train else None, sample_with_replacement=train, **canvas_kwargs,
    )  # fmt: skip
    ds = ds.map(lambda batch: _with_targets(batch, geom), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(2).as_numpy_iterator()


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
    where = {"batch_size": batch_size, "start_step": start_step,
             "process_index": process_index, "process_count": process_count}  # fmt: skip
    return _batches(images, labels, geom, train=True, where=where, seed=seed, **canvas_kwargs)


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
    where = {"batch_size": batch_size, "process_index": process_index,
             "process_count": process_count}  # fmt: skip
    return _batches(images, labels, geom, train=False, where=where, seed=seed, **canvas_kwargs)
