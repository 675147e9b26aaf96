"""The records of a detection split: the host-side NumPy view (scenes, VOC folder or tfds), with
proposals joined and cleaned, and the config checks of the detection data section.

Records (the host-side NumPy view of a split, with proposals joined and cleaned) are built once
per (config, split) and kept in memory: `load_records`. Bad input is reported as
`DataError` naming the file when `data.strict` is True, else skipped, logged (absl) and counted
(`Records.skipped`).
The in-process cache is keyed by a frozen `RecordsSpec` of everything that shapes the records.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

import ml_collections
import numpy as np
from absl import logging

from jwsol.data import augment, folder, mnist, proposals, scenes, voc
from jwsol.data.proposals import mat as proposal_mat
from jwsol.data.proposals import search as proposal_search
from jwsol.errors import ConfigError, DataError
from jwsol.ops.boxes_np import clip_boxes

SOURCES = ("scenes", "voc_folder", "tfds", "folder")
PROPOSAL_METHODS = ("selective_search", "grid", "mat", "none")
# Skips logged one by one before only the count is kept (the total is always logged).
_MAX_LOGGED_SKIPS = 20


def class_names(config_data: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Names of the C classes of `labels`, in label order."""
    return _class_names(records_spec(config_data))


def _class_names(c: RecordsSpec) -> tuple[str, ...]:
    if c.source == "scenes":
        s = c.scenes
        return mnist.class_names(s.mnist_source, s.mnist_tfds_name, s.mnist_folder)
    if c.source == "folder":
        return folder.class_names(c.folder)
    if c.source == "voc_folder":
        return voc.folder_classes(c.voc_root)
    return voc.VOC_CLASSES


def num_classes(config_data: ml_collections.ConfigDict) -> int:
    return len(class_names(config_data))


def check_config(c: ml_collections.ConfigDict) -> None:
    """ConfigError naming the field for values the pipeline cannot use."""
    choices = {
        "source": (c.source, SOURCES),
        "resize_mode": (c.resize_mode, augment.RESIZE_MODES),
        "difficult_policy": (c.difficult_policy, voc.DIFFICULT_POLICIES),
        "proposals.method": (c.proposals.method, PROPOSAL_METHODS),
        "proposals.mat_order": (c.proposals.mat_order, proposal_mat.MAT_ORDERS),
        "proposals.mode": (c.proposals.mode, ("fast", "quality")),
    }
    for field, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"data.{field}={value!r}; expected one of {allowed}.")
    for field in ("image_size", "max_proposals", "max_gt_boxes"):
        if int(c[field]) < 1:
            raise ConfigError(f"data.{field}={c[field]}; must be >= 1.")
    if c.resize_mode != "fixed":
        sides = list(c.scales) + [c.eval_scale]
        if not c.scales or min(sides) < 1:
            raise ConfigError(
                f"data.scales={tuple(c.scales)}, eval_scale={c.eval_scale}: need sides >= 1."
            )
        if c.resize_mode == "longer_side" and max(sides) > c.image_size:
            raise ConfigError(
                f"data.scales/eval_scale {tuple(sides)} exceed data.image_size={c.image_size} with "
                "resize_mode 'longer_side'."
            )
    if c.source == "scenes" and c.proposals.method == "mat":
        raise ConfigError("data.proposals.method='mat' needs a VOC source; scenes compute theirs.")
    if c.source == "folder" and not c.folder.labels:
        raise ConfigError(
            "data.folder.labels is empty; set it to your labels file, a CSV `file,labels` or a "
            "COCO JSON ('{split}' is replaced by the split name; docs/own_data.md)."
        )
    if c.proposals.method == "mat" and not c.proposals.mat_file:
        raise ConfigError(
            "data.proposals.mat_file is empty; set it or use method 'selective_search'."
        )


class Skips:
    """`on_bad` for the loaders: raises in strict mode, else counts and logs each skip."""

    def __init__(self, strict: bool, where: str):
        self.strict = strict
        self.where = where
        self.items: list[tuple[str, str]] = []

    def __call__(self, path: str, reason: str) -> None:
        if self.strict:
            raise DataError(f"{path}: {reason}")
        self.items.append((path, reason))
        if len(self.items) <= _MAX_LOGGED_SKIPS:
            logging.warning("Skipped (%s): %s: %s", self.where, path, reason)

    def summary(self) -> None:
        if self.items:
            logging.warning(
                "%s: %d skip(s) in total (set data.strict=True to stop on the first).",
                self.where,
                len(self.items),
            )


@dataclasses.dataclass
class Records:
    """One split, cleaned, in NumPy. Lists hold one entry per image (N images).

    images: JPEG paths ('path'), JPEG bytes ('bytes') or uint8 arrays [H, W] / [H, W, 3]
    ('raw'), per `image_kind`. sizes: int32 [N, 2] (height, width). Boxes are in original
    pixels (edge convention). proposal_scores are zeros when `has_scores` is False.
    skipped: (file or id, reason) for each image or box left out.
    """

    image_ids: list[str]
    images: list
    image_kind: str
    sizes: np.ndarray
    labels: np.ndarray
    label_weights: np.ndarray
    gt_boxes: list[np.ndarray]
    gt_classes: list[np.ndarray]
    gt_difficult: list[np.ndarray]
    proposals: list[np.ndarray]
    proposal_scores: list[np.ndarray]
    has_scores: bool
    class_names: tuple[str, ...]
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.image_ids)


def _settings(cls, section: ml_collections.ConfigDict, **extra):
    """A frozen settings dataclass from the same-named fields of `section` (cast to the field
    default's type, sequences to tuples) and `extra`."""
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in extra or field.name not in section:
            continue
        default, value = field.default, section[field.name]
        if isinstance(default, tuple):
            kind = type(default[0]) if default else (lambda x: x)
            values[field.name] = tuple(kind(v) for v in value)
        else:
            values[field.name] = type(default)(value)
    return cls(**values, **extra)


def scene_settings(c: ml_collections.ConfigDict) -> scenes.SceneSettings:
    """The scenes of `data.scenes`, objects from `data.mnist`."""
    m = c.mnist
    return _settings(
        scenes.SceneSettings, c.scenes, mnist_source=m.source, mnist_folder=m.folder,
        mnist_tfds_name=m.tfds_name, mnist_data_dir=m.tfds_data_dir,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ProposalSpec:
    """What shapes the proposals of the records (`data.proposals`, the fields its method uses)."""

    method: str
    mat_file: str = ""  # 'mat'
    mat_order: str = ""  # 'mat'
    search: proposal_search.SearchSettings | None = None  # 'selective_search', 'grid'
    min_size: float = 0.0  # cleaning, all methods but 'none'
    top_k: int = 0


@dataclasses.dataclass(frozen=True)
class RecordsSpec:
    """Everything that shapes the records of a split: the in-process cache key of `load_records`.

    Fields a source does not read keep their defaults, so changing them reuses the records.
    """

    source: str
    cache_dir: str
    strict: bool
    verify_images: bool
    max_gt_boxes: int
    difficult_policy: str
    proposals: ProposalSpec
    voc_root: str = ""  # 'voc_folder'
    tfds_name: str = ""  # 'tfds'
    tfds_data_dir: str = ""
    scenes: scenes.SceneSettings | None = None  # 'scenes'
    folder: folder.FolderSpec | None = None  # 'folder'
    # How fast, not what: left out of the key.
    num_workers: int = dataclasses.field(default=0, compare=False)


def proposal_spec(p: ml_collections.ConfigDict) -> ProposalSpec:
    """The `ProposalSpec` of `data.proposals`."""
    if p.method == "none":
        return ProposalSpec("none")
    clean = {"min_size": float(p.min_size), "top_k": int(p.top_k)}
    if p.method == "mat":
        return ProposalSpec("mat", mat_file=p.mat_file, mat_order=p.mat_order, **clean)
    return ProposalSpec(p.method, search=_settings(proposal_search.SearchSettings, p), **clean)


def folder_spec(c: ml_collections.ConfigDict) -> folder.FolderSpec:
    """The `FolderSpec` of `data.folder`; its classes come from the training split's file."""
    f = c.folder
    classes = tuple(str(n) for n in f.classes)
    return folder.FolderSpec(f.images, f.labels, classes, c.train_split)


def records_spec(c: ml_collections.ConfigDict) -> RecordsSpec:
    """The `RecordsSpec` of a detection data config (`configs/common.py:detection_data`)."""
    source = {
        "voc_folder": {"voc_root": c.voc_root},
        "tfds": {"tfds_name": c.tfds_name, "tfds_data_dir": c.tfds_data_dir},
        "scenes": {"scenes": scene_settings(c)},
        "folder": {"folder": folder_spec(c)},
    }.get(c.source, {})
    return RecordsSpec(
        source=c.source, cache_dir=c.cache_dir, strict=bool(c.strict),
        verify_images=bool(c.verify_images), max_gt_boxes=int(c.max_gt_boxes),
        difficult_policy=c.difficult_policy, proposals=proposal_spec(c.proposals),
        num_workers=int(c.proposals.num_workers), **source,
    )  # fmt: skip


def _annotations(c: RecordsSpec, split: str, skips: Skips) -> tuple[list[dict], str, str]:
    """(annotation dicts with 'image', image kind, data set tag for the proposal cache)."""
    if c.source == "scenes":
        settings = c.scenes
        data = scenes.load(settings, split, cache_dir=os.path.join(c.cache_dir, "scenes"))
        anns = []
        for n in range(len(data)):
            k = data.counts[n]
            anns.append(
                {
                    "image_id": f"{split}_{n:05d}",
                    "height": settings.canvas_size,
                    "width": settings.canvas_size,
                    "boxes": data.boxes[n, :k],
                    "classes": data.classes[n, :k],
                    "difficult": np.zeros([k], bool),
                    "image": data.images[n],
                }
            )
        return anns, "raw", f"scenes_{settings.key()}"
    if c.source == "folder":
        anns = folder.load(c.folder, split, on_bad=skips, verify=bool(c.verify_images))
        key = hashlib.sha1(os.path.abspath(c.folder.labels_file(split)).encode()).hexdigest()[:8]
        return anns, "path", f"folder_{key}"
    if c.source == "voc_folder":
        anns = voc.load_folder(c.voc_root, split, on_bad=skips, verify=bool(c.verify_images))
        root_key = hashlib.sha1(os.path.abspath(c.voc_root).encode()).hexdigest()[:8]
        return anns, "path", f"voc2007_folder_{root_key}"
    anns = voc.load_tfds(
        split,
        data_dir=c.tfds_data_dir or None,
        name=c.tfds_name,
        on_bad=skips,
        verify=bool(c.verify_images),
    )
    return anns, "bytes", "tfds_" + c.tfds_name.replace("/", "")


def _clean_gt(ann: dict, skips: Skips) -> dict:
    """Clips true boxes to the image; drops (counted) those empty after clipping or with x2 < x1."""
    boxes = clip_boxes(ann["boxes"], ann["height"], ann["width"])
    keep = proposals.valid_box_mask(boxes)
    if not np.all(keep):
        for box in np.asarray(ann["boxes"])[~keep]:
            skips(
                ann["image_id"],
                f"true box {box.tolist()} is empty or outside the "
                f"{ann['width']}x{ann['height']} image; dropped",
            )
    return {
        **ann,
        "boxes": boxes[keep],
        "classes": ann["classes"][keep],
        "difficult": ann["difficult"][keep],
    }


def _raw_proposals(
    c: RecordsSpec, split: str, anns: list[dict], tag: str, skips: Skips
) -> list[tuple[np.ndarray, np.ndarray | None] | None]:
    """Per image: (boxes [P, 4], scores [P] or None), or None where the image has none."""
    p = c.proposals
    ids = [a["image_id"] for a in anns]
    if p.method == "none":
        return [(np.zeros([0, 4], np.float32), None) for _ in anns]
    if p.method == "mat":
        path = p.mat_file.format(split=split)
        mat = proposal_mat.read_mat(path)
        sizes = {a["image_id"]: (a["height"], a["width"]) for a in anns}
        joined, _ = proposal_mat.join_mat(mat, sizes, p.mat_order)
        missing = [i for i in ids if i not in joined]
        if 2 * len(missing) > len(ids):  # a few gaps are skips; mostly gaps is another image list
            raise DataError(
                f"{path}: {len(missing)} of the {len(ids)} images of {c.source}/{split} have no "
                f"proposals in it (e.g. {missing[:3]}): it lists other images; set "
                f"data.proposals.mat_file to the file of this data set and split."
            )
        out = []
        for image_id in ids:
            if image_id not in joined:
                skips(path, f"image id {image_id!r} has no proposals in this file; image skipped")
            out.append(joined.get(image_id))
        return out
    boxes = proposal_search.compute_cached(
        [a["image"] for a in anns],
        ids,
        p.search,
        cache_dir=os.path.join(c.cache_dir, "proposals"),
        tag=tag,
        split=split,
        num_workers=c.num_workers,
    )
    return [(b, None) for b in boxes]


@functools.lru_cache(maxsize=8)
def _load_records_cached(c: RecordsSpec, split: str) -> Records:
    skips = Skips(c.strict, f"{c.source}/{split}")
    anns, kind, tag = _annotations(c, split, skips)
    anns = [_clean_gt(a, skips) for a in anns]
    raw = _raw_proposals(c, split, anns, tag, skips)
    names = _class_names(c)
    kept = {
        k: []
        for k in (
            "ids",
            "images",
            "sizes",
            "labels",
            "weights",
            "boxes",
            "classes",
            "difficult",
            "props",
            "scores",
        )
    }
    has_scores = False
    for ann, entry in zip(anns, raw, strict=True):
        if entry is None:
            continue
        boxes, scores = entry
        if c.proposals.method != "none":
            boxes, scores = proposals.clean_proposals(
                boxes,
                scores,
                ann["height"],
                ann["width"],
                min_size=c.proposals.min_size,
                top_k=c.proposals.top_k,
            )
        if len(boxes) == 0 and c.proposals.method != "none":
            skips(ann["image_id"], "no valid proposal left after cleaning; image skipped")
            continue
        if len(ann["boxes"]) > c.max_gt_boxes:
            skips(
                ann["image_id"],
                f"{len(ann['boxes'])} true boxes, only data.max_gt_boxes={c.max_gt_boxes} kept",
            )
        has_scores = has_scores or scores is not None
        labels, weights = voc.image_labels(
            ann["classes"], ann["difficult"], c.difficult_policy, len(names)
        )
        if "label_classes" in ann:  # image-level labels given without boxes (source 'folder')
            labels[ann["label_classes"]], weights[ann["label_classes"]] = 1.0, 1.0
        kept["ids"].append(ann["image_id"])
        kept["images"].append(ann["image"])
        kept["sizes"].append((ann["height"], ann["width"]))
        kept["labels"].append(labels)
        kept["weights"].append(weights)
        kept["boxes"].append(ann["boxes"].astype(np.float32))
        kept["classes"].append(ann["classes"].astype(np.int32))
        kept["difficult"].append(ann["difficult"].astype(bool))
        kept["props"].append(boxes)
        kept["scores"].append(scores if scores is not None else np.zeros([len(boxes)], np.float32))
    skips.summary()
    if not kept["ids"]:
        raise DataError(f"{c.source}/{split}: no usable image left ({len(skips.items)} skipped).")
    return Records(
        image_ids=kept["ids"],
        images=kept["images"],
        image_kind=kind,
        sizes=np.asarray(kept["sizes"], np.int32).reshape(-1, 2),
        labels=np.stack(kept["labels"]),
        label_weights=np.stack(kept["weights"]),
        gt_boxes=kept["boxes"],
        gt_classes=kept["classes"],
        gt_difficult=kept["difficult"],
        proposals=kept["props"],
        proposal_scores=kept["scores"],
        has_scores=has_scores,
        class_names=names,
        skipped=list(skips.items),
    )


def load_records(config_data: ml_collections.ConfigDict, split: str) -> Records:
    """The cleaned records of `split` (built once per process for a given config and split)."""
    check_config(config_data)
    return _load_records_cached(records_spec(config_data), split)


def num_examples(config_data: ml_collections.ConfigDict, split: str) -> int:
    """Number of usable images of `split` (after skips)."""
    return len(load_records(config_data, split))
