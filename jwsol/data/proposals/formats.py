"""Proposal files in the formats users bring, read into and written from one `ProposalSet`.

- `.mat`: Fast R-CNN's selective search data (`images`, `boxes` as 1-based inclusive
  `(y1, x1, y2, x2)`, optional `boxScores`; `proposals.mat`).
- `.pkl`: the pickle that pcl.pytorch and wetectron load (Detectron's proposal file): a dict of
  lists `boxes` (float32 [P, 4] `(x1, y1, x2, y2)` 0-based inclusive), `scores` ([P]) and
  `indexes` (image ids; older files call it `ids`), one entry per image.
- `.npz`: ours, `ids`, `offsets`, `boxes` concatenated in the edge convention (`proposals`'s
  docstring), optional `scores` and `sizes` ([N, 2] height, width): `search.save_boxes`.

In memory every box is in the edge convention: 0-based `(x1, y1, x2, y2)` with `x2 = last
column + 1`. Inclusive files convert as `x2 + 1, y2 + 1`.
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np

from jwsol.data.proposals import mat as mat_format
from jwsol.data.proposals import search
from jwsol.errors import DataError
from jwsol.files import write_atomic
from jwsol.ops.boxes_np import clip_boxes

FORMATS = {".mat": "mat", ".pkl": "pkl", ".pickle": "pkl", ".npz": "npz"}
_INCLUSIVE = np.array([0.0, 0.0, 1.0, 1.0], np.float32)  # inclusive corner -> pixel edge


@dataclasses.dataclass
class ProposalSet:
    """Per-image proposals: ids [N], boxes N x float32 [P, 4] (edge convention), scores N x
    float32 [P] or None, sizes {id: (height, width)} of the images where known."""

    ids: list[str]
    boxes: list[np.ndarray]
    scores: list[np.ndarray] | None = None
    sizes: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


def format_of(path: str) -> str:
    """'mat', 'pkl' or 'npz' from the file name; DataError naming the file otherwise."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise DataError(
            f"{path}: unknown proposal file type {ext!r}; use one of {sorted(FORMATS)} "
            "(.mat Fast R-CNN, .pkl pcl.pytorch/wetectron, .npz jwsol)."
        )
    return FORMATS[ext]


def check_boxes(path: str, proposals: ProposalSet) -> None:
    """DataError naming the file, the image and the first bad box: not [P, 4], not finite,
    x1 > x2 or y1 > y2 (order), empty, or outside its image where the image size is known."""
    for k, image_id in enumerate(proposals.ids):
        boxes = proposals.boxes[k]
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DataError(
                f"{path}: image {image_id!r}: boxes of shape {boxes.shape}, not [P, 4]."
            )
        if proposals.scores is not None and len(proposals.scores[k]) != len(boxes):
            raise DataError(
                f"{path}: image {image_id!r}: {len(boxes)} boxes but "
                f"{len(proposals.scores[k])} scores."
            )
        size = proposals.sizes.get(image_id)
        problem = _first_bad_box(boxes, size)
        if problem is not None:
            index, why = problem
            box = ", ".join(f"{v:g}" for v in boxes[index])
            raise DataError(
                f"{path}: image {image_id!r}, box {index} (x1, y1, x2, y2 = {box}, pixel edges): "
                f"{why}; fix the file, or convert it with --clip to clip and drop such boxes."
            )


def _first_bad_box(boxes: np.ndarray, size: tuple[int, int] | None):
    """(index, reason) of the first bad box in `boxes [P, 4]`, or None."""
    x1, y1, x2, y2 = boxes.T
    rules = [
        (~np.all(np.isfinite(boxes), axis=1), "not finite"),
        ((x1 > x2) | (y1 > y2), "corners out of order (x1 > x2 or y1 > y2: a (y, x) file?)"),
        ((x1 == x2) | (y1 == y2), "empty (zero width or height)"),
    ]
    if size is not None:
        height, width = size
        outside = (x1 < 0) | (y1 < 0) | (x2 > width) | (y2 > height)
        rules.append((outside, f"outside its {width} x {height} image"))
    bad = np.zeros(len(boxes), bool)
    first_reason = {}
    for mask, reason in rules:
        for index in np.flatnonzero(mask & ~bad)[:1]:
            first_reason[int(index)] = reason
        bad |= mask
    if not bad.any():
        return None
    index = int(np.flatnonzero(bad)[0])
    return index, first_reason[index]


def clip(proposals: ProposalSet) -> ProposalSet:
    """Boxes clipped to their images (where the size is known); empty and non-finite dropped."""
    boxes, scores = [], [] if proposals.scores is not None else None
    for k, image_id in enumerate(proposals.ids):
        b = proposals.boxes[k]
        if image_id in proposals.sizes:
            b = clip_boxes(b, *proposals.sizes[image_id])
        with np.errstate(invalid="ignore"):
            keep = np.all(np.isfinite(b), axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        boxes.append(b[keep])
        if scores is not None:
            scores.append(proposals.scores[k][keep])
    return dataclasses.replace(proposals, boxes=boxes, scores=scores)


# Reading ----------------------------------------------------------------------------------------


def read(
    path: str, *, mat_order: str = "yxyx", sizes: dict | None = None, check: bool = True
) -> ProposalSet:
    """Reads a proposal file of any format (by extension) and checks its boxes (if `check`).

    mat_order: the `.mat` coordinate order ('yxyx' as Fast R-CNN, 'xyxy', or 'auto' with sizes).
    sizes: {id: (height, width)} of the images, for the inside-the-image check (a `.npz` file
      carries its own).
    """
    kind = format_of(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: proposal file not found.")
    proposals = {"mat": _read_mat, "pkl": _read_pkl, "npz": _read_npz}[kind](
        path, mat_order, dict(sizes or {})
    )
    if check:
        check_boxes(path, proposals)
    return proposals


def _read_mat(path: str, order: str, sizes: dict) -> ProposalSet:
    content = mat_format.read_mat(path)
    order = mat_format.check_order(content, sizes, order)
    boxes = [mat_format.mat_to_xyxy(b, order) for b in content.boxes]
    return ProposalSet(content.ids, boxes, content.scores, sizes)


def _read_pkl(path: str, order: str, sizes: dict) -> ProposalSet:
    del order
    try:
        with open(path, "rb") as f:
            content = pickle.load(f, encoding="latin1")  # Python 2 pickles of the Detectron era
    except Exception as e:  # unpickling raises anything on a corrupt file
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e}).") from e
    if not isinstance(content, dict):
        raise DataError(f"{path}: holds a {type(content).__name__}, not a dict of proposals.")
    id_key = "indexes" if "indexes" in content else "ids"
    missing = [k for k in ("boxes", id_key) if k not in content]
    if missing:
        raise DataError(
            f"{path}: missing key(s) {missing}; a pcl.pytorch/wetectron file has 'boxes', "
            f"'scores' and 'indexes' (found {sorted(content)})."
        )
    ids = [_id_text(i) for i in content[id_key]]
    raw, raw_scores = list(content["boxes"]), content.get("scores")
    if len(raw) != len(ids) or (raw_scores is not None and len(raw_scores) != len(ids)):
        raise DataError(f"{path}: {len(ids)} ids but {len(raw)} box arrays; inconsistent file.")
    boxes = [_box_array(path, i, b) + _INCLUSIVE for i, b in zip(ids, raw, strict=True)]
    scores = None
    if raw_scores is not None:
        scores = [np.asarray(s, np.float32).reshape(-1) for s in raw_scores]
    return ProposalSet(ids, boxes, scores, sizes)


def _read_npz(path: str, order: str, sizes: dict) -> ProposalSet:
    del order
    content = search.load_proposal_npz(path)
    return ProposalSet(
        content["ids"], content["boxes"], content["scores"], {**sizes, **content["sizes"]}
    )


def _id_text(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value.item() if isinstance(value, np.generic) else value)


def _box_array(path: str, image_id: str, value) -> np.ndarray:
    boxes = np.asarray(value, np.float32)
    if boxes.size == 0:
        return np.zeros([0, 4], np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{path}: image {image_id!r}: boxes of shape {boxes.shape}, not [P, 4].")
    return boxes


# Writing ----------------------------------------------------------------------------------------


def write(path: str, proposals: ProposalSet, *, int_ids: bool = False) -> None:
    """Writes `proposals` (checked first) in the format of `path`'s extension, atomically.

    int_ids: write `.pkl` ids as integers ('000005' -> 5), as Detectron-style COCO json
      annotations number their images; otherwise ids stay strings.
    """
    kind = format_of(path)
    check_boxes(path, proposals)
    if kind == "npz":
        search.save_boxes(
            path, proposals.ids, proposals.boxes, proposals.scores, proposals.sizes or None
        )
        return
    if kind == "mat":
        payload = _mat_payload(proposals)
        write_atomic(path, lambda f: _save_mat(f, payload))
        return
    payload = _pkl_payload(path, proposals, int_ids)
    write_atomic(path, lambda f: pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL))


def _cell(arrays) -> np.ndarray:
    """A MATLAB cell array [N, 1] of `arrays` (built element-wise so numpy cannot stack them)."""
    arrays = list(arrays)
    cell = np.empty((len(arrays), 1), dtype=object)
    for k, value in enumerate(arrays):
        cell[k, 0] = value
    return cell


def _mat_payload(proposals: ProposalSet) -> dict:
    # Fast R-CNN's order and 1-based inclusive corners: (y1 + 1, x1 + 1, y2, x2).
    boxes = [(b[:, [1, 0, 3, 2]] + np.array([1, 1, 0, 0], np.float32)) for b in proposals.boxes]
    payload = {"images": _cell(proposals.ids), "boxes": _cell(boxes)}
    if proposals.scores is not None:
        payload["boxScores"] = _cell(s.reshape(-1, 1) for s in proposals.scores)
    return payload


def _save_mat(f, payload: dict) -> None:
    import scipy.io

    scipy.io.savemat(f, payload, do_compression=True)


def _pkl_payload(path: str, proposals: ProposalSet, int_ids: bool) -> dict:
    ids: list = list(proposals.ids)
    if int_ids:
        not_numbers = [i for i in ids if not i.isdigit()]
        if not_numbers:
            raise DataError(
                f"{path}: --int-ids needs numeric image ids; {not_numbers[0]!r} is not one."
            )
        ids = [int(i) for i in ids]
    scores = proposals.scores
    if scores is None:  # the loaders index 'scores' (to sort) but never use the values
        scores = [np.zeros(len(b), np.float32) for b in proposals.boxes]
    return {
        "boxes": [np.asarray(b, np.float32) - _INCLUSIVE for b in proposals.boxes],
        "scores": [np.asarray(s, np.float32) for s in scores],
        "indexes": ids,
    }
