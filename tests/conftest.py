"""Fixtures shared by every test folder: small made-up data, never downloads."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `configs` (configs/common.py) is imported by path from the repository root, like train.py.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np
import pytest

from jwsol.data.mnist import write_idx


def make_idx_folder(folder: str, n_train: int = 256, n_test: int = 64, seed: int = 0) -> str:
    """MNIST-format IDX files of 28x28 images: class c is a filled rectangle of a size set by c,
    so a net can tell the classes apart and boxes are known."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for k, c in enumerate(labels):
            h, w = 6 + 2 * (c % 5), 6 + 3 * (c // 5) * 2
            y, x = rng.integers(0, 28 - h), rng.integers(0, 28 - w)
            images[k, y : y + h, x : x + w] = 255
        write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"), labels)
    return folder


@pytest.fixture(scope="session")
def idx_folder(tmp_path_factory) -> str:
    return make_idx_folder(str(tmp_path_factory.mktemp("idx")))
