"""The offline scenes written as the files users bring, so the real-data paths run here.

    python -m jwsol.data.export --format voc --out DIR [--config configs/oicr.py:scenes]
        [--num-train N] [--num-test N] [--quality Q]

`--format voc` writes a VOCdevkit folder, DIR/VOCdevkit/VOC2007/ with JPEGImages/<id>.jpg,
Annotations/<id>.xml (VOC's 1-based inclusive boxes, difficult and truncated flags) and
ImageSets/Main/{train,val,trainval,test}.txt plus the per-class <class>_<split>.txt (1 present,
0 only difficult, -1 absent), and DIR/selective_search_data/voc_2007_<split>.mat with the
scenes' proposals in the Fast R-CNN layout: the VOC configs read it with
`--config.data.voc_root=DIR/VOCdevkit --config.data.proposals.mat_file=DIR/selective_search_data/
voc_2007_{split}.mat`. The scenes' train split becomes VOC's trainval (its first half train, the
rest val), their test split VOC's test.

`--format folder` writes images and labels for `data.source='folder'` (jwsol.data.folder):
DIR/<split>/<id>.jpg, DIR/<split>.csv (`file,labels`), DIR/<split>.json (COCO, with the true
boxes) and DIR/proposals_<split>.mat, for the scenes' splits train and test.

The scenes are those of `--config`'s data section (its selective search proposals, cached as its
training run caches them) with `--num-train`/`--num-test` scenes; scene i does not depend on how
many are made, so any count gives the first scenes of the training run's. Class names become
VOC-style words (`class_word`). Host-side NumPy and PIL; no JAX.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from xml.etree import ElementTree

import numpy as np

from jwsol import errors
from jwsol.data import records as records_lib
from jwsol.data import voc
from jwsol.data.proposals import formats as proposal_formats
from jwsol.errors import UserError

FORMATS = ("voc", "folder")
DEFAULT_CONFIG = "configs/oicr.py:scenes"
# Scenes split -> the VOC splits it fills (the train scenes split in half for train / val).
VOC_SPLITS = {"trainval": "train", "test": "test"}


def class_word(name: str) -> str:
    """A class name as one lowercase word, other characters as '_': 'T-shirt/top' -> 't_shirt_top'
    (VOC names its per-class files after the class, and the CSV separates labels by spaces)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def load_scenes(
    spec: str, num_train: int, num_test: int, cache_dir: str = ""
) -> dict[str, records_lib.Records]:
    """The records of the scenes splits 'train' and 'test' as `spec`'s data section makes them."""
    from jwsol.training import config as config_lib

    overrides = {"data.scenes.num_train": num_train, "data.scenes.num_test": num_test}
    if cache_dir:
        overrides["data.cache_dir"] = cache_dir
    data = config_lib.load(spec, overrides).data
    if data.source != "scenes":
        raise UserError(f"--config {spec}: data.source is {data.source!r}; export needs scenes.")
    return {split: records_lib.load_records(data, split) for split in ("train", "test")}


def write_jpeg(path: str, image: np.ndarray, quality: int) -> None:
    """uint8 [H, W] or [H, W, 3] -> an RGB JPEG (grey replicated, as VOC's files are RGB)."""
    from PIL import Image

    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(path, quality=quality)


def voc_xml(
    image_id: str, size: tuple[int, int], boxes: np.ndarray, names: Sequence[str], difficult
) -> str:
    """A VOC annotation: size (height, width); boxes float [M, 4] edge convention (written as
    VOC's 1-based inclusive pixels, `voc.to_voc_inclusive`); names and difficult per box."""
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "folder").text = "VOC2007"
    ElementTree.SubElement(root, "filename").text = f"{image_id}.jpg"
    node = ElementTree.SubElement(root, "size")
    for tag, value in (("width", size[1]), ("height", size[0]), ("depth", 3)):
        ElementTree.SubElement(node, tag).text = str(value)
    for box, name, hard in zip(voc.to_voc_inclusive(boxes), names, difficult, strict=True):
        obj = ElementTree.SubElement(root, "object")
        for tag, value in (("name", name), ("pose", "Unspecified"), ("truncated", "0")):
            ElementTree.SubElement(obj, tag).text = value
        ElementTree.SubElement(obj, "difficult").text = str(int(hard))
        bndbox = ElementTree.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            ElementTree.SubElement(bndbox, tag).text = f"{float(value):g}"
    return ElementTree.tostring(root, encoding="unicode")


def class_flags(rec: records_lib.Records, i: int, num_classes: int) -> np.ndarray:
    """int [C] of image i as VOC's per-class files: 1 present, 0 only difficult, -1 absent."""
    flags = np.full([num_classes], -1, np.int64)
    classes, hard = rec.gt_classes[i], rec.gt_difficult[i]
    flags[classes[hard]] = 0
    flags[classes[~hard]] = 1
    return flags


def write_proposals(path: str, rec: records_lib.Records, rows, ids: Sequence[str]) -> None:
    """The proposals of images `rows` of `rec`, named `ids`, as a Fast R-CNN `.mat` file."""
    rows = list(rows)
    proposal_formats.write(
        path,
        proposal_formats.ProposalSet(
            ids=list(ids),
            boxes=[rec.proposals[i] for i in rows],
            scores=[rec.proposal_scores[i] for i in rows] if rec.has_scores else None,
            sizes={ids[k]: tuple(int(v) for v in rec.sizes[i]) for k, i in enumerate(rows)},
        ),
    )


def _write_lines(path: str, lines: Sequence[str]) -> None:
    with open(path, "w") as f:
        f.writelines(line + "\n" for line in lines)


def write_voc(splits: dict[str, records_lib.Records], out: str, quality: int) -> str:
    """The VOCdevkit folder and proposal files (module docstring); returns the VOCdevkit path."""
    devkit = os.path.join(out, "VOCdevkit")
    voc_dir = os.path.join(devkit, "VOC2007")
    main = os.path.join(voc_dir, "ImageSets", "Main")
    os.makedirs(os.path.join(voc_dir, "Annotations"), exist_ok=True)
    os.makedirs(main, exist_ok=True)
    words = [class_word(n) for n in splits["train"].class_names]
    for voc_split, scenes_split in VOC_SPLITS.items():
        rec = splits[scenes_split]
        for i, image_id in enumerate(rec.image_ids):
            write_jpeg(
                os.path.join(voc_dir, "JPEGImages", f"{image_id}.jpg"), rec.images[i], quality
            )
            xml = voc_xml(
                image_id, tuple(rec.sizes[i]), rec.gt_boxes[i],
                [words[c] for c in rec.gt_classes[i]], rec.gt_difficult[i],
            )  # fmt: skip
            with open(os.path.join(voc_dir, "Annotations", f"{image_id}.xml"), "w") as f:
                f.write(xml)
        half = (len(rec) + 1) // 2
        parts = {voc_split: range(len(rec))}
        if voc_split == "trainval":
            parts.update(train=range(half), val=range(half, len(rec)))
        flags = np.stack([class_flags(rec, i, len(words)) for i in range(len(rec))])
        for name, rows in parts.items():
            _write_lines(os.path.join(main, f"{name}.txt"), [rec.image_ids[i] for i in rows])
            for c, word in enumerate(words):
                lines = [f"{rec.image_ids[i]} {flags[i, c]:2d}" for i in rows]
                _write_lines(os.path.join(main, f"{word}_{name}.txt"), lines)
            write_proposals(
                os.path.join(out, "selective_search_data", f"voc_2007_{name}.mat"),
                rec, rows, [rec.image_ids[i] for i in rows],
            )  # fmt: skip
    return devkit


def coco_json(rec: records_lib.Records, files: Sequence[str], words: Sequence[str]) -> dict:
    """COCO's `categories` (id = label + 1), `images` and `annotations` (bbox [x, y, w, h])."""
    categories = [{"id": c + 1, "name": word} for c, word in enumerate(words)]
    images, annotations = [], []
    for i, file in enumerate(files):
        height, width = (int(v) for v in rec.sizes[i])
        images.append({"id": i + 1, "file_name": file, "height": height, "width": width})
        for box, c, hard in zip(rec.gt_boxes[i], rec.gt_classes[i], rec.gt_difficult[i], strict=True):  # fmt: skip
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                "iscrowd": int(hard),
            })  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": categories}


def write_folder(splits: dict[str, records_lib.Records], out: str, quality: int) -> str:
    """Images, CSV, COCO JSON and `.mat` proposals per split (module docstring); returns `out`."""
    words = [class_word(n) for n in splits["train"].class_names]
    for split, rec in splits.items():
        files = [f"{split}/{image_id}.jpg" for image_id in rec.image_ids]
        rows = ["file,labels"]
        for i, file in enumerate(files):
            write_jpeg(os.path.join(out, file), rec.images[i], quality)
            labels = " ".join(words[c] for c in np.flatnonzero(rec.labels[i] > 0))
            rows.append(f"{file},{labels}")
        _write_lines(os.path.join(out, f"{split}.csv"), rows)
        with open(os.path.join(out, f"{split}.json"), "w") as f:
            json.dump(coco_json(rec, files, words), f)
        write_proposals(
            os.path.join(out, f"proposals_{split}.mat"), rec, range(len(rec)),
            [os.path.splitext(file)[0] for file in files],
        )  # fmt: skip
    return out


def _parser() -> argparse.ArgumentParser:
    p = errors.ArgumentParser(
        prog="python -m jwsol.data.export",
        description="Write the offline scenes as a VOCdevkit folder or a folder of labelled JPEGs.",
    )
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="output folder (created).")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="job config whose scenes to write.")
    p.add_argument("--num-train", type=int, default=200, help="training scenes written.")
    p.add_argument("--num-test", type=int, default=50, help="test scenes written.")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (1-100).")
    p.add_argument("--cache-dir", default="", help="replaces the config's data.cache_dir.")
    return p


def run(args: argparse.Namespace) -> str:
    if args.num_train < 1 or args.num_test < 1:
        raise UserError("--num-train and --num-test must be >= 1.")
    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality {args.quality}: expected 1..100.")
    splits = load_scenes(args.config, args.num_train, args.num_test, args.cache_dir)
    write = write_voc if args.format == "voc" else write_folder
    path = write(splits, args.out, args.quality)
    print(f"wrote {len(splits['train'])} + {len(splits['test'])} scenes to {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return errors.run_main(lambda: run(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
