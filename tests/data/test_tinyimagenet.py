"""TinyImageNet folder reading (made-up folder, malformed ones), splits, augmentation ops against
NumPy / OpenCV references, and the deterministic, resumable classification pipeline."""

import math
import os
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from jwsol.data import fake
from jwsol.data import tinyimagenet as tin
from jwsol.errors import ConfigError, DataError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return fake.write_tinyimagenet_folder(
        str(tmp_path_factory.mktemp("tin")),
        num_classes=3,
        train_per_class=4,
        val_per_class=2,
        size=24,
    )


@pytest.fixture
def broken(folder, tmp_path):
    """A private copy to damage."""
    return shutil.copytree(folder, os.path.join(str(tmp_path), tin.FOLDER_NAME))


def read_lines(path):
    with open(path) as f:
        return f.read().splitlines()


# ------------------------------------------------------------------------------ folder


def test_load_indexes_every_labelled_image(folder):
    data = tin.load(folder)
    wnids = read_lines(os.path.join(folder, "wnids.txt"))
    assert data.wnids == tuple(wnids)
    assert data.names == ("class0", "class1", "class2")  # first synonym, 'entity' not listed
    assert len(data.train_paths) == 12 and len(data.val_paths) == 6
    for path, label in zip(data.train_paths, data.train_labels):
        assert os.path.isfile(path)
        assert os.path.basename(os.path.dirname(os.path.dirname(path))) == wnids[label]
    annotated = dict(
        line.split("\t")[:2]
        for line in read_lines(os.path.join(folder, "val", "val_annotations.txt"))
    )
    assert len(annotated) == 6
    for path, label in zip(data.val_paths, data.val_labels):
        assert os.path.isfile(path)
        assert annotated[os.path.basename(path)] == wnids[label]


def test_load_accepts_the_parent_folder(folder):
    assert tin.load(os.path.dirname(folder)).folder == folder


def test_splits(folder):
    data = tin.load(folder)
    (tp, tl), (vp, vl) = tin.split(data, "standard")
    assert list(tp) == list(data.train_paths) and list(vl) == list(data.val_labels)
    (ap, al), (bp, bl) = tin.split(data, "shuffled", 0.7, split_seed=3)
    assert len(ap) == round(0.7 * 18) == 13 and len(bp) == 5
    assert sorted(ap.tolist() + bp.tolist()) == sorted(tp.tolist() + vp.tolist())
    label_of = dict(zip(tp.tolist() + vp.tolist(), tl.tolist() + vl.tolist()))
    assert [label_of[p] for p in ap] == al.tolist() and [label_of[p] for p in bp] == bl.tolist()
    again = tin.split(data, "shuffled", 0.7, split_seed=3)
    assert again[0][0].tolist() == ap.tolist()
    assert tin.split(data, "shuffled", 0.7, split_seed=4)[0][0].tolist() != ap.tolist()
    with pytest.raises(ConfigError, match="data.split='bogus'"):
        tin.split(data, "bogus")
    with pytest.raises(ConfigError, match="train_fraction"):
        tin.split(data, "shuffled", 1.0)


def test_missing_folder_names_the_download(tmp_path):
    with pytest.raises(DataError, match="does not exist.*tiny-imagenet-200.zip"):
        tin.load(str(tmp_path / "nowhere"))


def test_missing_wnids(broken):
    os.remove(os.path.join(broken, "wnids.txt"))
    with pytest.raises(DataError, match="wnids.txt is missing"):
        tin.load(broken)


def test_duplicate_wnid(broken):
    path = os.path.join(broken, "wnids.txt")
    wnids = read_lines(path)
    with open(path, "w") as f:
        f.write("\n".join(wnids + wnids[:1]) + "\n")
    with pytest.raises(DataError, match="entry 4 .* is a duplicate"):
        tin.load(broken)


def test_unknown_wnid_in_val_annotations(broken):
    path = os.path.join(broken, "val", "val_annotations.txt")
    lines = read_lines(path)
    fields = lines[1].split("\t")
    lines[1] = "\t".join([fields[0], "n99999999"] + fields[2:])
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(
        DataError, match="val_annotations.txt line 2: wnid 'n99999999'.*not in wnids.txt"
    ):
        tin.load(broken)


def test_malformed_val_annotation_line(broken):
    path = os.path.join(broken, "val", "val_annotations.txt")
    with open(path, "a") as f:
        f.write("just-one-field\n")
    with pytest.raises(DataError, match="line 7: expected 'file<TAB>wnid"):
        tin.load(broken)


def test_annotated_val_image_missing(broken):
    name = read_lines(os.path.join(broken, "val", "val_annotations.txt"))[0].split("\t")[0]
    os.remove(os.path.join(broken, "val", "images", name))
    with pytest.raises(DataError, match=f"line 1: image {name} is not in"):
        tin.load(broken)


def test_missing_val_annotations(broken):
    os.remove(os.path.join(broken, "val", "val_annotations.txt"))
    with pytest.raises(DataError, match="val_annotations.txt is missing"):
        tin.load(broken)


def test_class_folder_missing_or_unlisted(broken):
    wnid = read_lines(os.path.join(broken, "wnids.txt"))[2]
    os.rename(os.path.join(broken, "train", wnid), os.path.join(broken, "train", "n12345678"))
    with pytest.raises(DataError, match="1 class folder.*not in wnids.txt.*'n12345678'"):
        tin.load(broken)
    os.rename(os.path.join(broken, "train", "n12345678"), os.path.join(broken, "moved"))
    with pytest.raises(DataError, match=f"train/{wnid}/images is missing"):
        tin.load(broken)


def test_missing_words_falls_back_to_wnids(broken):
    os.remove(os.path.join(broken, "words.txt"))
    data = tin.load(broken)
    assert data.names == data.wnids


# ------------------------------------------------------------------------------ augmentation ops


def random_image(h=20, w=24, c=3, seed=0):
    return np.random.default_rng(seed).uniform(size=(h, w, c)).astype(np.float32)


def test_pad_and_crop_is_a_window_of_the_zero_padded_image():
    image = random_image()
    reference = np.pad(image, ((3, 3), (3, 3), (0, 0)))
    for dy, dx in [(0, 0), (3, 3), (6, 1), (2, 5)]:
        out = tin.pad_and_crop(tf.constant(image), 3, tf.constant([dy, dx])).numpy()
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
    ours = tin.rotate(tf.constant(image), tf.constant(math.radians(degrees))).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    if degrees == 90.0:  # a quarter turn of a square image moves pixels exactly
        square = random_image(9, 9, seed=2)
        turned = tin.rotate(tf.constant(square), tf.constant(math.pi / 2)).numpy()
        np.testing.assert_allclose(turned, np.rot90(square, 1), atol=1e-5)


def test_dropout_mask_holes():
    aug = tin.Augment(holes_min=1, holes_max=4, hole_min=3, hole_max=6)
    for seed in range(20):
        key = tf.constant([seed, 7], tf.int64)
        assert not tin.dropout_mask(key, 20, 24, tf.constant(0), aug).numpy().any()
        mask = tin.dropout_mask(key, 20, 24, tf.constant(1), aug).numpy()
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert 3 <= len(rows) <= 6 and 3 <= len(cols) <= 6  # one rectangle, sides in range
        assert mask.sum() == len(rows) * len(cols)
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
        more = tin.dropout_mask(key, 20, 24, tf.constant(4), aug).numpy()
        assert np.all(more >= mask)  # the first hole is the same; later ones only add


def test_augment_is_a_function_of_the_key():
    image = tf.constant(random_image())
    aug = tin.Augment(
        pad=2, hole_min=2, hole_max=5, rotate_prob=1.0, noise_prob=1.0, dropout_prob=1.0
    )
    key = tf.constant([5, 9], tf.int64)
    a = tin.augment(image, key, aug).numpy()
    np.testing.assert_array_equal(a, tin.augment(image, key, aug).numpy())
    assert not np.array_equal(a, tin.augment(image, tf.constant([5, 10], tf.int64), aug).numpy())
    assert a.shape == (20, 24, 3) and a.min() >= 0.0 and a.max() <= 1.0


def test_flip_only_gives_the_image_or_its_mirror():
    image = random_image()
    aug = tin.Augment(pad=0, rotate_deg=0.0, noise_std=0.0, holes_max=0, holes_min=0)
    outcomes = set()
    for seed in range(16):
        out = tin.augment(tf.constant(image), tf.constant([seed, 1], tf.int64), aug).numpy()
        flipped = np.array_equal(out, image[:, ::-1])
        assert flipped or np.array_equal(out, image)
        outcomes.add(flipped)
    assert outcomes == {True, False}


def test_noise_has_the_configured_std():
    image = np.full((64, 64, 3), 0.5, np.float32)
    aug = tin.Augment(
        pad=0, flip=False, rotate_deg=0.0, noise_std=0.05, noise_prob=1.0, holes_max=0, holes_min=0
    )
    out = tin.augment(tf.constant(image), tf.constant([1, 2], tf.int64), aug).numpy()
    assert abs((out - image).std() - 0.05) < 0.003 and abs((out - image).mean()) < 0.003


def test_augment_config_errors():
    import ml_collections

    with pytest.raises(ConfigError, match="unknown fields \\['bogus'\\]"):
        tin.Augment.from_config(ml_collections.ConfigDict({"bogus": 1}))
    with pytest.raises(ConfigError, match="holes_min <= holes_max"):
        tin.Augment.from_config(ml_collections.ConfigDict({"holes_min": 3, "holes_max": 1}))


# ------------------------------------------------------------------------------ pipeline


def test_eval_batches_decode_every_image_in_order(folder):
    data = tin.load(folder)
    batches = list(
        tin.eval_batches(
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
    (batch,) = tin.eval_batches(
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


def test_in_memory_grey_images_and_resumed_training_batches():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 16, 16), dtype=np.uint8)
    labels = np.arange(10, dtype=np.int32) % 3
    aug = tin.Augment(pad=2, hole_min=2, hole_max=4)
    kwargs = {"image_size": 16, "mean": (0.5,) * 3, "std": (0.25,) * 3, "aug": aug}

    def stream(start):
        return tin.train_batches(
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
    (plain,) = tin.eval_batches(
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
