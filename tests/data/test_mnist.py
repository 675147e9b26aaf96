import gzip
import os

import numpy as np
import pytest

from jwsol.data import idx, mnist
from jwsol.errors import DataError


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    path = str(tmp_path / name)
    idx.write_idx(path, array)
    np.testing.assert_array_equal(idx.read_idx(path), array)


def test_idx_header_by_hand(tmp_path):
    # magic 0x00000801 (ubyte, 1 dim), size 3, then the bytes: the MNIST label file layout.
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    np.testing.assert_array_equal(idx.read_idx(str(path)), [7, 2, 1])


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3]))
    with pytest.raises(DataError, match="x-idx3-ubyte.*truncated"):
        idx.read_idx(str(path))


def test_bad_magic_and_corrupt_gzip(tmp_path):
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(DataError, match="bad magic"):
        idx.read_idx(str(bad))
    corrupt = tmp_path / "c-idx1-ubyte.gz"
    corrupt.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05")[:-6])
    with pytest.raises(DataError, match="c-idx1-ubyte.gz"):
        idx.read_idx(str(corrupt))


def test_load_folder(idx_folder):
    images, labels = mnist.load("idx", "train", folder=idx_folder)
    assert images.shape == (256, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (256,) and labels.max() < 10


def test_missing_folder_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        mnist.load("idx", "train", folder=str(tmp_path / "nowhere"))


def test_unknown_source():
    with pytest.raises(DataError, match="data.mnist.source 'web'.*'idx', 'tfds' or 'fake'"):
        mnist.load("web", "train")


def test_mismatched_counts(tmp_path):
    idx.write_idx(str(tmp_path / "train-images-idx3-ubyte"), np.zeros((3, 28, 28), np.uint8))
    idx.write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros((4,), np.uint8))
    with pytest.raises(DataError, match="expected images"):
        mnist.load_idx_folder(str(tmp_path), "train")


@pytest.mark.skipif(not os.path.exists(mnist.DEFAULT_IDX_FOLDER), reason="Debian data absent")
def test_debian_fashion_mnist_if_installed():
    images, labels = mnist.load("idx", "test")
    assert images.shape == (10000, 28, 28) and set(np.unique(labels)) == set(range(10))
