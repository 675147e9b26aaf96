"""Every made-up data set: for the `fake` sources of the smoke variants and for the tests.

- `mnist(split)`: MNIST-shaped uint8 images and labels (class c is a filled rectangle whose size
  is set by c, so a net can tell the classes apart), made in memory; `write_mnist_folder` writes
  them as IDX files.
- A VOCdevkit/VOC2007 folder (JPEG + XML) with known coloured objects (`VOC_IMAGES`), and
  Fast R-CNN style `.mat` proposal files for it.
- A tiny-imagenet-200-shaped folder (`write_tinyimagenet_folder`).

Everything is a pure function of its arguments (seeded). No TensorFlow or JAX here.
"""

from __future__ import annotations

import colorsys
import os

import numpy as np
import scipy.io
from PIL import Image

from jwsol.data import tinyimagenet
from jwsol.data.idx import write_idx

# ----------------------------------------------------------------------------------------------
# MNIST-shaped objects.
# ----------------------------------------------------------------------------------------------

MNIST_TRAIN, MNIST_TEST = 256, 64  # images per split of the fake source


def mnist_splits(
    n_train: int = MNIST_TRAIN, n_test: int = MNIST_TEST, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train', 'test'}: (images uint8 [N, 28, 28], labels int32 [N]), both from one stream."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for k, c in enumerate(labels):
            h, w = 6 + 2 * (c % 5), 6 + 3 * (c // 5) * 2
            y, x = rng.integers(0, 28 - h), rng.integers(0, 28 - w)
            images[k, y : y + h, x : x + w] = 255
        out[split] = images, labels.astype(np.int32)
    return out


def mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The `fake` MNIST source: split 'train' (256 images) or 'test' (64)."""
    return mnist_splits()[split]


def write_mnist_folder(folder: str, n_train: int = MNIST_TRAIN, n_test: int = MNIST_TEST,
                       seed: int = 0) -> str:  # fmt: skip
    """`mnist_splits` as MNIST-format IDX files (train-*, t10k-*) in `folder`; returns it."""
    os.makedirs(folder, exist_ok=True)
    for split, (images, labels) in mnist_splits(n_train, n_test, seed).items():
        prefix = "train" if split == "train" else "t10k"
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), labels.astype(np.uint8))
    return folder


# ----------------------------------------------------------------------------------------------
# A VOCdevkit folder and its proposal files.
# ----------------------------------------------------------------------------------------------

BACKGROUND = (128, 128, 128)

# The test VOC set. Boxes are VOC's 1-based inclusive (xmin, ymin, xmax, ymax); each object is
# painted as a solid rectangle of its colour over the pixels it covers, so tests can check
# that a transformed box still sits on its colour.
VOC_IMAGES = {
    "000001": {
        "size": (120, 90),  # (width, height)
        "objects": [
            {"name": "dog", "box": (11, 21, 60, 80), "color": (220, 30, 30)},
            {"name": "person", "box": (61, 11, 110, 50), "color": (30, 30, 220), "difficult": 1},
        ],
    },
    "000002": {
        "size": (100, 140),
        "objects": [
            {"name": "car", "box": (1, 1, 100, 70), "color": (30, 200, 30), "truncated": 1},
            {"name": "cat", "box": (21, 81, 70, 130), "color": (230, 230, 40)},
        ],
    },
    "000003": {
        "size": (80, 60),
        "objects": [{"name": "bird", "box": (5, 5, 40, 30), "color": (200, 40, 200)}],
    },
    "000004": {
        "size": (64, 64),
        "objects": [{"name": "chair", "box": (10, 10, 50, 50), "color": (40, 200, 200)}],
    },
}
VOC_SPLITS = {
    "train": ["000001", "000002"],
    "val": ["000003", "000004"],
    "trainval": ["000001", "000002", "000003", "000004"],
    "test": ["000001", "000002", "000003", "000004"],
}


def edges(box_1based) -> np.ndarray:
    """VOC 1-based inclusive box -> edge convention, computed by hand's rule."""
    xmin, ymin, xmax, ymax = box_1based
    return np.array([xmin - 1, ymin - 1, xmax, ymax], np.float32)


def write_jpeg(path: str, size: tuple[int, int], objects: list[dict]) -> None:
    width, height = size
    pixels = np.empty([height, width, 3], np.uint8)
    pixels[:] = BACKGROUND
    for obj in objects:
        x1, y1, x2, y2 = edges(obj["box"]).astype(int)
        pixels[y1:y2, x1:x2] = obj["color"]
    Image.fromarray(pixels).save(path, quality=95)


def write_xml(path: str, image_id: str, size: tuple[int, int], objects: list[dict]) -> None:
    width, height = size
    parts = [
        f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for obj in objects:
        xmin, ymin, xmax, ymax = obj["box"]
        parts.append(
            f"<object><name>{obj['name']}</name><pose>Unspecified</pose>"
            f"<truncated>{obj.get('truncated', 0)}</truncated>"
            f"<difficult>{obj.get('difficult', 0)}</difficult>"
            f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
            f"<ymax>{ymax}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    with open(path, "w") as f:
        f.write("".join(parts))


def make_vocdevkit(root: str, images: dict = VOC_IMAGES, splits: dict = VOC_SPLITS) -> str:
    """A VOCdevkit/VOC2007 folder under `root`; returns the VOCdevkit path."""
    voc = os.path.join(root, "VOCdevkit", "VOC2007")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    for image_id, spec in images.items():
        write_jpeg(
            os.path.join(voc, "JPEGImages", f"{image_id}.jpg"), spec["size"], spec["objects"]
        )
        write_xml(
            os.path.join(voc, "Annotations", f"{image_id}.xml"),
            image_id,
            spec["size"],
            spec["objects"],
        )
    for split, ids in splits.items():
        with open(os.path.join(voc, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    return os.path.join(root, "VOCdevkit")


def write_mat(path: str, ids, boxes, scores=None, *, ids_as_column: bool = True) -> None:
    """A proposal file: `images` (cell), `boxes` (cell of [P, 4]), and `boxScores` when given.

    Fast R-CNN's files hold `images` as an [N, 1] cell and `boxes` as a [1, N] cell.
    """
    n = len(ids)
    images = np.empty([n, 1] if ids_as_column else [1, n], dtype=object)
    cell_boxes = np.empty([1, n], dtype=object)
    for i, image_id in enumerate(ids):
        images.reshape(-1)[i] = image_id
        b = np.asarray(boxes[i], np.float64)
        cell_boxes[0, i] = b if b.ndim == 2 else b.reshape(-1, 4)
    content = {"images": images, "boxes": cell_boxes}
    if scores is not None:
        cell_scores = np.empty([1, n], dtype=object)
        for i in range(n):
            cell_scores[0, i] = np.asarray(scores[i], np.float64).reshape(-1, 1)
        content["boxScores"] = cell_scores
    scipy.io.savemat(path, content)


def yxyx_1based(box_edges) -> list[float]:
    """Edge-convention (x1, y1, x2, y2) -> the `.mat` layout (y1, x1, y2, x2), 1-based."""
    x1, y1, x2, y2 = box_edges
    return [y1 + 1, x1 + 1, y2, x2]


def voc_proposals(image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the true boxes, a shifted box, a duplicate, a 1-pixel box and (000001 only) a
    box crossing the border; edge-convention boxes with increasing scores."""
    spec = VOC_IMAGES[image_id]
    width, height = spec["size"]
    out = [edges(o["box"]) for o in spec["objects"]]
    out.append(out[0] + np.array([2, 2, 2, 2], np.float32))
    out.append(out[0].copy())
    out.append(np.array([3, 3, 4, 4], np.float32))
    if image_id == "000001":
        out.append(np.array([width - 10, height - 10, width + 20, height + 20], np.float32))
    scores = np.linspace(0.1, 0.9, len(out)).astype(np.float32)
    return np.stack(out), scores


def make_voc_mats(folder: str, *, with_scores: bool, order: str = "yxyx") -> str:
    """One `.mat` per split for VOC_IMAGES; returns the `{split}` path template."""
    os.makedirs(folder, exist_ok=True)
    for split, ids in VOC_SPLITS.items():
        boxes, scores = [], []
        for image_id in ids:
            b, s = voc_proposals(image_id)
            raw = np.array([yxyx_1based(r) for r in b], np.float32)
            boxes.append(raw if order == "yxyx" else raw[:, [1, 0, 3, 2]])
            scores.append(s)
        write_mat(
            os.path.join(folder, f"voc_2007_{split}.mat"),
            ids,
            boxes,
            scores if with_scores else None,
        )
    return os.path.join(folder, "voc_2007_{split}.mat")


# ----------------------------------------------------------------------------------------------
# A tiny-imagenet-200 folder.
# ----------------------------------------------------------------------------------------------


def write_tinyimagenet_folder(
    root: str,
    num_classes: int = 4,
    train_per_class: int = 6,
    val_per_class: int = 3,
    size: int = 64,
    seed: int = 0,
) -> str:
    """Writes a made-up tiny-imagenet-200 folder under `root` and returns its path.

    Class c is a solid colour of hue c / num_classes with a random darker square and JPEG noise,
    so a small net separates the classes; the first training image of class 0 is greyscale (as
    some TinyImageNet images are). Names in words.txt are 'class0', 'class1', ...
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, tinyimagenet.FOLDER_NAME)
    wnids = [f"n{9000000 + c:08d}" for c in range(num_classes)]
    os.makedirs(os.path.join(folder, "val", "images"), exist_ok=True)
    with open(os.path.join(folder, "wnids.txt"), "w") as f:
        f.write("\n".join(wnids) + "\n")
    with open(os.path.join(folder, "words.txt"), "w") as f:
        f.write("n00001740\tentity\n")  # words.txt covers all of WordNet, not only the 200
        f.writelines(f"{w}\tclass{c}, synonym{c}\n" for c, w in enumerate(wnids))

    def picture(c: int) -> np.ndarray:
        colour = np.array(colorsys.hsv_to_rgb(c / num_classes, 0.8, 0.9)) * 255.0
        image = np.ones((size, size, 3)) * colour + rng.normal(0, 12, (size, size, 3))
        side = int(rng.integers(size // 4, size // 2))
        y, x = rng.integers(0, size - side, 2)
        image[y : y + side, x : x + side] *= 0.5
        return np.clip(image, 0, 255).astype(np.uint8)

    lines = []
    for c, wnid in enumerate(wnids):
        image_dir = os.path.join(folder, "train", wnid, "images")
        os.makedirs(image_dir, exist_ok=True)
        with open(os.path.join(folder, "train", wnid, f"{wnid}_boxes.txt"), "w") as f:
            for k in range(train_per_class):
                f.write(f"{wnid}_{k}.JPEG\t0\t0\t{size - 1}\t{size - 1}\n")
                image = Image.fromarray(picture(c))
                if c == 0 and k == 0:
                    image = image.convert("L")
                image.save(os.path.join(image_dir, f"{wnid}_{k}.JPEG"), "JPEG", quality=95)
        for k in range(val_per_class):
            name = f"val_{c * val_per_class + k}.JPEG"
            Image.fromarray(picture(c)).save(os.path.join(folder, "val", "images", name), "JPEG")
            lines.append(f"{name}\t{wnid}\t0\t0\t{size - 1}\t{size - 1}\n")
    with open(os.path.join(folder, "val", "val_annotations.txt"), "w") as f:
        f.writelines(lines[k] for k in rng.permutation(len(lines)))
    return folder


# The `fake_tinyimagenet` source of the classification smoke variant: small and quick to train.
FAKE_TINYIMAGENET = {"num_classes": 6, "train_per_class": 4, "val_per_class": 3, "size": 20}


def tinyimagenet_folder(cache_dir: str) -> str:
    """The `fake_tinyimagenet` folder under `cache_dir`, written once (atomically)."""
    import shutil
    import tempfile

    p = FAKE_TINYIMAGENET
    name = (
        f"tinyimagenet_{p['num_classes']}x{p['train_per_class']}x{p['val_per_class']}_{p['size']}"
    )
    parent = os.path.join(os.path.expanduser(cache_dir), "fake")
    final = os.path.join(parent, name)
    if not os.path.isdir(final):
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, suffix=".tmp")
        write_tinyimagenet_folder(tmp, **p)
        try:
            os.rename(tmp, final)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(final, tinyimagenet.FOLDER_NAME)
