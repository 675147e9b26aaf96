"""The made-up data sets of jwsol.data.fake: what the `fake` sources deliver."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jwsol.data import fake, mnist, tinyimagenet
from jwsol.errors import DataError


def test_fake_mnist_is_the_idx_folder_read_back(idx_folder):
    for split, n in (("train", 256), ("test", 64)):
        images, labels = mnist.load("fake", split)
        read = mnist.load_idx_folder(idx_folder, split)
        np.testing.assert_array_equal(images, read[0])
        np.testing.assert_array_equal(labels, read[1])
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.dtype == np.int32 and set(labels) <= set(range(10))
    # Class c is one filled rectangle of a size set by c.
    images, labels = mnist.load("fake", "train")
    for c in range(10):
        areas = {int((im > 0).sum()) for im in images[labels == c]}
        assert areas == {(6 + 2 * (c % 5)) * (6 + 6 * (c // 5))}
    assert mnist.class_names("fake", "fashion_mnist", mnist.DEFAULT_IDX_FOLDER) == tuple(
        "0123456789"
    )
    with pytest.raises(DataError, match="unknown split 'val'"):
        mnist.load("fake", "val")


def test_fake_tinyimagenet_is_written_once(tmp_path):
    folder = fake.tinyimagenet_folder(str(tmp_path))
    stamp = os.stat(os.path.join(folder, "wnids.txt")).st_mtime_ns
    assert fake.tinyimagenet_folder(str(tmp_path)) == folder
    assert os.stat(os.path.join(folder, "wnids.txt")).st_mtime_ns == stamp
    data = tinyimagenet.load(folder)
    p = fake.FAKE_TINYIMAGENET
    assert len(data.names) == p["num_classes"]
    assert len(data.train_labels) == p["num_classes"] * p["train_per_class"]
    assert not [f for f in os.listdir(os.path.dirname(os.path.dirname(folder))) if ".tmp" in f]
