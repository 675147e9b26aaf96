"""Region proposals: read Fast R-CNN style `.mat` files, compute selective search, clean.

Everything here is host-side NumPy (no TensorFlow, no JAX), so worker processes stay light.

Box convention used throughout `jwsol.data`: float32 `[N, 4]` as `(x1, y1, x2, y2)` in
continuous pixel-edge coordinates of the original image: a box covering the 0-based pixel
columns `a..b` (inclusive) has `x1 = a, x2 = b + 1`, so its width is `x2 - x1` and resizing
the image by `s` maps the box to `s * box` exactly (for half-pixel-centre resizing, which is
what `tf.image.resize` and `cv2.resize` do). 1-based inclusive files (VOC XML, the `.mat`
proposal files) convert as `x1 - 1, y1 - 1, x2, y2`.

Proposal sources:
- `.mat` files as shipped with Fast R-CNN (`selective_search_data/voc_2007_<split>.mat`):
  `images` (cell of ids) and `boxes` (cell of `[P, 4]` arrays, `(y1, x1, y2, x2)` 1-based).
  The course variant adds `boxScores` (cell of `[P, 1]`). Read with `read_mat`, joined to
  image ids with `join_mat`, which checks the coordinate order against the image sizes.
- OpenCV's selective search (`cv2.ximgproc`, opencv-contrib), computed in parallel worker
  processes and cached on disk (`compute_cached`).
- A dense multi-scale box grid (`grid_boxes`), the documented alternative for small synthetic
  images where selective search has low recall (see docs/data.md for the measured numbers).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import tempfile
from collections.abc import Sequence

import numpy as np
from absl import logging

from jwsol.errors import DataError
from jwsol.ops.boxes_np import clip_boxes

# Fraction of boxes that may fall outside their image before a `.mat` file is judged to use
# another coordinate order (a few proposals touch the border and round past it).
_MAX_OUTSIDE_FRACTION = 0.01
# Beyond this fraction outside in the best order, the file belongs to other images.
_MAX_FOREIGN_FRACTION = 0.2
# Tolerance (pixels) for "outside the image" in the order check.
_OUTSIDE_TOLERANCE = 1.0

MAT_ORDERS = ("yxyx", "xyxy", "auto")


# ----------------------------------------------------------------------------------------------
# Box utilities (NumPy).
# ----------------------------------------------------------------------------------------------


def valid_box_mask(boxes: np.ndarray, min_size: float = 0.0) -> np.ndarray:
    """bool [N]: finite boxes whose width and height are > 0 and >= `min_size`."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    finite = np.all(np.isfinite(boxes), axis=1)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    with np.errstate(invalid="ignore"):
        return finite & (widths > 0) & (heights > 0) & (widths >= min_size) & (heights >= min_size)


def unique_boxes(boxes: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the first occurrence of each distinct box in `boxes [N, 4]`."""
    boxes = np.ascontiguousarray(np.asarray(boxes, np.float32).reshape(-1, 4))
    if len(boxes) == 0:
        return np.zeros([0], np.int64)
    _, first = np.unique(boxes, axis=0, return_index=True)
    return np.sort(first)


def clean_proposals(
    boxes: np.ndarray,
    scores: np.ndarray | None,
    height: float,
    width: float,
    *,
    min_size: float,
    top_k: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Clips to the image, drops boxes under `min_size` or empty, drops duplicates, ranks.

    Args:
      boxes: float [P, 4] (x1, y1, x2, y2) original-image pixels (edge convention).
      scores: float [P] or None.
      height, width: the original image size.
      min_size: smallest width and height kept, in original pixels.
      top_k: when scores exist, keep the `top_k` best (0 keeps all). Without scores the order
        is the source's (selective search's own ranking) and nothing is cut here.
    Returns:
      boxes float32 [P', 4] and scores float32 [P'] (None when the input had none); with scores
      the boxes are sorted by descending score (stable, so ties keep the source order).
    """
    boxes = clip_boxes(boxes, height, width)
    keep = valid_box_mask(boxes, min_size)
    boxes = boxes[keep]
    if scores is not None:
        scores = np.asarray(scores, np.float32).reshape(-1)[keep]
    first = unique_boxes(boxes)
    boxes = boxes[first]
    if scores is None:
        return boxes, None
    scores = scores[first]
    order = np.argsort(-scores, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    return boxes[order], scores[order]


# ----------------------------------------------------------------------------------------------
# `.mat` files.
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Computed proposals: selective search and the box grid.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How to compute proposals where no file exists (part of the cache key).

    method: 'selective_search' (OpenCV) or 'grid' (dense multi-scale boxes).
    mode: selective search strategy, 'fast' or 'quality'.
    resize: run selective search on the image scaled so its longer side is `resize` pixels
      (0 = native size); boxes are scaled back. Upscaling small canvases raises recall.
    max_boxes: keep the first `max_boxes` in selective search's ranking (0 = all).
    grid_sizes, grid_ratios, grid_stride: for 'grid': box sides (pixels, of the original
      image), aspect ratios w/h, and the step as a fraction of the box side.
    """

    method: str = "selective_search"
    mode: str = "fast"
    resize: int = 0
    max_boxes: int = 0
    grid_sizes: tuple[int, ...] = (24, 32, 48, 64)
    grid_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    grid_stride: float = 0.25

    def key(self) -> str:
        return hashlib.sha1(
            json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        ).hexdigest()[:12]


def _decode(item) -> np.ndarray:
    """RGB uint8 [H, W, 3] from a path, encoded bytes, or an array ([H, W] or [H, W, 3])."""
    import cv2

    if isinstance(item, np.ndarray):
        image = item
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        return np.ascontiguousarray(image.astype(np.uint8))
    if isinstance(item, str):
        data = np.fromfile(item, np.uint8)
    else:
        data = np.frombuffer(item, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"{item if isinstance(item, str) else 'image bytes'}: cannot decode image.")
    return bgr[:, :, ::-1]


def _seed_c_rand(seed: int) -> bool:
    """Seeds the C library's `rand()`; False where ctypes cannot reach it."""
    import ctypes

    try:
        ctypes.CDLL(None).srand(ctypes.c_uint(seed))
    except (OSError, AttributeError, TypeError):
        return False
    return True


def selective_search(image: np.ndarray, *, mode: str = "fast", resize: int = 0) -> np.ndarray:
    """OpenCV selective search on one RGB uint8 image [H, W, 3] -> float32 [P, 4] (x1,y1,x2,y2).

    Boxes are in the input image's pixels (edge convention), in OpenCV's ranking order.
    NOTE: OpenCV ranks boxes by `level * std::rand()` (the paper's pseudo-random ranking) and
    `cv2.setRNGSeed` does not reach that generator; we seed C's `rand()` with 0 before each
    image so that the order, not only the set, is a function of the image.
    """
    import cv2

    height, width = image.shape[:2]
    scale = 1.0
    work = image
    if resize > 0 and max(height, width) != resize:
        scale = resize / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        work = cv2.resize(image, size, interpolation=interpolation)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(work[:, :, ::-1]))  # OpenCV wants BGR
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    elif mode == "quality":
        search.switchToSelectiveSearchQuality()
    else:
        raise DataError(f"data.proposals.mode={mode!r}; expected 'fast' or 'quality'.")
    _seed_c_rand(0)
    rects = np.asarray(search.process(), np.float32).reshape(-1, 4)  # (x, y, w, h)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    if scale != 1.0:
        sx, sy = work.shape[1] / width, work.shape[0] / height
        boxes = boxes / np.array([sx, sy, sx, sy], np.float32)
    return clip_boxes(boxes, height, width)


def grid_boxes(
    height: int, width: int, sizes: Sequence[int], ratios: Sequence[float], stride: float
) -> np.ndarray:
    """Dense multi-scale boxes: for each side `s` and ratio `r` (w/h), boxes of area s*s slid
    with step `stride * side` over the image, last row/column flush with the border.

    Returns float32 [P, 4] (x1, y1, x2, y2), inside the image, without duplicates.
    """
    out = []
    for size in sizes:
        for ratio in ratios:
            box_w = min(float(width), size * np.sqrt(ratio))
            box_h = min(float(height), size / np.sqrt(ratio))
            xs = _starts(width, box_w, stride)
            ys = _starts(height, box_h, stride)
            x1, y1 = np.meshgrid(xs, ys, indexing="xy")
            x1, y1 = x1.reshape(-1), y1.reshape(-1)
            out.append(np.stack([x1, y1, x1 + box_w, y1 + box_h], axis=1))
    boxes = np.concatenate(out).astype(np.float32)
    return boxes[unique_boxes(boxes)]


def _starts(extent: float, side: float, stride: float) -> np.ndarray:
    step = max(1.0, stride * side)
    last = extent - side
    starts = np.arange(0.0, last + 1e-6, step)
    if starts[-1] < last - 1e-6:
        starts = np.append(starts, last)
    return starts


def _compute_one(args) -> np.ndarray:
    item, settings = args
    image = _decode(item)
    if settings.method == "grid":
        return grid_boxes(
            image.shape[0],
            image.shape[1],
            settings.grid_sizes,
            settings.grid_ratios,
            settings.grid_stride,
        )
    boxes = selective_search(image, mode=settings.mode, resize=settings.resize)
    return boxes[: settings.max_boxes] if settings.max_boxes > 0 else boxes


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


def compute(
    items: Sequence, settings: SearchSettings, *, num_workers: int = 0, desc: str = "proposals"
) -> list[np.ndarray]:
    """Computes proposals for each item (image path, encoded bytes, or uint8 array).

    Runs `num_workers` processes (0 = one per CPU core) with a progress bar. Returns one float32
    [P, 4] array per item, in order.
    """
    from tqdm import tqdm

    if settings.method not in ("selective_search", "grid"):
        raise DataError(
            f"data.proposals.method={settings.method!r} cannot be computed; expected "
            "'selective_search' or 'grid' (or 'mat' with files)."
        )
    num_workers = num_workers or os.cpu_count() or 1
    jobs = [(item, settings) for item in items]
    if settings.method == "grid" or num_workers == 1 or len(jobs) < 4:
        _init_worker()
        return [_compute_one(job) for job in tqdm(jobs, desc=desc, disable=len(jobs) < 50)]
    # NOTE: 'spawn', not fork: the parent usually has TensorFlow's thread pools running, and
    # forking a multi-threaded process can deadlock the child. Spawned workers re-import the
    # main module, so a calling script needs an `if __name__ == "__main__":` guard; without it
    # the workers die and the pool reports itself broken (instead of hanging, as Pool would).
    context = multiprocessing.get_context("spawn")
    chunksize = max(1, min(32, len(jobs) // (8 * num_workers)))
    try:
        with concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=context, initializer=_init_worker
        ) as pool:
            results = list(
                tqdm(pool.map(_compute_one, jobs, chunksize=chunksize), total=len(jobs), desc=desc)
            )
    except concurrent.futures.process.BrokenProcessPool as e:
        raise RuntimeError(
            f"proposal worker processes died ({e}). If this runs from a script, put its entry "
            'point under `if __name__ == "__main__":` (spawned workers re-import it), or set '
            "data.proposals.num_workers=1."
        ) from e
    return results


def _ids_key(ids: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]


def cache_path(cache_dir: str, tag: str, split: str, settings: SearchSettings, ids: Sequence[str]):
    """The cache file for (data set tag, split, settings, image ids)."""
    name = f"{tag}_{split}_{settings.method}_{settings.key()}_{_ids_key(ids)}.npz"
    return os.path.join(os.path.expanduser(cache_dir), name)


def save_boxes(path: str, ids: Sequence[str], boxes: Sequence[np.ndarray]) -> None:
    """Writes per-image boxes atomically (concatenated with offsets) to an .npz file."""
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in boxes])]).astype(np.int64)
    flat = np.concatenate(
        [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes] or [np.zeros([0, 4], np.float32)]
    )
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.asarray(list(ids), dtype=str), offsets=offsets, boxes=flat)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, path)


def load_boxes(path: str) -> tuple[list[str], list[np.ndarray]]:
    """Reads a file written by `save_boxes`; DataError naming the file if it is unreadable."""
    try:
        with np.load(path) as content:
            ids = [str(i) for i in content["ids"]]
            offsets, flat = content["offsets"], content["boxes"]
    except Exception as e:  # zipfile/pickle/KeyError: the cache is corrupt
        raise DataError(f"{path}: unreadable proposal cache ({e}); delete it to recompute.") from e
    return ids, [flat[offsets[i] : offsets[i + 1]] for i in range(len(ids))]


def compute_cached(
    items: Sequence,
    ids: Sequence[str],
    settings: SearchSettings,
    *,
    cache_dir: str,
    tag: str,
    split: str,
    num_workers: int = 0,
) -> list[np.ndarray]:
    """`compute` with an on-disk cache keyed by (tag, split, settings, ids)."""
    if settings.method == "grid":  # as cheap to recompute as to read
        return compute(items, settings, num_workers=num_workers)
    path = cache_path(cache_dir, tag, split, settings, ids)
    if os.path.exists(path):
        cached_ids, boxes = load_boxes(path)
        if cached_ids == list(ids):
            logging.info("Proposals for %s/%s from cache %s.", tag, split, path)
            return boxes
        logging.warning("%s: ids differ from the data set; recomputing.", path)
    logging.info(
        "Computing %s proposals for %d images of %s/%s.", settings.method, len(ids), tag, split
    )
    boxes = compute(
        items, settings, num_workers=num_workers, desc=f"{settings.method} {tag}/{split}"
    )
    save_boxes(path, ids, boxes)
    logging.info("Proposals cached to %s.", path)
    return boxes
