"""MNIST-format sources: IDX files in a folder, tfds `mnist` / `fashion_mnist`, or `fake`.

A job's `config.data.mnist` section (configs/common.py:mnist_data) names the source:
`source` ('idx' | 'tfds' | 'fake'), `folder`, `tfds_name`, `tfds_data_dir`.

Every loader returns `(images uint8 [N, 28, 28], labels int32 [N])` in NumPy. No JAX here.
"""

from __future__ import annotations

import os

import numpy as np

from jwsol.data.idx import read_idx
from jwsol.errors import DataError

DEFAULT_IDX_FOLDER = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MNIST_CLASSES = tuple(str(d) for d in range(10))

_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

INSTALL_HINT = (
    "Install Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
    "or put MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...) in a folder and pass "
    "--config.data.mnist.folder=DIR, or use the tfds source (--config.data.mnist.source=tfds) "
    "on a machine that can download it."
)


def _find(folder: str, stem: str) -> str | None:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def load_idx_folder(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads split 'train' or 'test' from a folder of MNIST-format IDX files."""
    if split not in _IDX_NAMES:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(_IDX_NAMES)}.")
    image_stem, label_stem = _IDX_NAMES[split]
    image_path, label_path = _find(folder, image_stem), _find(folder, label_stem)
    if image_path is None or label_path is None:
        missing = image_stem if image_path is None else label_stem
        raise DataError(f"no {missing}[.gz] in {folder!r}. {INSTALL_HINT}")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{image_path} / {label_path}: expected images [N, H, W] and labels [N], got "
            f"{images.shape} and {labels.shape}."
        )
    return images.astype(np.uint8), labels.astype(np.int32)


def load_tfds(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Loads tfds `mnist` or `fashion_mnist` as NumPy arrays (downloads only if allowed by tfds)."""
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(
            name, split=split, data_dir=data_dir or None, batch_size=-1, as_supervised=True
        )
    except Exception as e:  # tfds raises many types for a missing or unreachable data set.
        raise DataError(
            f"tfds {name!r} split {split!r} could not be loaded from data_dir={data_dir!r} ({e}). "
            f"Run `tfds build {name}` on a machine with internet and copy its data_dir, or "
            f"use the IDX source. {INSTALL_HINT}"
        ) from e
    images, labels = tfds.as_numpy(ds)
    return images[..., 0].astype(np.uint8), labels.astype(np.int32)


def load(
    source: str,
    split: str,
    *,
    folder: str = DEFAULT_IDX_FOLDER,
    tfds_name: str = "fashion_mnist",
    data_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads an MNIST-format split from `source` 'idx' (a folder), 'tfds' (name, data_dir) or
    'fake' (jwsol.data.fake.mnist, made in memory).

    Returns images uint8 [N, 28, 28] and labels int32 [N]. Never falls back silently: a missing
    source is a `DataError` that names what was tried and how to install it.
    """
    if source == "idx":
        return load_idx_folder(folder, split)
    if source == "tfds":
        return load_tfds(tfds_name, split, data_dir)
    if source == "fake":
        from jwsol.data import fake

        if split not in _IDX_NAMES:
            raise DataError(f"unknown split {split!r}; expected one of {sorted(_IDX_NAMES)}.")
        return fake.mnist(split)
    raise DataError(f"unknown data.mnist.source {source!r}; expected 'idx', 'tfds' or 'fake'.")


def load_config(section, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`load` of the `config.data.mnist` section."""
    return load(
        section.source,
        split,
        folder=section.folder,
        tfds_name=section.tfds_name,
        data_dir=section.tfds_data_dir or None,
    )


def class_names(source: str, tfds_name: str, folder: str) -> tuple[str, ...]:
    """Human-readable class names for the 10 labels of the source (fake: digits)."""
    if source == "tfds":
        return MNIST_CLASSES if tfds_name == "mnist" else FASHION_MNIST_CLASSES
    if source == "fake":
        return MNIST_CLASSES
    return FASHION_MNIST_CLASSES if "fashion" in folder.lower() else MNIST_CLASSES
