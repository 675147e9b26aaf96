"""PASCAL VOC 2007 annotations and images, from a VOCdevkit folder or from tfds `voc/2007`.

Both sources give the same per-image annotation dict (see `parse_annotation`) plus `image`,
which is the JPEG's path (folder) or its encoded bytes (tfds). Nothing is decoded here except
JPEG headers; the tf.data pipeline (`jwsol.data.detection`) decodes. No JAX here.

Bad input never reaches TensorFlow: every loader calls `on_bad(path, reason)` for a missing or
malformed XML, a missing, truncated or non-JPEG image, or an image whose size disagrees with its
XML. The default `on_bad` raises `DataError`; the pipeline passes one that counts and logs the
skip (or raises, with `data.strict=True`).
"""

from __future__ import annotations

import concurrent.futures
import io
import os
from collections.abc import Callable
from xml.etree import ElementTree

import numpy as np

from jwsol.errors import DataError

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

SPLITS = ("train", "val", "trainval", "test")
_TFDS_SPLITS = {
    "train": ("train",),
    "val": ("validation",),
    "trainval": ("train", "validation"),
    "test": ("test",),
}
DIFFICULT_POLICIES = ("include", "exclude", "ignore")

# How far back from the end of a JPEG to look for its end-of-image marker (files may carry a
# few padding bytes after it).
_EOI_SEARCH_BYTES = 1024

OnBad = Callable[[str, str], None]


def raise_on_bad(path: str, reason: str) -> None:
    """The default `on_bad`: a DataError naming the file."""
    raise DataError(f"{path}: {reason}")


def _text(node: ElementTree.Element, tag: str, xml_path: str, default: str | None = None) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise DataError(f"{xml_path}: missing <{tag}> in <{node.tag}>.")
    return child.text.strip()


def _number(node: ElementTree.Element, tag: str, xml_path: str) -> float:
    text = _text(node, tag, xml_path)
    try:
        return float(text)
    except ValueError as e:
        raise DataError(f"{xml_path}: <{tag}> is {text!r}, not a number.") from e


def parse_annotation(xml_path: str, classes: tuple[str, ...] = VOC_CLASSES) -> dict:
    """Reads one VOC annotation XML whose object names are among `classes`.

    Returns a dict with
      image_id: str, the XML file's stem (e.g. '000005');
      width, height: int, from <size>;
      boxes: float32 [M, 4] (x1, y1, x2, y2) in pixels. VOC stores 1-based inclusive pixel
        indices (xmin..xmax); we convert to continuous pixel edges, x1 = xmin - 1,
        y1 = ymin - 1, x2 = xmax, y2 = ymax, so the box width is x2 - x1 (= the devkit's
        xmax - xmin + 1) and resizing maps boxes by a plain multiplication. Boxes are returned
        as stored (not clipped); `jwsol.ops.boxes_np.clip_boxes`/`data.proposals.valid_box_mask` clean them.
        `to_voc_inclusive` converts back;
      classes: int32 [M], indices into `classes`;
      difficult: bool [M]; truncated: bool [M] (a missing tag reads as False).
    Raises DataError naming the file for a missing/unparsable file, missing fields, non-numeric
    coordinates or an unknown class name.
    """
    try:
        root = ElementTree.parse(xml_path).getroot()
    except FileNotFoundError as e:
        raise DataError(f"{xml_path}: annotation file not found.") from e
    except (ElementTree.ParseError, OSError) as e:
        raise DataError(f"{xml_path}: cannot parse annotation XML ({e}).") from e
    size = root.find("size")
    if size is None:
        raise DataError(f"{xml_path}: missing <size>.")
    width, height = int(_number(size, "width", xml_path)), int(_number(size, "height", xml_path))
    index = {name: i for i, name in enumerate(classes)}
    boxes, labels, difficult, truncated = [], [], [], []
    for obj in root.findall("object"):
        name = _text(obj, "name", xml_path).lower()
        if name not in index:
            raise DataError(
                f"{xml_path}: unknown class {name!r}; expected one of {', '.join(classes)}."
            )
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DataError(f"{xml_path}: object {name!r} has no <bndbox>.")
        xmin, ymin, xmax, ymax = (
            _number(bndbox, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax")
        )
        boxes.append([xmin - 1.0, ymin - 1.0, xmax, ymax])
        labels.append(index[name])
        difficult.append(_text(obj, "difficult", xml_path, default="0") == "1")
        truncated.append(_text(obj, "truncated", xml_path, default="0") == "1")
    return {
        "image_id": os.path.splitext(os.path.basename(xml_path))[0],
        "width": width,
        "height": height,
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "classes": np.asarray(labels, np.int32),
        "difficult": np.asarray(difficult, bool),
        "truncated": np.asarray(truncated, bool),
    }


def folder_classes(root: str) -> tuple[str, ...]:
    """The classes of a VOCdevkit folder: the names of its per-class files
    `ImageSets/Main/<class>_<split>.txt`, sorted (VOC 2007's give VOC_CLASSES); VOC_CLASSES
    where it has none or no folder is configured (`root` empty: a model built without data, e.g.
    to port weights, benchmark or inspect it)."""
    if not root:
        return VOC_CLASSES
    main = os.path.join(find_voc_root(root), "ImageSets", "Main")
    names = set()
    for entry in os.listdir(main) if os.path.isdir(main) else ():
        stem = entry.removesuffix(".txt")
        for split in SPLITS:
            if entry.endswith(".txt") and stem.endswith(f"_{split}") and stem != f"_{split}":
                names.add(stem.removesuffix(f"_{split}").lower())  # as <name> is read
    return tuple(sorted(names)) or VOC_CLASSES


def to_voc_inclusive(boxes: np.ndarray) -> np.ndarray:
    """Edge-convention boxes [..., 4] -> VOC's 1-based inclusive (xmin, ymin, xmax, ymax)."""
    return np.asarray(boxes, np.float32) + np.array([1.0, 1.0, 0.0, 0.0], np.float32)


def image_labels(classes: np.ndarray, difficult: np.ndarray, policy: str, num_classes: int = 20):
    """Image-level targets from the objects of one image.

    policy (data.difficult_policy):
      'include': a class is present if any of its objects is, difficult or not (tfds `labels`);
      'exclude': only non-difficult objects count; a class seen only as difficult is negative
        (tfds `labels_no_difficult`);
      'ignore': as 'exclude', but a class seen only as difficult gets weight 0, i.e. it is
        neither positive nor negative (the VOC classification devkit's '0' label).
    Returns labels float32 [C] (multi-hot) and weights float32 [C].
    """
    if policy not in DIFFICULT_POLICIES:
        raise DataError(f"data.difficult_policy={policy!r}; expected one of {DIFFICULT_POLICIES}.")
    labels = np.zeros([num_classes], np.float32)
    weights = np.ones([num_classes], np.float32)
    easy = classes[~difficult]
    labels[easy] = 1.0
    if policy == "include":
        labels[classes] = 1.0
    elif policy == "ignore":
        only_difficult = np.setdiff1d(classes[difficult], easy)
        weights[only_difficult] = 0.0
    return labels, weights


def read_header(opener, path: str) -> tuple[int, int, str]:
    """(height, width, PIL's format name) from an image's header (`opener`: a path or a file
    object); DataError naming `path` when PIL cannot read it."""
    from PIL import Image

    try:
        with Image.open(opener) as image:
            width, height = image.size
            return height, width, image.format
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
        raise DataError(f"{path}: unreadable image header ({e}).") from e


def check_jpeg(path: str, data: bytes | None = None) -> tuple[int, int]:
    """(height, width) of a JPEG after cheap integrity checks; DataError naming `path` if bad.

    Checks the start-of-image marker, a readable header (PIL) and an end-of-image marker near
    the end (a truncated download lacks it). Reads the header and the last kilobyte only,
    unless `data` (the whole file) is given.
    """
    try:
        if data is None:
            with open(path, "rb") as f:
                head = f.read(2)
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _EOI_SEARCH_BYTES))
                tail = f.read()
            opener = path
        else:
            head, tail, opener = data[:2], data[-_EOI_SEARCH_BYTES:], io.BytesIO(data)
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e}).") from e
    if head != b"\xff\xd8":
        raise DataError(f"{path}: not a JPEG (no start-of-image marker); the file is corrupt.")
    if b"\xff\xd9" not in tail:
        raise DataError(f"{path}: JPEG has no end-of-image marker; the file is truncated.")
    height, width, fmt = read_header(opener, path)
    if fmt != "JPEG":
        raise DataError(f"{path}: expected a JPEG, found {fmt}.")
    return height, width


def find_voc_root(root: str, year: str = "2007") -> str:
    """The `VOC<year>` folder from a VOCdevkit folder, its parent, or the VOC folder itself."""
    for candidate in (
        root,
        os.path.join(root, f"VOC{year}"),
        os.path.join(root, "VOCdevkit", f"VOC{year}"),
    ):
        if os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise DataError(
        f"data.voc_root={root!r}: no VOC{year} folder with JPEGImages/ found (looked in the folder, "
        f"VOC{year}/ and VOCdevkit/VOC{year}/). Download VOCtrainval_06-Nov-2007.tar and "
        "VOCtest_06-Nov-2007.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2007/) and extract "
        "them into one folder."
    )


def read_split_ids(voc_dir: str, split: str) -> list[str]:
    """Image ids of `ImageSets/Main/<split>.txt`."""
    if split not in SPLITS:
        raise DataError(f"unknown VOC split {split!r}; expected one of {SPLITS}.")
    path = os.path.join(voc_dir, "ImageSets", "Main", f"{split}.txt")
    if not os.path.exists(path):
        raise DataError(f"{path}: split file not found; is the VOC {split} set extracted here?")
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def _check_sizes(path: str, ann: dict, height: int, width: int, on_bad: OnBad) -> bool:
    if (height, width) != (ann["height"], ann["width"]):
        on_bad(path, f"image is {width}x{height} but its XML says {ann['width']}x{ann['height']}.")
        return False
    return True


def decode_errors(images: list, num_threads: int = 0) -> list[str | None]:
    """Decodes each JPEG (a path or bytes) fully with TensorFlow's decoder, the pipeline's own.

    Returns, per image, the decoder's error message, or None when it decodes. A JPEG with an
    intact header and end marker can still hold damaged data that only a full decode finds.
    Threads overlap well: TensorFlow releases the GIL while decoding.
    """
    import tensorflow as tf

    def one(item) -> str | None:
        try:
            data = tf.io.read_file(item) if isinstance(item, str) else item
            tf.io.decode_jpeg(data, channels=3)
        except tf.errors.OpError as e:
            return e.message.strip().splitlines()[-1]
        return None

    with concurrent.futures.ThreadPoolExecutor(num_threads or os.cpu_count() or 1) as pool:
        return list(pool.map(one, images))


def _drop_undecodable(records: list[dict], names: list[str], on_bad: OnBad) -> list[dict]:
    errors = decode_errors([r["image"] for r in records])
    kept = []
    for record, name, error in zip(records, names, errors, strict=True):
        if error is None:
            kept.append(record)
        else:
            on_bad(name, f"JPEG cannot be decoded ({error}).")
    return kept


def load_folder(
    root: str, split: str, *, on_bad: OnBad = raise_on_bad, verify: bool = False
) -> list[dict]:
    """Annotations of a VOCdevkit split, each with `image` = the JPEG's path and `classes`
    indexing `folder_classes(root)`.

    Images whose XML or JPEG is missing or bad are reported through `on_bad` and left out;
    with `verify`, every JPEG is also decoded once (`decode_errors`, about 3 ms an image).
    """
    voc_dir = find_voc_root(root)
    classes = folder_classes(root)
    records = []
    for image_id in read_split_ids(voc_dir, split):
        xml_path = os.path.join(voc_dir, "Annotations", f"{image_id}.xml")
        jpeg_path = os.path.join(voc_dir, "JPEGImages", f"{image_id}.jpg")
        try:
            ann = parse_annotation(xml_path, classes)
        except DataError as e:
            on_bad(xml_path, str(e).removeprefix(f"{xml_path}: "))
            continue
        try:
            height, width = check_jpeg(jpeg_path)
        except DataError as e:
            on_bad(jpeg_path, str(e).removeprefix(f"{jpeg_path}: "))
            continue
        if _check_sizes(jpeg_path, ann, height, width, on_bad):
            ann["image"] = jpeg_path
            records.append(ann)
    if verify:
        records = _drop_undecodable(records, [r["image"] for r in records], on_bad)
    return records


def _tfds_example(example: dict, on_bad: OnBad, where: str) -> dict | None:
    """One tfds `voc` example (NumPy, image not decoded) -> annotation dict, or None if bad."""
    filename = example["image/filename"]
    filename = filename.decode() if isinstance(filename, bytes) else str(filename)
    image_id = os.path.splitext(filename)[0]
    path = f"{where}:{filename}"
    data = example["image"]
    if not isinstance(data, bytes):
        on_bad(path, "image is not encoded bytes; load with decoders={'image': SkipDecoding()}.")
        return None
    try:
        height, width = check_jpeg(path, data)
    except DataError as e:
        on_bad(path, str(e).removeprefix(f"{path}: "))
        return None
    objects = example["objects"]
    lengths = {k: len(objects[k]) for k in ("bbox", "label", "is_difficult", "is_truncated")}
    if len(set(lengths.values())) != 1:
        on_bad(path, f"objects fields have different lengths {lengths}.")
        return None
    # tfds stores (ymin/height, xmin/width, ymax/height, xmax/width) with VOC's 1-based xmin.
    bbox = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
    scale = np.array([width, height, width, height], np.float32)
    boxes = bbox[:, [1, 0, 3, 2]] * scale - np.array([1.0, 1.0, 0.0, 0.0], np.float32)
    classes = np.asarray(objects["label"], np.int32)
    if np.any((classes < 0) | (classes >= len(VOC_CLASSES))):
        on_bad(path, f"class labels {classes.tolist()} outside 0..{len(VOC_CLASSES) - 1}.")
        return None
    return {
        "image_id": image_id,
        "width": width,
        "height": height,
        "boxes": boxes.astype(np.float32),
        "classes": classes,
        "difficult": np.asarray(objects["is_difficult"], bool),
        "truncated": np.asarray(objects["is_truncated"], bool),
        "image": data,
    }


def load_tfds(
    split: str,
    *,
    data_dir: str | None,
    name: str = "voc/2007",
    on_bad: OnBad = raise_on_bad,
    verify: bool = False,
) -> list[dict]:
    """Annotations of tfds `voc/2007` for our split name, each with `image` = JPEG bytes.

    Bad examples go to `on_bad` (named `tfds:<name>/<tfds split>:<file name>`); `verify` as in
    `load_folder`.

    NOTE: the split's encoded JPEGs are held in memory (about 0.45 GB for VOC 2007 trainval),
    which buys random access by index, hence resumable, index-deterministic pipelines.
    """
    import tensorflow_datasets as tfds

    if split not in _TFDS_SPLITS:
        raise DataError(f"unknown VOC split {split!r}; expected one of {SPLITS}.")
    records, names = [], []
    for tfds_split in _TFDS_SPLITS[split]:
        try:
            ds = tfds.load(
                name,
                split=tfds_split,
                data_dir=data_dir or None,
                download=False,
                shuffle_files=False,
                decoders={"image": tfds.decode.SkipDecoding()},
            )
        except Exception as e:  # tfds raises AssertionError/DatasetNotFoundError/...
            raise DataError(
                f"tfds {name!r} split {tfds_split!r} not found in data_dir={data_dir!r} ({e}). "
                f"Run `tfds build {name} --data_dir=DIR` on a machine with internet and copy DIR, "
                "or use data.source='voc_folder' with an extracted VOCdevkit."
            ) from e
        where = f"tfds:{name}/{tfds_split}"
        for example in tfds.as_numpy(ds):
            record = _tfds_example(example, on_bad, where)
            if record is not None:
                records.append(record)
                names.append(f"{where}:{record['image_id']}.jpg")
    if verify:
        records = _drop_undecodable(records, names, on_bad)
    return records
