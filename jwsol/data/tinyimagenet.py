"""TinyImageNet-200 from its extracted folder (the pipeline is jwsol.data.classification).

The folder, as extracted from http://cs231n.stanford.edu/tiny-imagenet-200.zip:

    tiny-imagenet-200/wnids.txt                    200 wnids, one a line; label k = line k
    tiny-imagenet-200/words.txt                    wnid<TAB>synonyms, comma-separated (names)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG   500 images a class
    tiny-imagenet-200/val/val_annotations.txt      file<TAB>wnid<TAB>x1<TAB>y1<TAB>x2<TAB>y2
    tiny-imagenet-200/val/images/*.JPEG            10,000 images
    (test/ has no labels and is not read)

Splits: 'standard' (train / val) or 'shuffled' (every labelled image, train and val together,
in one permutation of `split_seed`, cut `train_fraction` : rest, the 70:30 split of seed 004).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from jwsol.errors import ConfigError, DataError

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDER_NAME = "tiny-imagenet-200"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
SPLITS = ("standard", "shuffled")

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


_MAGIC = {b"\xff\xd8": ("JPEG", b"\xff\xd9"), b"\x89P": ("PNG", b"IEND")}
_TAIL_BYTES = 1024  # end markers sit in the last bytes; a truncated file lacks them


def image_fault(path: str) -> str | None:
    """Why the image file at `path` is unusable (unreadable, not JPEG/PNG, truncated), else None.

    Reads the first bytes and the last kilobyte only: a cheap check of every file before
    TensorFlow's decoder meets one mid-run, where it could not name the file.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _TAIL_BYTES))
            tail = f.read()
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    if head not in _MAGIC:
        return "not a JPEG or PNG file"
    kind, end = _MAGIC[head]
    return None if end in tail else f"{kind} without its end marker (truncated)"


def check_images(paths: Sequence[str], num_threads: int = 16) -> None:
    """A `DataError` naming the first unusable file of `paths` and how many there are."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(num_threads) as pool:
        faults = [(p, why) for p, why in zip(paths, pool.map(image_fault, paths)) if why]
    if faults:
        path, why = faults[0]
        raise DataError(
            f"{path}: {why}; {len(faults)} of {len(paths)} images are unusable. Extract "
            f"{FOLDER_NAME} again from {URL}."
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
