"""Offline multi-object scenes: the embedded default data set of the detection jobs.

Each scene is a square grey canvas (black background) holding 1-4 objects cut from an
MNIST-format source (Fashion-MNIST from Debian by default), each scaled to a random size and
placed at a random position so that its true box overlaps any earlier object's box by at most
`max_overlap` IoU. Objects are composited with a pixel-wise maximum, so an overlapped object
stays visible. True boxes are the tight boxes of each object's own pixels (value >=
`pixel_threshold` after scaling), in the edge convention of `jwsol.data.proposals`.

Train scenes use the source's train images and test scenes its test images; scene `i` of a
split is drawn from `numpy.random.default_rng([seed, split_code, i])`, so the splits are fixed
by the seed and independent of how many scenes are asked for. Generated scenes are cached in
one `.npz` per settings. No TensorFlow or JAX here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os

import numpy as np
from absl import logging

from jwsol.data import mnist
from jwsol.errors import ConfigError, DataError
from jwsol.files import write_atomic
from jwsol.ops.boxes_np import iou

SPLITS = ("train", "test")
_SPLIT_CODES = {"train": 0, "test": 1}
# Placement attempts per object before the scene keeps the objects placed so far.
_MAX_TRIES = 100


@dataclasses.dataclass(frozen=True)
class SceneSettings:
    """Everything that defines the generated scenes (and their cache key)."""

    canvas_size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    min_object_size: int = 32  # side of the scaled 28x28 source square, pixels
    max_object_size: int = 64
    max_overlap: float = 0.2  # largest IoU between two objects' true boxes
    pixel_threshold: int = 32  # a pixel >= this belongs to the object (true box extent)
    num_train: int = 2000
    num_test: int = 500
    seed: int = 0
    mnist_source: str = "idx"
    mnist_folder: str = mnist.DEFAULT_IDX_FOLDER
    mnist_tfds_name: str = "fashion_mnist"
    mnist_data_dir: str = ""

    def key(self) -> str:
        return hashlib.sha1(
            json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        ).hexdigest()[:12]

    def check(self) -> None:
        """ConfigError naming the field when the settings cannot produce scenes."""
        if not 1 <= self.min_objects <= self.max_objects:
            raise ConfigError(
                f"data.scenes.min_objects={self.min_objects}, max_objects={self.max_objects}: need "
                "1 <= min_objects <= max_objects."
            )
        if not 4 <= self.min_object_size <= self.max_object_size <= self.canvas_size:
            raise ConfigError(
                f"data.scenes object sizes {self.min_object_size}..{self.max_object_size} must lie "
                f"in 4..canvas_size ({self.canvas_size})."
            )
        if not 0.0 <= self.max_overlap < 1.0:
            raise ConfigError(f"data.scenes.max_overlap={self.max_overlap}: need 0 <= value < 1.")
        if self.num_train < 1 or self.num_test < 1:
            raise ConfigError("data.scenes.num_train and num_test must be >= 1.")


@dataclasses.dataclass
class Scenes:
    """One split of scenes.

    images: uint8 [N, S, S] (grey). boxes: float32 [N, K, 4] (x1, y1, x2, y2), K =
    max_objects, rows >= counts[n] are zero. classes: int32 [N, K] (-1 where unused).
    counts: int32 [N] objects per scene. sources: int32 [N, K] index of each object's image in
    the MNIST-format split (-1 where unused).
    """

    images: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    counts: np.ndarray
    sources: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def labels(self, num_classes: int = 10) -> np.ndarray:
        """float32 [N, num_classes] multi-hot image labels."""
        out = np.zeros([len(self), num_classes], np.float32)
        for n in range(len(self)):
            out[n, self.classes[n, : self.counts[n]]] = 1.0
        return out


def _tight_box(patch: np.ndarray, threshold: int) -> np.ndarray | None:
    """Edge-convention box of the pixels >= threshold in `patch [h, w]`, or None if none."""
    rows = np.flatnonzero(np.any(patch >= threshold, axis=1))
    cols = np.flatnonzero(np.any(patch >= threshold, axis=0))
    if len(rows) == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def make_scene(
    objects: np.ndarray, labels: np.ndarray, settings: SceneSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draws one scene.

    Args:
      objects: uint8 [M, h, w] source images; labels: int [M].
      settings: sizes, counts and overlap limit.
      rng: the scene's generator.
    Returns:
      canvas uint8 [S, S], boxes float32 [n, 4], classes int32 [n], sources int32 [n].
    """
    import cv2

    size = settings.canvas_size
    canvas = np.zeros([size, size], np.uint8)
    wanted = int(rng.integers(settings.min_objects, settings.max_objects + 1))
    boxes, classes, sources = [], [], []
    for _ in range(wanted):
        for _ in range(_MAX_TRIES):
            index = int(rng.integers(len(objects)))
            side = int(rng.integers(settings.min_object_size, settings.max_object_size + 1))
            patch = cv2.resize(objects[index], (side, side), interpolation=cv2.INTER_LINEAR)
            local = _tight_box(patch, settings.pixel_threshold)
            if local is None:  # an (almost) empty source image: draw another
                continue
            x0 = int(rng.integers(0, size - side + 1))
            y0 = int(rng.integers(0, size - side + 1))
            box = local + np.array([x0, y0, x0, y0], np.float32)
            if boxes and np.max(iou(box, np.stack(boxes))) > settings.max_overlap:
                continue
            region = canvas[y0 : y0 + side, x0 : x0 + side]
            np.maximum(region, patch, out=region)
            boxes.append(box)
            classes.append(int(labels[index]))
            sources.append(index)
            break
    if not boxes:
        raise DataError(
            f"could not place any object on a {size}x{size} canvas in {_MAX_TRIES} tries; the "
            "MNIST-format source looks empty (all pixels below data.scenes.pixel_threshold)."
        )
    return (
        canvas,
        np.stack(boxes).astype(np.float32),
        np.asarray(classes, np.int32),
        np.asarray(sources, np.int32),
    )


def generate(
    objects: np.ndarray, labels: np.ndarray, count: int, settings: SceneSettings, split: str
) -> Scenes:
    """Generates `count` scenes of `split` from source images `objects [M, h, w]`."""
    settings.check()
    k = settings.max_objects
    images = np.zeros([count, settings.canvas_size, settings.canvas_size], np.uint8)
    boxes = np.zeros([count, k, 4], np.float32)
    classes = np.full([count, k], -1, np.int32)
    sources = np.full([count, k], -1, np.int32)
    counts = np.zeros([count], np.int32)
    for n in range(count):
        rng = np.random.default_rng([settings.seed, _SPLIT_CODES[split], n])
        canvas, b, c, s = make_scene(objects, labels, settings, rng)
        images[n], counts[n] = canvas, len(b)
        boxes[n, : len(b)], classes[n, : len(b)], sources[n, : len(b)] = b, c, s
    return Scenes(images=images, boxes=boxes, classes=classes, counts=counts, sources=sources)


def cache_file(cache_dir: str, settings: SceneSettings) -> str:
    return os.path.join(os.path.expanduser(cache_dir), f"scenes_{settings.key()}.npz")


def _save(path: str, splits: dict[str, Scenes]) -> None:
    arrays = {}
    for split, scenes in splits.items():
        for field in dataclasses.fields(Scenes):
            arrays[f"{split}/{field.name}"] = getattr(scenes, field.name)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(path, buffer.getvalue())  # concurrent processes never read half a file


def _read(path: str) -> dict[str, Scenes]:
    try:
        with np.load(path) as content:
            return {
                split: Scenes(
                    **{f.name: content[f"{split}/{f.name}"] for f in dataclasses.fields(Scenes)}
                )
                for split in SPLITS
            }
    except Exception as e:  # zipfile/KeyError: a corrupt or foreign cache file
        raise DataError(f"{path}: unreadable scenes cache ({e}); delete it to regenerate.") from e


def load(settings: SceneSettings, split: str, *, cache_dir: str) -> Scenes:
    """The scenes of `split` ('train' or 'test'), generated once per settings and cached."""
    if split not in SPLITS:
        raise ConfigError(f"scenes have splits {SPLITS}; got split {split!r}.")
    settings.check()
    path = cache_file(cache_dir, settings)
    if os.path.exists(path):
        return _read(path)[split]
    generated = {}
    for name, count in (("train", settings.num_train), ("test", settings.num_test)):
        images, labels = mnist.load(
            settings.mnist_source,
            name,
            folder=settings.mnist_folder,
            tfds_name=settings.mnist_tfds_name,
            data_dir=settings.mnist_data_dir or None,
        )
        generated[name] = generate(images, labels, count, settings, name)
    _save(path, generated)
    logging.info(
        "Scenes (%d train, %d test) cached to %s.", settings.num_train, settings.num_test, path
    )
    return generated[split]
