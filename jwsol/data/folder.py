"""Your own images: a folder of JPEG/PNG files plus a labels file (`data.source = 'folder'`).

The labels file of a split (`data.folder.labels`, '{split}' replaced by the split name) is either
  a CSV `file,labels`: one row per image, the image's path relative to `data.folder.images` and
    its class names separated by spaces (an empty field: an image of none of the classes); a
    first row `file,labels` is a header and skipped; or
  a COCO JSON (`.json`): `categories` (id, name), `images` (id, file_name) and `annotations`
    (image_id, category_id, and optionally bbox = [x, y, w, h] in pixels). Every annotation
    makes its category an image label; those with a bbox are also true boxes, used only for
    evaluation (`iscrowd` regions count as VOC's difficult ones).
Class names come from `data.folder.classes`, or else from the training split's file (a COCO
file's categories by id; a CSV's labels sorted by name); the other split's file may only use
those. Images give the same annotation dicts as `jwsol.data.voc` (image = the file's path), plus
`label_classes` (int32 [L], the image-level labels). No TensorFlow or JAX here.

Malformed files raise `DataError` naming the file and row; a missing or unreadable image is
reported through `on_bad` (a skip, or an error with data.strict) naming the file and row.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os

import numpy as np

from jwsol.data import voc
from jwsol.errors import DataError

IMAGE_FORMATS = ("JPEG", "PNG")
_HEADER = ["file", "labels"]


@dataclasses.dataclass(frozen=True)
class FolderSpec:
    """Where a folder data set lives (`data.folder`) and which split names its classes."""

    images: str
    labels: str
    classes: tuple[str, ...] = ()
    class_split: str = "train"

    def labels_file(self, split: str) -> str:
        return os.path.expanduser(self.labels.replace("{split}", split))

    def images_dir(self, split: str) -> str:
        """`images`, or the labels file's folder when it is empty."""
        return os.path.expanduser(self.images) or os.path.dirname(self.labels_file(split))


@dataclasses.dataclass
class Row:
    """One image of a labels file: where (file and row, for messages), its relative path, its
    label names, and its true boxes float32 [M, 4] (edge convention) with their class names and
    difficult flags; the expected (height, width) when the file says (else None)."""

    where: str
    file: str
    labels: list[str]
    boxes: np.ndarray
    box_labels: list[str]
    difficult: np.ndarray
    size: tuple[int, int] | None = None


def read_labels(path: str) -> tuple[tuple[str, ...] | None, list[Row]]:
    """(class names the file declares (COCO) or None (CSV), its rows); DataError if malformed."""
    if not os.path.exists(path):
        raise DataError(
            f"{path}: labels file not found; set data.folder.labels to a CSV (file,labels) or a "
            "COCO JSON file ('{split}' is replaced by the split name)."
        )
    return _read_labels(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=8)
def _read_labels(path: str, mtime: float) -> tuple[tuple[str, ...] | None, list[Row]]:
    """`read_labels` once per file version (class names and each split read the same file)."""
    del mtime  # part of the cache key only
    names, rows = _read_coco(path) if path.lower().endswith(".json") else (None, _read_csv(path))
    if not rows:
        raise DataError(
            f"{path}: no images listed; expected one row per image, e.g. `img001.jpg,cat dog`."
        )
    seen = {}
    for row in rows:
        if row.file in seen:
            raise DataError(
                f"{row.where}: image {row.file!r} is listed twice (also {seen[row.file]})."
            )
        seen[row.file] = row.where
    return names, rows


def _read_csv(path: str) -> list[Row]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read the CSV ({e}).") from e
    rows = []
    for number, fields in enumerate(lines, start=1):
        if not fields or (number == 1 and [x.strip().lower() for x in fields] == _HEADER):
            continue
        where = f"{path} row {number}"
        if len(fields) != 2 or not fields[0].strip():
            raise DataError(f"{where}: expected two fields `file,labels`, found {fields!r}.")
        rows.append(
            Row(where, fields[0].strip(), fields[1].split(), np.zeros([0, 4], np.float32), [],
                np.zeros([0], bool))
        )  # fmt: skip
    return rows


def _coco_list(data: dict, key: str, path: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise DataError(f"{path}: {key!r} must be a list of objects, found {type(value).__name__}.")
    return value


def _read_coco(path: str) -> tuple[tuple[str, ...], list[Row]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}).") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e}).") from e
    if not isinstance(data, dict) or not data.get("categories"):
        raise DataError(
            f"{path}: no 'categories'; a COCO file lists its classes as "
            '"categories": [{"id": 1, "name": "cat"}, ...].'
        )
    categories = {}
    for i, cat in enumerate(_coco_list(data, "categories", path)):
        if not isinstance(cat, dict) or "id" not in cat or not str(cat.get("name", "")).strip():
            raise DataError(f"{path}: categories[{i}] needs an 'id' and a 'name'.")
        categories[cat["id"]] = str(cat["name"]).strip()
    rows, by_id = [], {}
    for i, image in enumerate(_coco_list(data, "images", path)):
        if not isinstance(image, dict) or "id" not in image or not image.get("file_name"):
            raise DataError(f"{path}: images[{i}] needs an 'id' and a 'file_name'.")
        size = (image.get("height"), image.get("width"))
        size = tuple(int(s) for s in size) if all(isinstance(s, int) for s in size) else None
        row = Row(f"{path} images[{i}]", str(image["file_name"]), [], [], [], [], size)
        rows.append(row)
        by_id[image["id"]] = row
    for i, ann in enumerate(_coco_list(data, "annotations", path) if "annotations" in data else []):
        where = f"{path} annotations[{i}]"
        if not isinstance(ann, dict) or ann.get("image_id") not in by_id:
            raise DataError(f"{where}: 'image_id' is missing or not in 'images'.")
        if ann.get("category_id") not in categories:
            raise DataError(
                f"{where}: unknown class: category_id {ann.get('category_id')!r} is not in "
                "'categories'."
            )
        row, name = by_id[ann["image_id"]], categories[ann["category_id"]]
        row.labels.append(name)
        bbox = ann.get("bbox")
        if bbox is None:
            continue
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise DataError(f"{where}: 'bbox' must be [x, y, width, height], found {bbox!r}.")
        x, y, w, h = (float(v) for v in bbox)
        row.boxes.append([x, y, x + w, y + h])  # COCO pixels are already edge coordinates
        row.box_labels.append(name)
        row.difficult.append(bool(ann.get("iscrowd", 0)))
    for row in rows:
        row.boxes = np.asarray(row.boxes, np.float32).reshape(-1, 4)
        row.difficult = np.asarray(row.difficult, bool)
    return tuple(categories[k] for k in sorted(categories, key=str)), rows


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def class_names(spec: FolderSpec) -> tuple[str, ...]:
    """The class names in label order (see the module docstring)."""
    if spec.classes:
        return tuple(spec.classes)
    path = spec.labels_file(spec.class_split)
    declared, rows = read_labels(path)
    if declared is not None:
        return declared
    names = sorted({name for row in rows for name in row.labels})
    if not names:
        raise DataError(f"{path}: no row has a label; write class names after each file.")
    return tuple(names)


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of a JPEG or PNG from its header; DataError naming `path` if bad."""
    if not os.path.exists(path):
        raise DataError(f"image file {path} not found.")
    height, width, fmt = voc.read_header(path, path)
    if fmt not in IMAGE_FORMATS:
        raise DataError(f"{path}: a {fmt} image; expected one of {IMAGE_FORMATS}.")
    return height, width


def _indices(names: list[str], index: dict[str, int], where: str, source: str) -> np.ndarray:
    for name in names:
        if name not in index:
            raise DataError(
                f"{where}: unknown class {name!r}; the classes are those of {source}: "
                f"{', '.join(index)}."
            )
    return np.asarray([index[n] for n in names], np.int32)


def load(
    spec: FolderSpec, split: str, *, on_bad: voc.OnBad = voc.raise_on_bad, verify: bool = False
) -> list[dict]:
    """The annotation dicts of `split` (as `voc.load_folder`'s, plus `label_classes`); with
    `verify`, every JPEG is also decoded once (`voc.decode_errors`)."""
    names = class_names(spec)
    source = "data.folder.classes" if spec.classes else spec.labels_file(spec.class_split)
    index = {name: i for i, name in enumerate(names)}
    path, root = spec.labels_file(split), spec.images_dir(split)
    declared, rows = read_labels(path)
    if declared is not None:
        _indices(list(declared), index, f"{path} categories", source)
    out, wheres = [], []
    for row in rows:
        labels = _indices(row.labels, index, row.where, source)
        box_classes = _indices(row.box_labels, index, row.where, source)
        image = os.path.join(root, row.file)
        try:
            height, width = image_size(image)
        except DataError as e:
            on_bad(row.where, str(e))
            continue
        if row.size is not None and row.size != (height, width):
            on_bad(
                row.where,
                f"{image} is {width}x{height}, the file says {row.size[1]}x{row.size[0]}.",
            )
            continue
        wheres.append(row.where)
        out.append(
            {
                "image_id": os.path.splitext(row.file)[0],
                "width": width,
                "height": height,
                "boxes": row.boxes,
                "classes": box_classes,
                "difficult": row.difficult,
                "image": image,
                "label_classes": np.unique(np.concatenate([labels, box_classes])),
            }
        )
    if not verify:
        return out
    jpegs = [a["image"].lower().endswith((".jpg", ".jpeg")) for a in out]
    errors = iter(voc.decode_errors([a["image"] for a, j in zip(out, jpegs) if j]))
    kept = []
    for ann, where, is_jpeg in zip(out, wheres, jpegs, strict=True):
        error = next(errors) if is_jpeg else None
        if error is None:
            kept.append(ann)
        else:
            on_bad(where, f"{ann['image']}: JPEG cannot be decoded ({error}).")
    return kept
