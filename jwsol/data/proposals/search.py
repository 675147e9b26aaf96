"""Computed proposals: OpenCV's selective search (`cv2.ximgproc`, opencv-contrib) in parallel
worker processes, and a dense multi-scale box grid (`grid_boxes`, the documented alternative for
small synthetic images where selective search has low recall: docs/data.md), cached on disk
(`compute_cached`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from jwsol.data.proposals import unique_boxes
from jwsol.errors import DataError
from jwsol.files import write_atomic
from jwsol.ops.boxes_np import clip_boxes


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How to compute proposals where no file exists (part of the cache key).

    method: 'selective_search' (OpenCV) or 'grid' (dense multi-scale boxes).
    mode: selective search strategy, 'fast' or 'quality'.
    resize: run selective search on the image scaled so its longer side is `resize` pixels
      (0 = native size); boxes are scaled back. Upscaling small canvases raises recall.
    also_resize: run selective search again at each of these longer sides and append the boxes
      the earlier runs did not find (in that order, before max_boxes): small objects that one
      scale merges with a neighbour stand apart at another.
    max_boxes: keep the first `max_boxes` in selective search's ranking (0 = all).
    grid_sizes, grid_ratios, grid_stride: for 'grid': box sides (pixels, of the original
      image), aspect ratios w/h, and the step as a fraction of the box side.
    """

    method: str = "selective_search"
    mode: str = "fast"
    resize: int = 0
    also_resize: tuple[int, ...] = ()
    max_boxes: int = 0
    grid_sizes: tuple[int, ...] = (24, 32, 48, 64)
    grid_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    grid_stride: float = 0.25

    def key(self) -> str:
        fields = dataclasses.asdict(self)
        if not self.also_resize:  # added later: caches made before it keep their key
            del fields["also_resize"]
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


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


def propose(image: np.ndarray, settings: SearchSettings) -> np.ndarray:
    """The proposals of `settings` for one RGB uint8 image [H, W, 3]: float32 [P, 4]."""
    if settings.method == "grid":
        return grid_boxes(
            image.shape[0],
            image.shape[1],
            settings.grid_sizes,
            settings.grid_ratios,
            settings.grid_stride,
        )
    boxes = selective_search(image, mode=settings.mode, resize=settings.resize)
    for size in settings.also_resize:
        more = selective_search(image, mode=settings.mode, resize=int(size))
        boxes = np.concatenate([boxes, more])
        boxes = boxes[unique_boxes(boxes)]
    return boxes[: settings.max_boxes] if settings.max_boxes > 0 else boxes


def _compute_one(args) -> np.ndarray:
    item, settings = args
    return propose(_decode(item), settings)


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


def save_boxes(
    path: str,
    ids: Sequence[str],
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray] | None = None,
    sizes: dict[str, tuple[int, int]] | None = None,
    settings_key: str = "",
) -> None:
    """Writes per-image boxes atomically (concatenated with offsets) to an .npz file, with their
    scores, image sizes {id: (height, width)} (every id's) and the settings' key when given."""
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in boxes])]).astype(np.int64)
    flat = np.concatenate(
        [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes] or [np.zeros([0, 4], np.float32)]
    )
    arrays = {"ids": np.asarray(list(ids), dtype=str), "offsets": offsets, "boxes": flat}
    if scores is not None:
        arrays["scores"] = np.concatenate(
            [np.asarray(s, np.float32).reshape(-1) for s in scores] or [np.zeros([0], np.float32)]
        )
    if sizes:
        arrays["sizes"] = np.asarray([sizes[i] for i in ids], np.int64).reshape(-1, 2)
    if settings_key:
        arrays["settings"] = np.asarray(settings_key)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def load_proposal_npz(path: str) -> dict:
    """A file written by `save_boxes`: {'ids', 'boxes', 'scores' (None if absent), 'sizes'
    ({} if absent), 'settings' ('' if absent)}; DataError naming the file if unreadable."""
    try:
        with np.load(path) as content:
            ids = [str(i) for i in content["ids"]]
            offsets, flat = content["offsets"], content["boxes"]
            scores, sizes = content.get("scores"), content.get("sizes")
            settings = str(content["settings"]) if "settings" in content else ""
    except Exception as e:  # zipfile/pickle/KeyError: the file is corrupt
        raise DataError(
            f"{path}: unreadable proposal file ({e}); delete it (a cache) or rewrite it."
        ) from e
    if len(offsets) != len(ids) + 1 or offsets[-1] != len(flat):
        raise DataError(f"{path}: offsets do not match its {len(ids)} ids and {len(flat)} boxes.")

    def cut(flat_values: np.ndarray) -> list[np.ndarray]:
        return [flat_values[offsets[i] : offsets[i + 1]] for i in range(len(ids))]

    return {
        "ids": ids,
        "boxes": cut(flat),
        "scores": cut(scores) if scores is not None else None,
        "sizes": {} if sizes is None else {i: tuple(int(v) for v in s) for i, s in zip(ids, sizes)},
        "settings": settings,
    }


def load_boxes(path: str) -> tuple[list[str], list[np.ndarray]]:
    """(ids, boxes) of a file written by `save_boxes`; DataError naming it if unreadable."""
    content = load_proposal_npz(path)
    return content["ids"], content["boxes"]


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
