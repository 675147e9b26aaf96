"""Fixed crops and thumbnails of padded image batches, in tf.data (TensorFlow ops, no JAX).

The detection builder (`jwsol.data.detection.build`) yields `image [B, S, S, 3]`, each resized
image at the top-left of a zero canvas with its (height, width) in `image_size [B, 2]`. Here:

- `five_crop` takes torchvision's FiveCrop of the resized image: crops of `size x size` at the
  top-left, top-right, bottom-left and bottom-right corners and the centre, in that order; the
  centre crop starts at round((h - size) / 2), round((w - size) / 2) (round half to even, as
  Python's round in torchvision). An image smaller than the crop is not an error: the crop
  starts at 0 and takes in the canvas's zero padding.
- `thumbnails` shrinks each resized image (without its padding) into `t x t` uint8 RGB,
  aspect kept and centred on black, for pictures of ranked images.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from jwsol.errors import ConfigError

NUM_CROPS = 5


def five_crop_offsets(image_size: tf.Tensor, size: int, canvas: int) -> tf.Tensor:
    """int32 [5, 2] (top, left) of the five crops of an image `image_size` (h, w) int32 [2],
    clipped to [0, canvas - size] so every crop lies inside the canvas."""
    h, w = image_size[0], image_size[1]
    bottom, right = h - size, w - size
    centre_y = tf.cast(tf.round(tf.cast(bottom, tf.float32) / 2.0), tf.int32)
    centre_x = tf.cast(tf.round(tf.cast(right, tf.float32) / 2.0), tf.int32)
    zero = tf.zeros_like(h)
    offsets = tf.stack([
        tf.stack([zero, zero]), tf.stack([zero, right]), tf.stack([bottom, zero]),
        tf.stack([bottom, right]), tf.stack([centre_y, centre_x]),
    ])  # fmt: skip
    return tf.clip_by_value(offsets, 0, canvas - size)


def five_crop(images: tf.Tensor, image_size: tf.Tensor, size: int) -> tf.Tensor:
    """images [B, S, S, C], image_size int32 [B, 2] -> crops [B, 5, size, size, C]."""
    canvas = images.shape[1]
    if canvas is not None and canvas < size:
        raise ConfigError(f"crop size {size} exceeds the {canvas}px canvas (data.image_size).")
    offsets = tf.map_fn(
        lambda hw: five_crop_offsets(hw, size, tf.shape(images)[1]),
        tf.cast(image_size, tf.int32),
        fn_output_signature=tf.TensorSpec([NUM_CROPS, 2], tf.int32),
    )  # [B, 5, 2]
    rows = offsets[:, :, 0:1] + tf.range(size)[None, None, :]  # [B, 5, size]
    cols = offsets[:, :, 1:2] + tf.range(size)[None, None, :]
    picked_rows = tf.gather(images, rows, axis=1, batch_dims=1)  # [B, 5, size, S, C]
    return tf.gather(picked_rows, cols, axis=3, batch_dims=2)  # [B, 5, size, size, C]


def thumbnails(
    images: tf.Tensor,
    image_size: tf.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> tf.Tensor:
    """Normalised images [B, S, S, 3] (valid region `image_size` [B, 2]) -> uint8 [B, t, t, 3],
    un-normalised with `mean`/`std` (of [0, 1] pixels), aspect kept, padded with black."""
    mean_t, std_t = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)

    def one(args):
        image, hw = args
        valid = image[: hw[0], : hw[1]]
        pixels = tf.clip_by_value((valid * std_t + mean_t) * 255.0, 0.0, 255.0)
        small = tf.image.resize_with_pad(pixels, size, size, antialias=True)
        return tf.cast(tf.round(tf.clip_by_value(small, 0.0, 255.0)), tf.uint8)

    return tf.map_fn(
        one,
        (images, tf.cast(image_size, tf.int32)),
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
    )
