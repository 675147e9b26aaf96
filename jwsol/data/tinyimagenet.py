"""TinyImageNet-200 from its extracted folder, and the image-classification pipeline in tf.data.

The folder, as extracted from http://cs231n.stanford.edu/tiny-imagenet-200.zip:

    tiny-imagenet-200/wnids.txt                    200 wnids, one a line; label k = line k
    tiny-imagenet-200/words.txt                    wnid<TAB>synonyms, comma-separated (names)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG   500 images a class
    tiny-imagenet-200/val/val_annotations.txt      file<TAB>wnid<TAB>x1<TAB>y1<TAB>x2<TAB>y2
    tiny-imagenet-200/val/images/*.JPEG            10,000 images
    (test/ has no labels and is not read)

Splits: 'standard' (train / val) or 'shuffled' (every labelled image, train and val together,
in one permutation of `split_seed`, cut `train_fraction` : rest, the 70:30 split of seed 004).

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
import os
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from jwsol.data import plan
from jwsol.data.augment import decode_image
from jwsol.errors import ConfigError, DataError

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDER_NAME = "tiny-imagenet-200"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
SPLITS = ("standard", "shuffled")
_PERMUTATION_SALT = 0x7123  # keeps the epoch permutations apart from other uses of the seed
_AUGMENT_SALT = 0xA06  # and the augmentation keys

_HINT = (
    f"Download {URL} on a machine with internet, unzip it and pass "
    f"--config.data.folder=PATH/{FOLDER_NAME}."
)


@dataclasses.dataclass(frozen=True)
class TinyImageNet:
    """The labelled images of a tiny-imagenet-200 folder (paths as NumPy string arrays)."""

    folder: str
    wnids: tuple[str, ...]  # label k is wnids[k]
    names: tuple[str, ...]  # first synonym of words.txt, or the wnid if words.txt lacks it
    train_paths: np.ndarray  # str [100000]
    train_labels: np.ndarray  # int32 [100000]
    val_paths: np.ndarray  # str [10000]
    val_labels: np.ndarray  # int32 [10000]


def _resolve(folder: str) -> str:
    """`folder` itself, or its `tiny-imagenet-200/` child (the zip's top level)."""
    if not folder:
        raise DataError(f"data.folder is empty: it must name the tiny-imagenet-200 folder. {_HINT}")
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        raise DataError(f"TinyImageNet folder {folder!r} does not exist. {_HINT}")
    inner = os.path.join(folder, FOLDER_NAME)
    if not os.path.exists(os.path.join(folder, "wnids.txt")) and os.path.isdir(inner):
        return inner
    return folder


def read_wnids(path: str) -> tuple[str, ...]:
    """The class order of wnids.txt: one wnid a line, blank lines ignored, no duplicates."""
    if not os.path.isfile(path):
        raise DataError(
            f"{path} is missing: a tiny-imagenet-200 folder lists its classes there. {_HINT}"
        )
    with open(path) as f:
        wnids = tuple(line.strip() for line in f if line.strip())
    if not wnids:
        raise DataError(f"{path} lists no wnids.")
    seen: set[str] = set()
    for k, wnid in enumerate(wnids):
        if wnid in seen or len(wnid.split()) != 1:
            what = "a duplicate" if wnid in seen else "not a single word"
            raise DataError(f"{path}: entry {k + 1} ({wnid!r}) is {what}.")
        seen.add(wnid)
    return wnids


def read_names(path: str, wnids: Sequence[str]) -> tuple[str, ...]:
    """Readable names from words.txt (the first synonym); the wnid where it has none.

    words.txt covers all of WordNet (82k lines); only the listed wnids are kept. A missing file
    is logged, and the wnids serve as names (names only label pictures).
    """
    if not os.path.isfile(path):
        logging.warning("%s is missing: class names will be the wnids", path)
        return tuple(wnids)
    wanted, names = set(wnids), {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            wnid, _, words = line.rstrip("\n").partition("\t")
            if wnid in wanted and words.strip():
                names[wnid] = words.split(",")[0].strip()
    missing = [w for w in wnids if w not in names]
    if missing:
        logging.warning("%s has no names for %d wnids (e.g. %s)", path, len(missing), missing[0])
    return tuple(names.get(w, w) for w in wnids)


def _images_in(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))


def read_val_annotations(
    path: str, image_dir: str, label_of: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """val_annotations.txt -> (paths str [M], labels int32 [M]); every line names an existing
    image and a wnid of wnids.txt (the box columns are not used)."""
    if not os.path.isfile(path):
        raise DataError(f"{path} is missing: it holds the labels of the val images. {_HINT}")
    if not os.path.isdir(image_dir):
        raise DataError(f"{image_dir} is missing: the val images live there. {_HINT}")
    present = set(os.listdir(image_dir))
    paths, labels = [], []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2:
                raise DataError(
                    f"{path} line {number}: expected 'file<TAB>wnid[<TAB>x1 y1 x2 y2]', "
                    f"got {line.strip()!r}."
                )
            name, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in label_of:
                raise DataError(
                    f"{path} line {number}: wnid {wnid!r} (for {name}) is not in wnids.txt; the "
                    "annotations and wnids.txt come from different releases or one is damaged."
                )
            if name not in present:
                raise DataError(f"{path} line {number}: image {name} is not in {image_dir}.")
            paths.append(os.path.join(image_dir, name))
            labels.append(label_of[wnid])
    if not paths:
        raise DataError(f"{path} lists no images.")
    return np.array(paths), np.array(labels, np.int32)


def load(folder: str) -> TinyImageNet:
    """Indexes a tiny-imagenet-200 folder (file names and labels; no image is decoded).

    Raises DataError naming the file for: a missing folder, wnids.txt, train/<wnid>/images or
    val_annotations.txt; a class folder in train/ that wnids.txt does not list; a wnid in
    val_annotations.txt that wnids.txt does not list; an annotated val image that is absent.
    """
    folder = _resolve(folder)
    wnids = read_wnids(os.path.join(folder, "wnids.txt"))
    label_of = {w: k for k, w in enumerate(wnids)}
    train_dir = os.path.join(folder, "train")
    if not os.path.isdir(train_dir):
        raise DataError(f"{train_dir} is missing. {_HINT}")
    unknown = sorted(set(os.listdir(train_dir)) - set(wnids))
    if unknown:
        raise DataError(
            f"{train_dir} holds {len(unknown)} class folder(s) not in wnids.txt (e.g. "
            f"{unknown[0]!r}); the folder is not one tiny-imagenet-200 release."
        )
    train_paths, train_labels = [], []
    for wnid in wnids:
        image_dir = os.path.join(train_dir, wnid, "images")
        if not os.path.isdir(image_dir):
            raise DataError(f"{image_dir} is missing (class {wnid} of wnids.txt). {_HINT}")
        names = _images_in(image_dir)
        if not names:
            raise DataError(f"{image_dir} holds no images (class {wnid} of wnids.txt).")
        train_paths += [os.path.join(image_dir, n) for n in names]
        train_labels += [label_of[wnid]] * len(names)
    val_paths, val_labels = read_val_annotations(
        os.path.join(folder, "val", "val_annotations.txt"),
        os.path.join(folder, "val", "images"),
        label_of,
    )
    return TinyImageNet(
        folder=folder,
        wnids=wnids,
        names=read_names(os.path.join(folder, "words.txt"), wnids),
        train_paths=np.array(train_paths),
        train_labels=np.array(train_labels, np.int32),
        val_paths=val_paths,
        val_labels=val_labels,
    )


def split(
    data: TinyImageNet, mode: str, train_fraction: float = 0.7, split_seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train paths, labels), (test paths, labels)) of split `mode`.

    'standard': train/ and val/. 'shuffled': train and val images together (train first, in
    `load`'s order), permuted by NumPy's default_rng(split_seed), the first
    round(train_fraction * total) for training and the rest for testing.
    """
    if mode == "standard":
        return (data.train_paths, data.train_labels), (data.val_paths, data.val_labels)
    if mode != "shuffled":
        raise ConfigError(f"data.split={mode!r} is unknown; use one of {SPLITS}.")
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"data.train_fraction={train_fraction} must lie in (0, 1).")
    paths = np.concatenate([data.train_paths, data.val_paths])
    labels = np.concatenate([data.train_labels, data.val_labels])
    order = np.random.default_rng(split_seed).permutation(len(paths))
    cut = round(train_fraction * len(paths))
    return (paths[order[:cut]], labels[order[:cut]]), (paths[order[cut:]], labels[order[cut:]])


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
    steps = tf.data.Dataset.from_generator(
        lambda: plan.train_plan(
            len(labels),
            seed=seed,
            batch_size=batch_size,
            start_step=start_step,
            process_index=process_index,
            process_count=process_count,
        ),
        output_signature=(tf.TensorSpec([local], tf.int64), tf.TensorSpec([local], tf.int64)),
    ).unbatch()
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
    index = tf.data.Dataset.from_generator(
        lambda: plan.eval_plan(
            len(labels),
            batch_size=batch_size,
            process_index=process_index,
            process_count=process_count,
        ),
        output_signature=tf.TensorSpec([None], tf.int64),
    ).unbatch()
    ds = classification_dataset(
        images, labels, index.map(lambda i: (i, i)), seed=0, aug=None, **dataset_kwargs
    )
    yield from ds.batch(local).prefetch(2).as_numpy_iterator()
