"""The image-classification data of the ResNet job: sources, augmentation, tf.data pipeline.

Sources (`config.data.source`): 'tinyimagenet' (the folder, `jwsol.data.tinyimagenet`),
'fake_tinyimagenet' (a made-up folder, `jwsol.data.fake`) or 'mnist' (the `data.mnist`
section, zero-padded to `data.image_size`; `load_source`).

The pipeline (`classification_dataset`) serves any classification source: images in memory
(uint8 [N, H, W, C], e.g. Fashion-MNIST padded to 32x32) or image files (TinyImageNet). Example
`g` of the training stream (a global example index, `jwsol.data.plan`) shows image
`perm(seed, epoch)[g % N]` with every random choice of its augmentation a stateless function of
`(seed, g)`, so a resumed run sees exactly the batches of an uninterrupted one.

Training augmentation (`augment`, seed 004's recipe, in this order, in [0, 1] pixel values):
zero-pad `pad` px and crop back at a uniform offset; horizontal flip (p 0.5); rotation by a
uniform angle in [-rotate_deg, rotate_deg] about the centre (p `rotate_prob`, bilinear, zero
fill); additive Gaussian noise of std `noise_std` (p `noise_prob`, clipped to [0, 1]); coarse
dropout: `holes_min`..`holes_max` holes of `hole_min`..`hole_max` px a side set to 0 (p
`dropout_prob`). Then per-channel normalisation `(x - mean) / std`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from jwsol.data import fake, mnist, plan, tinyimagenet
from jwsol.data.augment import decode_image
from jwsol.errors import ConfigError, DataError

_AUGMENT_SALT = 0xA06  # keeps the augmentation keys apart from other uses of the seed

SOURCES = ("tinyimagenet", "fake_tinyimagenet", "mnist")


def load_source(d: ml_collections.ConfigDict) -> tuple[tuple, tuple, tuple[str, ...]]:
    """((train images, labels), (test images, labels), class names) of `config.data`.

    Images are str paths [N] (tiny-imagenet folders) or uint8 [N, S, S] (mnist); labels int32
    [N].
    `num_train` / `num_test` > 0 keep the first that many of a split.
    """
    if d.source in ("tinyimagenet", "fake_tinyimagenet"):
        folder = d.folder if d.source == "tinyimagenet" else fake.tinyimagenet_folder(d.cache_dir)
        data = tinyimagenet.load(folder)
        train, test = tinyimagenet.split(data, d.split, d.train_fraction, d.split_seed)
        names = data.names
    elif d.source == "mnist":
        train, test = (
            pad_to(*mnist.load_config(d.mnist, s), d.image_size) for s in ("train", "test")
        )
        names = mnist.class_names(d.mnist.source, d.mnist.tfds_name, d.mnist.folder)
    else:
        raise ConfigError(f"data.source={d.source!r} is unknown; use one of {SOURCES}.")
    train = tuple(x[: d.num_train] if d.num_train > 0 else x for x in train)
    test = tuple(x[: d.num_test] if d.num_test > 0 else x for x in test)
    if d.source in ("tinyimagenet", "fake_tinyimagenet"):
        tinyimagenet.check_images([*train[0], *test[0]])
    for what, (_, labels) in (("training", train), ("test", test)):
        if len(labels) == 0:
            raise DataError(f"the {what} split of data.source={d.source!r} is empty.")
        if labels.min() < 0 or labels.max() >= len(names):
            raise DataError(
                f"{what} labels lie outside [0, {len(names)}) for data.source={d.source!r}."
            )
    return train, test, tuple(names)


def pad_to(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, h, w] zero-padded to [N, size, size], centred (an odd pixel goes bottom/right)."""
    _, h, w = images.shape
    if size < h or size < w:
        raise ConfigError(f"data.image_size={size} is smaller than the {h}x{w} source images.")
    top, left = (size - h) // 2, (size - w) // 2
    widths = ((0, 0), (top, size - h - top), (left, size - w - left))
    return np.pad(images, widths), labels


# ------------------------------------------------------------------------------ augmentation


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training augmentation settings (see the module docstring); `from_config(config.augment)`."""

    pad: int = 8
    flip: bool = True
    rotate_deg: float = 15.0
    rotate_prob: float = 0.5
    noise_std: float = 0.03
    noise_prob: float = 0.5
    holes_min: int = 1
    holes_max: int = 3
    hole_min: int = 8
    hole_max: int = 16
    dropout_prob: float = 0.5

    @classmethod
    def from_config(cls, c: ml_collections.ConfigDict) -> Augment:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(c) - fields)
        if unknown:
            raise ConfigError(
                f"config.augment has unknown fields {unknown}; known: {sorted(fields)}."
            )
        aug = cls(**{k: c[k] for k in c})
        if not 0 <= aug.holes_min <= aug.holes_max or not 1 <= aug.hole_min <= aug.hole_max:
            raise ConfigError(
                "config.augment: need 0 <= holes_min <= holes_max and 1 <= hole_min <= hole_max, "
                f"got holes {aug.holes_min}..{aug.holes_max}, sizes {aug.hole_min}..{aug.hole_max}."
            )
        return aug


def rotation_transform(angle: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """The 8 ImageProjectiveTransform numbers (output pixel -> input pixel) that rotate an image
    by `angle` radians counter-clockwise as displayed (cv2.getRotationMatrix2D's sense) about
    its centre ((width - 1) / 2, (height - 1) / 2), pixel centres at integers."""
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    c, s = tf.cos(angle), tf.sin(angle)
    # Displayed counter-clockwise by angle (y down): input = R @ (output - centre) + centre with
    # R = [[c, -s], [s, c]].
    return tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, 0.0, 0.0])


def rotate(image: tf.Tensor, angle: tf.Tensor) -> tf.Tensor:
    """float [H, W, C] rotated by `angle` radians about its centre, bilinear, zero outside."""
    height, width = image.shape[0], image.shape[1]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=rotation_transform(angle, height, width)[None],
        output_shape=[height, width],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]


def pad_and_crop(image: tf.Tensor, pad: int, offset: tf.Tensor) -> tf.Tensor:
    """Zero-pads [H, W, C] by `pad` on every side and crops [H, W] at `offset` int32 (dy, dx),
    each in [0, 2 * pad] (pad, pad is the original)."""
    height, width, channels = image.shape
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.slice(padded, tf.stack([offset[0], offset[1], 0]), [height, width, channels])


def dropout_mask(
    key: tf.Tensor, height: int, width: int, holes: tf.Tensor, aug: Augment
) -> tf.Tensor:
    """bool [H, W]: True inside the first `holes` of `aug.holes_max` random rectangles of
    `hole_min`..`hole_max` px a side (clipped to the image), placed uniformly inside it."""
    k = max(aug.holes_max, 1)
    keys = tf.random.experimental.stateless_split(key, 4)
    hi = [min(aug.hole_max, height), min(aug.hole_max, width)]
    lo = [min(aug.hole_min, hi[0]), min(aug.hole_min, hi[1])]
    h = tf.random.stateless_uniform([k], keys[0], lo[0], hi[0] + 1, dtype=tf.int32)
    w = tf.random.stateless_uniform([k], keys[1], lo[1], hi[1] + 1, dtype=tf.int32)
    u = tf.random.stateless_uniform([k, 2], keys[2])
    y0 = tf.cast(tf.floor(u[:, 0] * tf.cast(height - h + 1, tf.float32)), tf.int32)
    x0 = tf.cast(tf.floor(u[:, 1] * tf.cast(width - w + 1, tf.float32)), tf.int32)
    active = tf.range(k) < holes
    ys = tf.range(height)[None, :, None]
    xs = tf.range(width)[None, None, :]
    inside = (
        (ys >= y0[:, None, None])
        & (ys < (y0 + h)[:, None, None])
        & (xs >= x0[:, None, None])
        & (xs < (x0 + w)[:, None, None])
    )
    return tf.reduce_any(inside & active[:, None, None], axis=0)


def augment(image: tf.Tensor, key: tf.Tensor, aug: Augment) -> tf.Tensor:
    """float32 [H, W, C] in [0, 1] -> augmented, same shape. `key`: int64 [2] stateless seed."""
    height, width, _ = image.shape
    keys = tf.random.experimental.stateless_split(key, 9)
    if aug.pad > 0:
        offset = tf.random.stateless_uniform([2], keys[0], 0, 2 * aug.pad + 1, dtype=tf.int32)
        image = pad_and_crop(image, aug.pad, offset)
    if aug.flip:
        flip = tf.random.stateless_uniform([], keys[1]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    if aug.rotate_deg > 0 and aug.rotate_prob > 0:
        angle = tf.random.stateless_uniform([], keys[2], -aug.rotate_deg, aug.rotate_deg)
        angle = angle * (math.pi / 180.0)
        turn = tf.random.stateless_uniform([], keys[3]) < aug.rotate_prob
        image = tf.cond(turn, lambda: rotate(image, angle), lambda: image)
    if aug.noise_std > 0 and aug.noise_prob > 0:
        noise = tf.random.stateless_normal(tf.shape(image), keys[4], stddev=aug.noise_std)
        add = tf.cast(tf.random.stateless_uniform([], keys[5]) < aug.noise_prob, tf.float32)
        image = tf.clip_by_value(image + add * noise, 0.0, 1.0)
    if aug.holes_max > 0 and aug.dropout_prob > 0:
        holes = tf.random.stateless_uniform(
            [], keys[6], aug.holes_min, aug.holes_max + 1, dtype=tf.int32
        )
        holes = tf.where(tf.random.stateless_uniform([], keys[7]) < aug.dropout_prob, holes, 0)
        mask = dropout_mask(keys[8], height, width, holes, aug)
        image = image * tf.cast(~mask, image.dtype)[:, :, None]
    return image


# ------------------------------------------------------------------------------ pipeline


def classification_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    plan: tf.data.Dataset,
    *,
    seed: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    aug: Augment | None,
) -> tf.data.Dataset:
    """Maps (global index, example) int64 pairs to dicts of one example:

      image  float32 [S, S, 3]  normalised; augmented when `aug` is given (training)
      label  int32 []
      index  int64 []           the example's row in `images` / `labels`

    images: uint8 [N, H, W] or [N, H, W, 1 or 3] in memory (grey is replicated to 3 channels),
    or str [N] paths of image files (decoded with 3 channels). Images that are not S x S are
    resized (bilinear). The augmentation key of global index g is fold_in((seed, salt), g).
    """
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"data.mean / data.std need 3 values (RGB), got {mean} and {std}.")
    labels_t = tf.constant(np.asarray(labels, np.int32))
    mean_t, std_t = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)
    images = np.asarray(images)
    if images.dtype.kind in "US":
        paths_t = tf.constant(images.astype(str))

        def load(i):
            return decode_image(tf.io.read_file(paths_t[i]), 3)
    else:
        if images.ndim == 3:
            images = images[..., None]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise DataError(
                "in-memory images must be uint8 [N, H, W(, 1 or 3)], got "
                f"{images.dtype} {images.shape}."
            )
        images_t = tf.constant(images)

        def load(i):
            image = images_t[i]
            return tf.image.grayscale_to_rgb(image) if images.shape[-1] == 1 else image

    base_key = tf.constant([seed & 0x7FFFFFFF, _AUGMENT_SALT], tf.int64)

    def make(g, i):
        image = tf.cast(load(i), tf.float32) / 255.0
        if images.dtype.kind in "US" or images.shape[1:3] != (image_size, image_size):
            image = tf.image.resize(image, [image_size, image_size])
        image = tf.ensure_shape(image, [image_size, image_size, 3])
        if aug is not None:
            key = tf.random.experimental.stateless_fold_in(base_key, g)
            image = augment(image, key, aug)
        return {"image": (image - mean_t) / std_t, "label": labels_t[i], "index": i}

    return plan.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def train_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    start_step: int,
    batch_size: int,
    process_index: int,
    process_count: int,
    **dataset_kwargs,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless host batches of B = batch_size // process_count augmented training examples."""
    local = plan.local_batch_size(batch_size, process_count)
    steps = plan.plan_dataset(
        len(labels), train=True, batch_size=batch_size, seed=seed, start_step=start_step,
        process_index=process_index, process_count=process_count,
    )  # fmt: skip
    ds = classification_dataset(images, labels, steps, seed=seed, **dataset_kwargs)
    yield from ds.batch(local, drop_remainder=True).prefetch(2).as_numpy_iterator()


def eval_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    process_index: int,
    process_count: int,
    **dataset_kwargs,
) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order, without augmentation; this process's share, last batch
    short."""
    local = plan.local_batch_size(batch_size, process_count)
    index = plan.plan_dataset(
        len(labels), train=False, batch_size=batch_size, process_index=process_index,
        process_count=process_count,
    )  # fmt: skip
    ds = classification_dataset(images, labels, index, seed=0, aug=None, **dataset_kwargs)
    yield from ds.batch(local).prefetch(2).as_numpy_iterator()
