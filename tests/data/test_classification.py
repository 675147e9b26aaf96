"""The classification data: sources, augmentation ops against NumPy / OpenCV references, and the
deterministic, resumable classification pipeline."""

import math

import cv2
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from jwsol.data import classification as cls
from jwsol.data import tinyimagenet as tin
from jwsol.errors import ConfigError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture
def folder(tin_folder):
    return tin_folder


# ------------------------------------------------------------------------------ augmentation ops


def random_image(h=20, w=24, c=3, seed=0):
    return np.random.default_rng(seed).uniform(size=(h, w, c)).astype(np.float32)


def test_pad_and_crop_is_a_window_of_the_zero_padded_image():
    image = random_image()
    reference = np.pad(image, ((3, 3), (3, 3), (0, 0)))
    for dy, dx in [(0, 0), (3, 3), (6, 1), (2, 5)]:
        out = cls.pad_and_crop(tf.constant(image), 3, tf.constant([dy, dx])).numpy()
        np.testing.assert_array_equal(out, reference[dy : dy + 20, dx : dx + 24])


@pytest.mark.parametrize("degrees", [12.0, -15.0, 90.0])
def test_rotate_matches_opencv(degrees):
    """cv2.warpAffine with getRotationMatrix2D about ((w-1)/2, (h-1)/2), bilinear, zero border
    (OpenCV interpolates float32 images in floating point: the same numbers)."""
    h, w = 21, 26
    image = random_image(h, w, seed=1)
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    reference = cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    ours = cls.rotate(tf.constant(image), tf.constant(math.radians(degrees))).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    if degrees == 90.0:  # a quarter turn of a square image moves pixels exactly
        square = random_image(9, 9, seed=2)
        turned = cls.rotate(tf.constant(square), tf.constant(math.pi / 2)).numpy()
        np.testing.assert_allclose(turned, np.rot90(square, 1), atol=1e-5)


def test_dropout_mask_holes():
    aug = cls.Augment(holes_min=1, holes_max=4, hole_min=3, hole_max=6)
    for seed in range(20):
        key = tf.constant([seed, 7], tf.int64)
        assert not cls.dropout_mask(key, 20, 24, tf.constant(0), aug).numpy().any()
        mask = cls.dropout_mask(key, 20, 24, tf.constant(1), aug).numpy()
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert 3 <= len(rows) <= 6 and 3 <= len(cols) <= 6  # one rectangle, sides in range
        assert mask.sum() == len(rows) * len(cols)
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
        more = cls.dropout_mask(key, 20, 24, tf.constant(4), aug).numpy()
        assert np.all(more >= mask)  # the first hole is the same; later ones only add


def test_augment_is_a_function_of_the_key():
    image = tf.constant(random_image())
    aug = cls.Augment(
        pad=2, hole_min=2, hole_max=5, rotate_prob=1.0, noise_prob=1.0, dropout_prob=1.0
    )
    key = tf.constant([5, 9], tf.int64)
    a = cls.augment(image, key, aug).numpy()
    np.testing.assert_array_equal(a, cls.augment(image, key, aug).numpy())
    assert not np.array_equal(a, cls.augment(image, tf.constant([5, 10], tf.int64), aug).numpy())
    assert a.shape == (20, 24, 3) and a.min() >= 0.0 and a.max() <= 1.0


def test_flip_only_gives_the_image_or_its_mirror():
    image = random_image()
    aug = cls.Augment(pad=0, rotate_deg=0.0, noise_std=0.0, holes_max=0, holes_min=0)
    outcomes = set()
    for seed in range(16):
        out = cls.augment(tf.constant(image), tf.constant([seed, 1], tf.int64), aug).numpy()
        flipped = np.array_equal(out, image[:, ::-1])
        assert flipped or np.array_equal(out, image)
        outcomes.add(flipped)
    assert outcomes == {True, False}


def test_noise_has_the_configured_std():
    image = np.full((64, 64, 3), 0.5, np.float32)
    aug = cls.Augment(
        pad=0, flip=False, rotate_deg=0.0, noise_std=0.05, noise_prob=1.0, holes_max=0, holes_min=0
    )
    out = cls.augment(tf.constant(image), tf.constant([1, 2], tf.int64), aug).numpy()
    assert abs((out - image).std() - 0.05) < 0.003 and abs((out - image).mean()) < 0.003


def test_augment_config_errors():

    with pytest.raises(ConfigError, match="unknown fields \\['bogus'\\]"):
        cls.Augment.from_config(ml_collections.ConfigDict({"bogus": 1}))
    with pytest.raises(ConfigError, match="holes_min <= holes_max"):
        cls.Augment.from_config(ml_collections.ConfigDict({"holes_min": 3, "holes_max": 1}))


# ------------------------------------------------------------------------------ pipeline


def test_eval_batches_decode_every_image_in_order(folder):
    data = tin.load(folder)
    batches = list(
        cls.eval_batches(
            data.val_paths,
            data.val_labels,
            batch_size=4,
            process_index=0,
            process_count=1,
            image_size=24,
            mean=MEAN,
            std=STD,
        )
    )
    assert [len(b["label"]) for b in batches] == [4, 2]
    images = np.concatenate([b["image"] for b in batches])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), data.val_labels)
    for path, image in zip(data.val_paths, images):
        pixels = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        np.testing.assert_allclose(image, (pixels - MEAN) / STD, atol=2e-5)


def test_grey_jpeg_and_other_sizes(folder):
    data = tin.load(folder)
    grey = [p for p in data.train_paths if Image.open(p).mode == "L"]
    assert len(grey) == 1
    (batch,) = cls.eval_batches(
        np.array(grey),
        np.array([0], np.int32),
        batch_size=1,
        process_index=0,
        process_count=1,
        image_size=12,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    image = batch["image"][0]
    assert image.shape == (12, 12, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    pixels = np.asarray(Image.open(grey[0]), np.float32) / 255.0
    expected = tf.image.resize(pixels[..., None], [12, 12]).numpy()[..., 0]
    np.testing.assert_allclose(image[..., 1], expected, atol=1e-6)


@pytest.mark.slow
def test_in_memory_grey_images_and_resumed_training_batches():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 16, 16), dtype=np.uint8)
    labels = np.arange(10, dtype=np.int32) % 3
    aug = cls.Augment(pad=2, hole_min=2, hole_max=4)
    kwargs = {"image_size": 16, "mean": (0.5,) * 3, "std": (0.25,) * 3, "aug": aug}

    def stream(start):
        return cls.train_batches(
            images,
            labels,
            seed=1,
            start_step=start,
            batch_size=4,
            process_index=0,
            process_count=1,
            **kwargs,
        )

    full = stream(0)
    first = [next(full) for _ in range(5)]
    resumed = stream(3)
    for k in (3, 4):
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], first[k]["image"])
        np.testing.assert_array_equal(got["index"], first[k]["index"])
    np.testing.assert_array_equal(first[0]["label"], labels[first[0]["index"]])
    assert first[0]["image"].shape == (4, 16, 16, 3)
    # Without augmentation an in-memory grey image is replicated and normalised.
    (plain,) = cls.eval_batches(
        images[:2],
        labels[:2],
        batch_size=2,
        process_index=0,
        process_count=1,
        image_size=16,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
    )
    expected = (images[:2, :, :, None] / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(plain["image"], np.repeat(expected, 3, axis=-1), atol=1e-5)
