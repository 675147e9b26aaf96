"""Per-example image and box transforms for tf.data pipelines (TensorFlow ops, no JAX).

Boxes are `[N, 4]` (x1, y1, x2, y2) in continuous pixel-edge coordinates (see
`jwsol.data.proposals`). With TensorFlow's half-pixel-centre resizing, an image resized from
`(h, w)` to `(nh, nw)` maps every edge coordinate by `x * nw / w` and `y * nh / h` exactly, and a
horizontal flip of an image `w` wide maps `(x1, x2)` to `(w - x2, w - x1)`.

Order in a pipeline: decode -> `resize_image` (+ `scale_boxes`) -> `flip_left_right` (inside the
resized, unpadded image) -> `normalize` -> `pad_image` to the static canvas -> `pad_rows` for
boxes. `boxes_to_original` (NumPy) inverts the box part for evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from jwsol.data.stats import IMAGENET_MEAN, IMAGENET_STD

RESIZE_MODES = ("fixed", "shorter_side", "longer_side")


def decode_image(data: tf.Tensor, channels: int = 3) -> tf.Tensor:
    """Encoded JPEG/PNG bytes (a scalar string) -> uint8 [H, W, channels] (grey replicated).

    NOTE: JPEGs use libjpeg's accurate integer DCT, the one PIL (and so torchvision) uses;
    TensorFlow's default fast DCT differs by a few levels in many pixels.
    """
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=channels, expand_animations=False),
    )


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """[H, W] or [H, W, 1] or [H, W, 3] -> [H, W, 3] (grey replicated)."""
    if image.shape.rank == 2:
        image = image[:, :, None]
    return tf.cond(
        tf.shape(image)[2] == 1, lambda: tf.image.grayscale_to_rgb(image[:, :, :1]), lambda: image
    )


def target_size(
    height: tf.Tensor, width: tf.Tensor, mode: str, side: tf.Tensor, max_size: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """The resized (height, width), int32 scalars.

    mode 'fixed': (max_size, max_size), aspect ratio not kept.
    mode 'shorter_side': shorter side = `side`, unless the longer side would exceed `max_size`,
      then longer side = `max_size` (Fast R-CNN's rule).
    mode 'longer_side': longer side = `side` (<= max_size).
    """
    if mode == "fixed":
        return tf.constant(max_size, tf.int32), tf.constant(max_size, tf.int32)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    side = tf.cast(side, tf.float32)
    if mode == "shorter_side":
        scale = tf.minimum(side / tf.minimum(h, w), max_size / tf.maximum(h, w))
    elif mode == "longer_side":
        scale = tf.minimum(side, max_size) / tf.maximum(h, w)
    else:
        raise ValueError(f"resize mode {mode!r}; expected one of {RESIZE_MODES}")
    new_h = tf.clip_by_value(tf.cast(tf.round(h * scale), tf.int32), 1, max_size)
    new_w = tf.clip_by_value(tf.cast(tf.round(w * scale), tf.int32), 1, max_size)
    return new_h, new_w


def resize_image(
    image: tf.Tensor, new_height: tf.Tensor, new_width: tf.Tensor, antialias: bool = True
) -> tuple[tf.Tensor, tf.Tensor]:
    """Resizes `image [H, W, C]` (or a batch [B, H, W, C]) to float32 [(B,) new_height,
    new_width, C] (values kept, 0..255).

    With `antialias`, the dimensions that shrink are first reduced by area averaging (a box
    filter, exact pixel-area weights), then those that grow are bilinearly interpolated; without
    it, plain bilinear. Both steps use half-pixel-centre geometry, so box edges scale exactly.
    NOTE: not `tf.image.resize(..., antialias=True)`: its kernel costs 8-10 ms for a VOC image
    here against about 1 ms for area + bilinear.

    Returns the image and `scale_xy` float32 [2] = (new_width / W, new_height / H), the factors
    that map box edge coordinates.
    """
    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]
    resized = tf.cast(image, tf.float32)
    if antialias:
        shrunk = tf.stack([tf.minimum(height, new_height), tf.minimum(width, new_width)])
        resized = tf.image.resize(resized, shrunk, method="area")
    resized = tf.image.resize(resized, tf.stack([new_height, new_width]), method="bilinear")
    scale_xy = tf.stack(
        [
            tf.cast(new_width, tf.float32) / tf.cast(width, tf.float32),
            tf.cast(new_height, tf.float32) / tf.cast(height, tf.float32),
        ]
    )
    return resized, scale_xy


def scale_boxes(boxes: tf.Tensor, scale_xy: tf.Tensor) -> tf.Tensor:
    """boxes [N, 4] * (sx, sy, sx, sy)."""
    return boxes * tf.tile(scale_xy, [2])[None, :]


def flip_boxes(boxes: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Mirror boxes [N, 4] in an image `width` wide: (x1, x2) -> (width - x2, width - x1)."""
    width = tf.cast(width, boxes.dtype)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack([width - x2, y1, width - x1, y2], axis=-1)


def flip_left_right(
    image: tf.Tensor, boxes: Sequence[tf.Tensor], flip: tf.Tensor
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Flips `image [H, W, C]` and every `[N, 4]` box set in it when the bool `flip` is True."""
    width = tf.shape(image)[1]
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    return image, [tf.cond(flip, lambda b=b: flip_boxes(b, width), lambda b=b: b) for b in boxes]


def normalize(image: tf.Tensor) -> tf.Tensor:
    """float 0..255 [..., 3] -> (x / 255 - ImageNet mean) / ImageNet std."""
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)
    return (tf.cast(image, tf.float32) / 255.0 - mean) / std


def denormalize(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Inverse of `normalize` (or of another per-channel mean [3] / std [3]) in NumPy: float
    [..., 3] -> uint8 0..255 (for pictures)."""
    out = (np.asarray(image) * np.asarray(std) + np.asarray(mean)) * 255.0
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def pad_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """Pads `image [h, w, C]` (or a batch [B, h, w, C]; h, w <= size) with zeros at the
    bottom/right to [(B,) size, size, C].

    After `normalize`, zero is the ImageNet mean colour. Boxes are unaffected (top-left anchor).
    """
    shape = tf.shape(image)
    batch = [[0, 0]] * (image.shape.rank - 3)
    padded = tf.pad(image, batch + [[0, size - shape[-3]], [0, size - shape[-2]], [0, 0]])
    return tf.ensure_shape(padded, image.shape[:-3].as_list() + [size, size, image.shape[-1]])


def pad_rows(values: tf.Tensor, count: int, fill=0) -> tf.Tensor:
    """The first `count` rows of `values [N, ...]`, padded with `fill` to exactly `count` rows."""
    values = values[:count]
    pad = count - tf.shape(values)[0]
    paddings = [[0, pad]] + [[0, 0]] * (values.shape.rank - 1)
    padded = tf.pad(values, paddings, constant_values=tf.cast(fill, values.dtype))
    return tf.ensure_shape(padded, [count] + values.shape[1:].as_list())


def row_mask(num_rows: tf.Tensor, count: int) -> tf.Tensor:
    """bool [count]: True for the first min(num_rows, count) entries."""
    return tf.range(count) < tf.minimum(tf.cast(num_rows, tf.int32), count)


def boxes_to_original(
    boxes: np.ndarray, scale_xy: np.ndarray, image_size: np.ndarray, flipped: np.ndarray
) -> np.ndarray:
    """Maps boxes in resized-image pixels back to original-image pixels (NumPy, batched).

    Args:
      boxes: float [B, N, 4] in the pipeline's (resized, maybe flipped) image.
      scale_xy: float [B, 2] (sx, sy) from the batch.
      image_size: int [B, 2] (height, width) of the resized image before padding.
      flipped: bool [B].
    Returns float32 [B, N, 4] in original pixels (edge convention).
    """
    boxes = np.asarray(boxes, np.float32).copy()
    width = np.asarray(image_size, np.float32)[:, 1][:, None]
    flip = np.asarray(flipped, bool)[:, None]
    x1, x2 = boxes[..., 0].copy(), boxes[..., 2].copy()
    boxes[..., 0] = np.where(flip, width - x2, x1)
    boxes[..., 2] = np.where(flip, width - x1, x2)
    scale = np.tile(np.asarray(scale_xy, np.float32), 2)[:, None, :]
    return boxes / scale
