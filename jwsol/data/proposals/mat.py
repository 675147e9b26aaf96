"""Proposals from `.mat` files as shipped with Fast R-CNN (`selective_search_data/
voc_2007_<split>.mat`): `images` (cell of ids) and `boxes` (cell of `[P, 4]` arrays, `(y1, x1,
y2, x2)` 1-based). The course variant adds `boxScores` (cell of `[P, 1]`). Read with `read_mat`,
joined to image ids with `join_mat`, which checks the coordinate order against the image sizes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from jwsol.errors import DataError

# Fraction of boxes that may fall outside their image before a `.mat` file is judged to use
# another coordinate order (a few proposals touch the border and round past it).
_MAX_OUTSIDE_FRACTION = 0.01
# Beyond this fraction outside in the best order, the file belongs to other images.
_MAX_FOREIGN_FRACTION = 0.2
# Tolerance (pixels) for "outside the image" in the order check.
_OUTSIDE_TOLERANCE = 1.0

MAT_ORDERS = ("yxyx", "xyxy", "auto")


@dataclasses.dataclass
class MatProposals:
    """The raw content of a proposal `.mat` file.

    ids: image ids, in file order. boxes: per image float32 [P, 4] exactly as stored (1-based,
    order unknown until checked). scores: per image float32 [P], or None when the file has no
    `boxScores`.
    """

    path: str
    ids: list[str]
    boxes: list[np.ndarray]
    scores: list[np.ndarray] | None


def _cell_list(value: np.ndarray) -> list:
    """A MATLAB cell array (any of [1, N], [N, 1], [N]) as a flat Python list."""
    value = np.asarray(value)
    if value.dtype != object:
        raise ValueError(f"expected a cell array, got a {value.dtype} array of shape {value.shape}")
    return list(value.reshape(-1))


def _as_id(value) -> str:
    """An image id from a cell element (char array, nested cell or number)."""
    value = np.asarray(value)
    if value.dtype == object:
        return _as_id(value.reshape(-1)[0])
    if value.dtype.kind in "US":
        return "".join(str(v) for v in value.reshape(-1)).strip()
    if value.size == 1:  # numeric ids, e.g. 5 for '000005' (zero padding is the caller's job)
        return str(int(value.reshape(-1)[0]))
    raise ValueError(f"cannot read an image id from {value!r}")


def _image_ids(value: np.ndarray) -> list[str]:
    value = np.asarray(value)
    if value.dtype == object:
        return [_as_id(v) for v in value.reshape(-1)]
    if value.dtype.kind in "US":  # a char matrix, one id per row (or a 1-D array of strings)
        if (
            value.ndim == 2
            and value.dtype.itemsize // np.dtype(value.dtype.char + "1").itemsize == 1
        ):
            return ["".join(row).strip() for row in value]
        return [str(v).strip() for v in value.reshape(-1)]
    return [_as_id(v) for v in value.reshape(-1)]


def read_mat(path: str) -> MatProposals:
    """Reads a Fast R-CNN style proposal file with scipy (`images`, `boxes`, opt. `boxScores`)."""
    import scipy.io

    if not os.path.exists(path):
        raise DataError(
            f"{path}: proposal file not found. Get the Fast R-CNN selective search data "
            f"(selective_search_data/voc_2007_<split>.mat) or set data.proposals.method="
            f"'selective_search' to compute proposals."
        )
    try:
        content = scipy.io.loadmat(path)
    except NotImplementedError as e:  # scipy cannot read MATLAB v7.3 (HDF5) files
        raise DataError(
            f"{path}: MATLAB v7.3 (HDF5) files are not readable with scipy; re-save it in MATLAB "
            f"with save(..., '-v7') ({e})."
        ) from e
    except Exception as e:  # scipy raises ValueError/TypeError/OSError on corrupt files
        raise DataError(f"{path}: not a readable .mat file ({type(e).__name__}: {e}).") from e
    missing = [key for key in ("images", "boxes") if key not in content]
    if missing:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"{path}: missing variable(s) {missing}; found {found}.")
    try:
        ids = _image_ids(content["images"])
        raw_boxes = _cell_list(content["boxes"])
        raw_scores = _cell_list(content["boxScores"]) if "boxScores" in content else None
    except ValueError as e:
        raise DataError(f"{path}: malformed `images`/`boxes`/`boxScores` ({e}).") from e
    if len(raw_boxes) != len(ids) or (raw_scores is not None and len(raw_scores) != len(ids)):
        raise DataError(
            f"{path}: {len(ids)} image ids but {len(raw_boxes)} box arrays"
            + (f" and {len(raw_scores)} score arrays" if raw_scores is not None else "")
            + "; the file is inconsistent."
        )
    boxes, scores = [], [] if raw_scores is not None else None
    for i, image_id in enumerate(ids):
        b = np.asarray(raw_boxes[i], np.float32)
        b = np.zeros([0, 4], np.float32) if b.size == 0 else b
        if b.ndim != 2 or b.shape[1] != 4:
            raise DataError(
                f"{path}: boxes of image {image_id!r} have shape {b.shape}, not [P, 4]."
            )
        boxes.append(b)
        if scores is not None:
            s = np.asarray(raw_scores[i], np.float32).reshape(-1)
            if len(s) != len(b):
                raise DataError(
                    f"{path}: image {image_id!r} has {len(b)} boxes but {len(s)} boxScores."
                )
            scores.append(s)
    return MatProposals(path=path, ids=ids, boxes=boxes, scores=scores)


def mat_to_xyxy(raw: np.ndarray, order: str) -> np.ndarray:
    """1-based inclusive boxes in `order` ('yxyx' or 'xyxy') -> edge-convention (x1, y1, x2, y2)."""
    raw = np.asarray(raw, np.float32).reshape(-1, 4)
    xyxy = raw[:, [1, 0, 3, 2]] if order == "yxyx" else raw
    return xyxy - np.array([1.0, 1.0, 0.0, 0.0], np.float32)


def _outside_fraction(boxes: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], order: str):
    outside, total = 0, 0
    for raw, (height, width) in zip(boxes, sizes, strict=True):
        xyxy = mat_to_xyxy(raw, order)
        total += len(xyxy)
        outside += int(
            np.sum(
                (xyxy[:, 2] > width + _OUTSIDE_TOLERANCE)
                | (xyxy[:, 3] > height + _OUTSIDE_TOLERANCE)
                | (xyxy[:, 0] < -_OUTSIDE_TOLERANCE)
                | (xyxy[:, 1] < -_OUTSIDE_TOLERANCE)
            )
        )
    return outside / max(total, 1)


def check_order(mat: MatProposals, sizes: dict[str, tuple[int, int]], order: str) -> str:
    """Checks (or, for 'auto', picks) the coordinate order of `mat` against the image sizes.

    Args:
      mat: the file's content.
      sizes: image id -> (height, width) for the images being joined.
      order: 'yxyx' (Fast R-CNN), 'xyxy', or 'auto'.
    Returns:
      the order to use. Raises DataError naming the file when the asked order puts more than 1%
      of the boxes outside their images and the other order fits clearly better (saying which
      to set), or when more than 20% fall outside (a file for other images); in between it
      logs a warning and the boxes are clipped later.
    NOTE: for square images the two orders cannot be told apart; 'auto' then keeps 'yxyx'.
    """
    if order not in MAT_ORDERS:
        raise DataError(f"data.proposals.mat_order={order!r}; expected one of {MAT_ORDERS}.")
    pairs = [(b, sizes[i]) for i, b in zip(mat.ids, mat.boxes, strict=True) if i in sizes]
    if not pairs:
        return "yxyx" if order == "auto" else order
    boxes, image_sizes = zip(*pairs, strict=True)
    outside = {o: _outside_fraction(boxes, image_sizes, o) for o in ("yxyx", "xyxy")}
    if order == "auto":
        chosen = "xyxy" if outside["xyxy"] < outside["yxyx"] else "yxyx"
        logging.info(
            "%s: coordinate order %s (boxes outside their image: yxyx %.2f%%, xyxy %.2f%%).",
            mat.path,
            chosen,
            100 * outside["yxyx"],
            100 * outside["xyxy"],
        )
        order = chosen
    other = "xyxy" if order == "yxyx" else "yxyx"
    if outside[order] > _MAX_OUTSIDE_FRACTION and (
        outside[other] <= _MAX_OUTSIDE_FRACTION or outside[other] < outside[order] / 4
    ):
        raise DataError(
            f"{mat.path}: with coordinate order {order!r}, {100 * outside[order]:.1f}% of the "
            f"boxes fall outside their image; with {other!r} only {100 * outside[other]:.1f}% "
            f"do: set data.proposals.mat_order={other!r}."
        )
    if outside[order] > _MAX_FOREIGN_FRACTION:
        raise DataError(
            f"{mat.path}: {100 * outside[order]:.1f}% of the boxes fall outside their image in "
            f"order {order!r} ({100 * outside[other]:.1f}% in {other!r}): the file does not "
            "belong to these images (wrong split or data set?)."
        )
    if outside[order] > _MAX_OUTSIDE_FRACTION:
        logging.warning(
            "%s: %.1f%% of the boxes cross their image's border in either order; they are clipped.",
            mat.path,
            100 * outside[order],
        )
    return order


def join_mat(
    mat: MatProposals, sizes: dict[str, tuple[int, int]], order: str
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray | None]], str]:
    """Joins a `.mat` file to images by id.

    Returns ({image id: (boxes float32 [P, 4] edge convention, scores float32 [P] or None)} for
    the ids of `sizes` found in the file, the coordinate order used). Ids absent from the file
    are absent from the dict: the caller counts and logs them.
    """
    order = check_order(mat, sizes, order)
    joined = {}
    for k, image_id in enumerate(mat.ids):
        if image_id in sizes:
            scores = mat.scores[k] if mat.scores is not None else None
            joined[image_id] = (mat_to_xyxy(mat.boxes[k], order), scores)
    return joined, order
