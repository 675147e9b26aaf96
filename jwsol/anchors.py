"""K-means anchor boxes: cluster box sizes (width, height) with the distance d = 1 - IoU.

The method of YOLOv2 ("YOLO9000", Redmon & Farhadi 2017, "Dimension Clusters"): boxes and
anchors are compared by shape alone, as if aligned at a common corner, so
IoU(box, anchor) = min(w, aw) * min(h, ah) / (w * h + aw * ah - min(w, aw) * min(h, ah)).

- Initialisation: k-means++ (first centre uniform over the boxes, each next centre drawn with
  probability proportional to d^2 to its nearest chosen centre).
- Update: the per-coordinate median of the members (default, "k-medians") or their mean.
- Each run keeps the best anchors seen over its iterations, and several restarts are run: the
  median/mean update does not minimise the sum of 1 - IoU exactly, so an iteration can lose a
  little; keeping the best seen makes every run at least as good as its start.
- Monotone in k: over a range of k, one extra run for k starts from the k - 1 solution plus one
  k-means++ centre; its start already has a mean IoU >= that of k - 1, so mean IoU never drops.
- Scores: `mean_iou` = mean over boxes of the IoU with the nearest anchor; `cost` = the
  within-cluster cost sum over boxes of (1 - IoU with the nearest anchor) = N * (1 - mean_iou).

Command line (writes anchors.json, elbow.png and clusters_k{K}.png into --out):

    python -m jwsol.anchors --source coco --path instances_train.json --k-min 1 --k-max 10 \
        --restarts 5 --seed 0 --out /tmp/anchors [--absolute]

Sources: `coco` (a COCO JSON file, read here), and through `jwsol.data`: `voc_folder` (a
VOCdevkit folder), `tfds` (`voc/2007` from a tfds data_dir), `scenes` (our offline Fashion-MNIST
canvases, as a job config's data section describes them). Sizes are relative to the image
(w / image width, h / image height) unless --absolute asks for pixels. Host-side NumPy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import os
import sys
from collections.abc import Sequence

import numpy as np

from jwsol import errors
from jwsol.errors import DataError, UserError

UPDATES = ("median", "mean")
SOURCES = ("coco", "voc_folder", "tfds", "scenes")
DEFAULT_SPLITS = {"coco": None, "voc_folder": "trainval", "tfds": "trainval", "scenes": "train"}

ELBOW_RULE = (
    "kneedle on the cost curve: k and cost are rescaled to [0, 1] over the range (x = (k - k_min) "
    "/ (k_max - k_min), y = (cost - min cost) / (max cost - min cost)); the chosen k maximises "
    "(1 - x) - y, the height of the chord from the first to the last point above the curve; "
    "ties go to the smaller k; no elbow (null) with fewer than 3 values of k or when no point "
    "lies strictly below the chord."
)


@dataclasses.dataclass(frozen=True)
class KMeansResult:
    """The best of several k-means runs for one k.

    anchors: float64 [K, 2] (width, height), sorted by area (then width).
    assignment: int64 [N], index of each box's nearest anchor (highest IoU, first on ties).
    cluster_sizes: int64 [K], boxes per anchor.
    mean_iou: mean over boxes of the IoU with the nearest anchor.
    cost: sum over boxes of (1 - IoU with the nearest anchor).
    iterations: iterations of the winning run; converged: its assignment stopped changing.
    run: which run won: 0 .. restarts - 1 for k-means++ starts, -1 for the warm start.
    """

    anchors: np.ndarray
    assignment: np.ndarray
    cluster_sizes: np.ndarray
    mean_iou: float
    cost: float
    iterations: int
    converged: bool
    run: int

    @property
    def k(self) -> int:
        return int(self.anchors.shape[0])


# ----------------------------------------------------------------------------- geometry


def iou_wh(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes and anchors aligned at a common corner (shape only).

    wh: [N, 2] (width, height) > 0; anchors: [K, 2] > 0. Returns [N, K].
    """
    w, h = wh[:, None, 0], wh[:, None, 1]  # [N, 1]
    aw, ah = anchors[None, :, 0], anchors[None, :, 1]  # [1, K]
    inter = np.minimum(w, aw)  # [N, K]; in-place below: this runs in every k-means iteration
    inter *= np.minimum(h, ah)
    union = (w * h + aw * ah) - inter
    inter /= union
    return inter


def validate_boxes(wh: np.ndarray, *, name: str = "boxes") -> np.ndarray:
    """Returns `wh` as float64 [N, 2]; a clear `UserError` for empty, non-finite or zero sizes."""
    wh = np.asarray(wh, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise UserError(
            f"{name}: expected an array of (width, height) pairs [N, 2], got shape {wh.shape}."
        )
    if wh.shape[0] == 0:
        raise UserError(f"{name}: no boxes to cluster; check the source, split and filters.")
    bad = ~np.all(np.isfinite(wh) & (wh > 0), axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{name}: {int(bad.sum())} of {wh.shape[0]} boxes have a zero, negative or non-finite "
            f"width or height (first: box {first}, (w, h) = {tuple(wh[first].tolist())}); fix the "
            "annotations or drop them (--drop-degenerate on the command line, or drop_degenerate())."
        )
    return wh


def drop_degenerate(wh: np.ndarray) -> tuple[np.ndarray, int]:
    """Removes boxes whose width or height is zero, negative or non-finite: (kept [M, 2], dropped)."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    keep = np.all(np.isfinite(wh) & (wh > 0), axis=1)
    return wh[keep], int((~keep).sum())


def _check_k(wh: np.ndarray, k: int) -> None:
    if not isinstance(k, numbers.Integral) or k < 1:
        raise UserError(f"k must be a positive integer, got {k!r}.")
    distinct = np.unique(wh, axis=0).shape[0]
    if k > distinct:
        raise UserError(
            f"k = {k} anchors asked for, but the boxes have only {distinct} distinct (width, height) "
            f"pairs ({wh.shape[0]} boxes); use k <= {distinct}."
        )


# ----------------------------------------------------------------------------- k-means


def kmeanspp_init(
    wh: np.ndarray, k: int, rng: np.random.Generator, initial: np.ndarray | None = None
) -> np.ndarray:
    """k-means++ seeding with d = 1 - IoU; `initial` [M, 2] (M < k) are kept as the first centres.

    wh: [N, 2] validated boxes. Returns centres [k, 2], each a box of `wh` (or of `initial`).
    """
    n = wh.shape[0]
    centres = [wh[rng.integers(n)]] if initial is None else list(np.asarray(initial, np.float64))
    # dist: [N], distance of each box to its nearest centre so far.
    dist = 1.0 - iou_wh(wh, np.stack(centres)).max(axis=1)
    while len(centres) < k:
        weights = np.square(np.maximum(dist, 0.0))
        total = weights.sum()
        if not total > 0:
            raise UserError(
                f"cannot seed {k} distinct anchors: every box already matches a chosen centre "
                "(too few distinguishable box sizes); use a smaller k."
            )
        index = rng.choice(n, p=weights / total)
        centres.append(wh[index])
        dist = np.minimum(dist, 1.0 - iou_wh(wh, wh[index][None])[:, 0])
    return np.stack(centres)


def _sorted_label_codes(labels: np.ndarray, k: int) -> np.ndarray:
    # NOTE: small integer codes make numpy's stable argsort a linear-time radix sort.
    return labels.astype(np.uint8 if k <= 255 else np.uint16 if k <= 65535 else np.int64)


def _cluster_medians(values_sorted: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Median within each of k clusters; NaN for empty ones.

    values_sorted: [N] ascending; labels: int [N], the cluster of each entry of values_sorted.
    """
    grouped = values_sorted[np.argsort(_sorted_label_codes(labels, k), kind="stable")]
    counts = np.bincount(labels, minlength=k)  # grouped: by cluster, ascending within each
    starts = np.cumsum(counts) - counts
    full = counts > 0
    lo = starts[full] + (counts[full] - 1) // 2  # the two middle members (equal when count is odd)
    hi = starts[full] + counts[full] // 2
    medians = np.full(k, np.nan)
    medians[full] = 0.5 * (grouped[lo] + grouped[hi])
    return medians


def update_centres(
    wh: np.ndarray, labels: np.ndarray, k: int, update: str = "median", *, orders=None
) -> np.ndarray:
    """One update step: per-coordinate median or mean of each cluster's members.

    wh: [N, 2]; labels: int [N] in [0, k); orders: optional (argsort of wh[:, 0], argsort of
    wh[:, 1]), precomputed once per data set by `lloyd`. Returns [k, 2]; empty clusters NaN.
    """
    if update == "median":
        if orders is None:
            orders = (np.argsort(wh[:, 0], kind="stable"), np.argsort(wh[:, 1], kind="stable"))
        return np.stack(
            [_cluster_medians(wh[order, i], labels[order], k) for i, order in enumerate(orders)],
            axis=1,
        )
    if update == "mean":
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.stack([np.bincount(labels, weights=wh[:, i], minlength=k) for i in range(2)], 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts[:, None]
    raise UserError(f"unknown update {update!r}; expected one of {UPDATES}.")


def lloyd(
    wh: np.ndarray, anchors: np.ndarray, *, update: str = "median", max_iter: int = 300
) -> tuple[np.ndarray, float, int, bool]:
    """Lloyd iterations from `anchors` [K, 2]: assign each box to its highest-IoU anchor, update.

    An empty cluster is re-seeded with the box worst served by the current anchors. Stops when
    the assignment no longer changes or after `max_iter` updates.
    Returns (best anchors seen [K, 2], their mean IoU, iterations, converged).
    """
    k = anchors.shape[0]
    orders = (np.argsort(wh[:, 0], kind="stable"), np.argsort(wh[:, 1], kind="stable"))
    best_anchors, best_iou = anchors, -np.inf
    previous = None
    iterations, converged = 0, False
    while True:
        iou = iou_wh(wh, anchors)  # [N, K]
        labels = iou.argmax(axis=1)
        best_per_box = iou[np.arange(wh.shape[0]), labels]
        mean_iou = float(best_per_box.mean())
        if mean_iou > best_iou:
            best_anchors, best_iou = anchors, mean_iou
        if previous is not None and np.array_equal(labels, previous):
            converged = True
            break
        if iterations == max_iter:
            break
        previous = labels
        anchors = update_centres(wh, labels, k, update, orders=orders)
        empty = np.flatnonzero(np.isnan(anchors[:, 0]))
        if empty.size:
            worst = np.argsort(best_per_box, kind="stable")[: empty.size]
            anchors[empty] = wh[worst]
        iterations += 1
    return best_anchors, best_iou, iterations, converged


def _score(
    wh: np.ndarray, anchors: np.ndarray, run: int, iterations: int, converged: bool
) -> KMeansResult:
    # NOTE: anchors are sorted by area so that results are comparable across runs and seeds.
    anchors = anchors[np.lexsort((anchors[:, 0], anchors[:, 0] * anchors[:, 1]))]
    iou = iou_wh(wh, anchors)
    assignment = iou.argmax(axis=1)
    best = iou[np.arange(wh.shape[0]), assignment]
    return KMeansResult(
        anchors=anchors,
        assignment=assignment,
        cluster_sizes=np.bincount(assignment, minlength=anchors.shape[0]),
        mean_iou=float(best.mean()),
        cost=float(np.sum(1.0 - best)),
        iterations=iterations,
        converged=converged,
        run=run,
    )


def kmeans_anchors(
    wh: np.ndarray,
    k: int,
    *,
    restarts: int = 5,
    seed: int = 0,
    update: str = "median",
    max_iter: int = 300,
    warm_start: np.ndarray | None = None,
) -> KMeansResult:
    """Best of `restarts` k-means++ runs (plus one from `warm_start`) for `k` anchors.

    wh: [N, 2] box (width, height), all > 0. warm_start: optional [M, 2], M < k, anchors kept
    as the first centres of one extra run (the rest seeded by k-means++). Run r of k draws from
    `np.random.default_rng([seed, k, r])`, so a result does not depend on the other k asked for.
    The winner has the highest mean IoU (the first run on ties).
    """
    wh = validate_boxes(wh)
    _check_k(wh, k)
    if update not in UPDATES:
        raise UserError(f"unknown update {update!r}; expected one of {UPDATES}.")
    if restarts < 1 and warm_start is None:
        raise UserError(f"restarts must be >= 1, got {restarts}.")
    starts = [(r, np.random.default_rng([seed, k, r]), None) for r in range(restarts)]
    if warm_start is not None:
        warm_start = np.asarray(warm_start, np.float64).reshape(-1, 2)
        if warm_start.shape[0] >= k:
            raise UserError(
                f"warm_start has {warm_start.shape[0]} anchors; need fewer than k = {k}."
            )
        starts.append((-1, np.random.default_rng([seed, k, restarts]), warm_start))
    best = None
    for run, rng, initial in starts:
        init = kmeanspp_init(wh, k, rng, initial)
        anchors, mean_iou, iterations, converged = lloyd(wh, init, update=update, max_iter=max_iter)
        if best is None or mean_iou > best[1]:
            best = (anchors, mean_iou, iterations, converged, run)
    anchors, _, iterations, converged, run = best
    return _score(wh, anchors, run, iterations, converged)


def anchors_for_range(
    wh: np.ndarray,
    k_min: int,
    k_max: int,
    *,
    restarts: int = 5,
    seed: int = 0,
    update: str = "median",
    max_iter: int = 300,
) -> list[KMeansResult]:
    """`kmeans_anchors` for k = k_min .. k_max; each k > k_min also warm-starts from k - 1.

    The warm start makes mean IoU non-decreasing (cost non-increasing) in k.
    """
    wh = validate_boxes(wh)
    if not (isinstance(k_min, numbers.Integral) and isinstance(k_max, numbers.Integral)):
        raise UserError(f"k_min and k_max must be integers, got {k_min!r} and {k_max!r}.")
    if not 1 <= k_min <= k_max:
        raise UserError(f"need 1 <= k_min <= k_max, got k_min = {k_min}, k_max = {k_max}.")
    _check_k(wh, k_max)
    results: list[KMeansResult] = []
    for k in range(k_min, k_max + 1):
        warm = results[-1].anchors if results else None
        results.append(
            kmeans_anchors(
                wh,
                k,
                restarts=restarts,
                seed=seed,
                update=update,
                max_iter=max_iter,
                warm_start=warm,
            )
        )
    return results


def choose_elbow(ks: Sequence[int], costs: Sequence[float]) -> int | None:
    """The elbow of a decreasing cost curve by the rule in `ELBOW_RULE` (kneedle, chord distance).

    ks: increasing k values; costs: the cost for each. Returns the chosen k or None.
    """
    ks = np.asarray(ks, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    if ks.shape != costs.shape or ks.ndim != 1:
        raise UserError(
            f"ks and costs must be 1-D of the same length, got {ks.shape} and {costs.shape}."
        )
    if ks.size < 3:
        return None
    if np.any(np.diff(ks) <= 0):
        raise UserError(f"ks must be strictly increasing, got {ks.tolist()}.")
    span = costs.max() - costs.min()
    if not span > 0:
        return None
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    y = (costs - costs.min()) / span
    gap = (1.0 - x) - y  # [len(ks)], chord minus curve
    best = int(np.argmax(gap))  # first maximum: the smaller k on ties
    return int(ks[best]) if gap[best] > 1e-12 else None


# ----------------------------------------------------------------------------- sources


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def load_coco(path: str, *, absolute: bool = False) -> np.ndarray:
    """Box sizes from a COCO-format JSON file: `images` (id, width, height), `annotations`
    (image_id, category_id, bbox = [x, y, width, height] in pixels), `categories` (id).

    Returns float64 [N, 2] (width, height), relative to the image size unless `absolute`.
    Every annotation is used (crowd regions included). Malformed files raise `DataError`.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such COCO annotation file.") from e
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})."
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e}).") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: a COCO file is a JSON object, got {type(data).__name__}.")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(
                f"{path}: missing top-level key {key!r}; a COCO file has 'images', 'annotations' "
                "and 'categories'."
            )
        if not isinstance(data[key], list):
            raise DataError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}.")

    sizes: dict = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image:
            raise DataError(f"{path}: images[{i}] has no 'id'.")
        if image["id"] in sizes:
            raise DataError(f"{path}: images[{i}]: image id {image['id']!r} appears twice.")
        size = (image.get("width"), image.get("height"))
        if not absolute and not all(_is_number(v) and v > 0 for v in size):
            raise DataError(
                f"{path}: images[{i}] (id {image['id']!r}) needs positive 'width' and 'height' "
                f"for relative sizes, got {size}; or pass --absolute for pixel sizes."
            )
        sizes[image["id"]] = size
    category_ids = set()
    for i, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or "id" not in category:
            raise DataError(f"{path}: categories[{i}] has no 'id'.")
        category_ids.add(category["id"])

    wh = np.empty((len(data["annotations"]), 2), np.float64)
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise DataError(f"{where} is not an object.")
        if isinstance(ann.get("id"), (int, str)):
            where += f" (id {ann['id']!r})"
        for key in ("image_id", "bbox", "category_id"):
            if key not in ann:
                raise DataError(f"{where} has no {key!r}.")
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_number, bbox)):
            raise DataError(
                f"{where}: 'bbox' must be 4 finite numbers [x, y, width, height], got {bbox!r}."
            )
        if ann["image_id"] not in sizes:
            raise DataError(f"{where}: image_id {ann['image_id']!r} is not in 'images'.")
        if ann["category_id"] not in category_ids:
            raise DataError(f"{where}: category_id {ann['category_id']!r} is not in 'categories'.")
        wh[i] = bbox[2:]
        if not absolute:
            wh[i] /= sizes[ann["image_id"]]
    return wh


def annotation_sizes(
    annotations: Sequence[dict], *, absolute: bool = False, exclude_difficult: bool = False
) -> np.ndarray:
    """Box sizes of `jwsol.data.voc` annotation dicts ('boxes' [M, 4] in pixel edges, 'difficult',
    'width', 'height'): float64 [N, 2] (width, height), relative to the image unless `absolute`.

    Pixel edges make x2 - x1 the object's width in pixels (the devkit's xmax - xmin + 1).
    """
    chunks = []
    for ann in annotations:
        boxes = np.asarray(ann["boxes"], np.float64).reshape(-1, 4)
        if exclude_difficult:
            boxes = boxes[~np.asarray(ann["difficult"], bool)]
        wh = boxes[:, 2:] - boxes[:, :2]
        if not absolute:
            wh = wh / np.array([ann["width"], ann["height"]], np.float64)
        chunks.append(wh)
    return np.concatenate(chunks) if chunks else np.zeros((0, 2))


def scenes_data_config(spec: str | None = None, cache_dir: str | None = None):
    """The `data` section that describes the scenes: of the job config `spec` (e.g.
    'configs/localizer.py:scenes'; default configs/wsddn.py:scenes); `cache_dir` replaces its
    data.cache_dir."""
    from jwsol.training import config as config_lib

    data = config_lib.load(spec or "configs/wsddn.py:scenes").data
    if cache_dir:
        with data.unlocked():
            data.cache_dir = cache_dir
    return data


def load_scenes(data_config, split: str = "train", *, absolute: bool = False) -> np.ndarray:
    """Sizes of the true boxes of the offline scenes that `data_config` (a scenes data section,
    see `scenes_data_config`) describes, read from the training job's own cache.

    Relative sizes divide by the canvas side. Returns float64 [N, 2], one row per object.
    """
    from jwsol.data import records, scenes

    settings = records.scene_settings(data_config)
    data = scenes.load(settings, split, cache_dir=os.path.join(data_config.cache_dir, "scenes"))
    used = np.arange(data.boxes.shape[1])[None, :] < data.counts[:, None]  # [N, K]
    boxes = data.boxes[used].astype(np.float64)  # [M, 4] (x1, y1, x2, y2)
    wh = boxes[:, 2:] - boxes[:, :2]
    return wh if absolute else wh / float(settings.canvas_size)


def load_boxes(
    source: str,
    path: str | None = None,
    *,
    split: str | None = None,
    absolute: bool = False,
    exclude_difficult: bool = False,
    config: str | None = None,
) -> np.ndarray:
    """Box sizes [N, 2] from `source` (see `SOURCES`); `split` None takes the source's default.

    path: the COCO file, the VOCdevkit folder, the tfds data_dir or the scenes cache_dir.
    config: scenes only, the job config whose data section describes the scenes.
    VOC comes through `jwsol.data.voc` (its checks and errors), scenes through `jwsol.data`.
    """
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; expected one of {SOURCES}.")
    split = DEFAULT_SPLITS[source] if split is None else split
    if source in ("coco", "voc_folder") and not path:
        raise UserError(f"--source {source} needs --path.")
    if source == "coco":
        return load_coco(path, absolute=absolute)
    if source == "scenes":
        return load_scenes(scenes_data_config(config, path), split, absolute=absolute)
    from jwsol.data import voc  # NOTE: imported here so COCO needs no TensorFlow.

    if source == "voc_folder":
        annotations = voc.load_folder(path, split)
    else:
        annotations = voc.load_tfds(split, data_dir=path)
    return annotation_sizes(annotations, absolute=absolute, exclude_difficult=exclude_difficult)


# ----------------------------------------------------------------------------- command line


def results_to_json(
    results: Sequence[KMeansResult], chosen_k: int | None, *, meta: dict | None = None
) -> dict:
    """The anchors.json content: settings, the elbow rule and chosen k, one entry per k."""
    return {
        **(meta or {}),
        "elbow_rule": ELBOW_RULE,
        "chosen_k": chosen_k,
        "results": [
            {
                "k": r.k,
                "anchors": np.round(r.anchors, 6).tolist(),
                "mean_iou": r.mean_iou,
                "cost": r.cost,
                "cluster_sizes": r.cluster_sizes.tolist(),
                "iterations": r.iterations,
                "converged": r.converged,
                "run": r.run,
            }
            for r in results
        ],
    }


def _parser() -> argparse.ArgumentParser:
    p = errors.ArgumentParser(
        prog="python -m jwsol.anchors",
        description="k-means anchor boxes (distance 1 - IoU) for a set of box annotations.",
    )
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument(
        "--path",
        help="coco: the JSON file; voc_folder: the VOCdevkit folder; tfds: the tfds data_dir; "
        "scenes: the data.cache_dir holding scenes/ (default: the config's).",
    )
    p.add_argument("--split", help=f"split (defaults: {DEFAULT_SPLITS}).")
    p.add_argument(
        "--config",
        help="scenes: the job config whose data section describes the scenes, e.g. "
        "configs/localizer.py:scenes (default: configs/wsddn.py:scenes).",
    )
    p.add_argument("--k-min", type=int, default=1)
    p.add_argument("--k-max", type=int, default=10)
    p.add_argument("--restarts", type=int, default=5, help="k-means++ restarts per k.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--update", choices=UPDATES, default="median", help="centre update step.")
    p.add_argument("--max-iter", type=int, default=300)
    p.add_argument(
        "--absolute", action="store_true", help="sizes in pixels, not relative to the image."
    )
    p.add_argument(
        "--exclude-difficult", action="store_true", help="VOC: leave out 'difficult' objects."
    )
    p.add_argument(
        "--drop-degenerate",
        action="store_true",
        help="drop (and count) boxes with zero width or height instead of stopping with an error.",
    )
    p.add_argument(
        "--max-boxes",
        type=int,
        default=0,
        help="cluster a random subset of at most this many boxes (0: all); for very large sets.",
    )
    p.add_argument("--out", required=True, help="output folder for anchors.json and the pictures.")
    return p


def run(args: argparse.Namespace) -> dict:
    """Loads the boxes, clusters them for every k, writes anchors.json and the pictures."""
    from jwsol.viz import anchors as viz  # NOTE: matplotlib only when pictures are made.

    wh = load_boxes(
        args.source,
        args.path,
        split=args.split,
        absolute=args.absolute,
        exclude_difficult=args.exclude_difficult,
        config=args.config,
    )
    dropped = 0
    if args.drop_degenerate:
        wh, dropped = drop_degenerate(wh)
        if dropped:
            print(f"dropped {dropped} boxes with a zero, negative or non-finite width or height")
    wh = validate_boxes(wh, name=f"{args.source} boxes")
    total = wh.shape[0]
    if 0 < args.max_boxes < total:
        keep = np.random.default_rng([args.seed, total]).choice(
            total, args.max_boxes, replace=False
        )
        wh = wh[np.sort(keep)]
        print(f"clustering a random subset of {args.max_boxes} of {total} boxes")
    if args.restarts < 1:
        raise UserError(f"--restarts must be >= 1, got {args.restarts}.")
    results = anchors_for_range(
        wh, args.k_min, args.k_max, restarts=args.restarts, seed=args.seed, update=args.update,
        max_iter=args.max_iter,
    )  # fmt: skip
    ks = [r.k for r in results]
    chosen = choose_elbow(ks, [r.cost for r in results])
    units = "pixels" if args.absolute else "relative"
    meta = {
        "source": args.source,
        "path": args.path,
        "split": DEFAULT_SPLITS[args.source] if args.split is None else args.split,
        "units": units,
        "num_boxes": int(wh.shape[0]),
        "num_boxes_loaded": int(total),
        "dropped_degenerate": dropped,
        "exclude_difficult": bool(args.exclude_difficult),
        "update": args.update,
        "restarts": args.restarts,
        "seed": args.seed,
        "max_iter": args.max_iter,
    }
    if args.source == "scenes":
        from jwsol.data import records

        data = scenes_data_config(args.config, args.path)
        meta["scenes_settings"] = dataclasses.asdict(records.scene_settings(data))
    summary = results_to_json(results, chosen, meta=meta)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "anchors.json"), "w") as f:
        json.dump(summary, f, indent=1)
    viz.plot_elbow(ks, [r.cost for r in results], [r.mean_iou for r in results], chosen,
                   os.path.join(args.out, "elbow.png"))  # fmt: skip
    for r in results:
        viz.plot_clusters(
            wh, r.assignment, r.anchors, os.path.join(args.out, f"clusters_k{r.k}.png"),
            units=units, title=f"{args.source}: k = {r.k}, mean IoU {r.mean_iou:.3f}",
        )  # fmt: skip
    print(f"{wh.shape[0]} boxes from {args.source} ({units} sizes)")
    print(" k  mean IoU      cost")
    for r in results:
        mark = "  <- elbow" if r.k == chosen else ""
        print(f"{r.k:2d}  {r.mean_iou:8.4f}  {r.cost:8.2f}{mark}")
    print(f"chosen k: {chosen}; wrote {args.out}/anchors.json, elbow.png, clusters_k*.png")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return errors.run_main(lambda: run(args), args.verbose)


if __name__ == "__main__":
    sys.exit(main())
