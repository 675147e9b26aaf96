"""Boxes from heatmaps (host side, NumPy / SciPy / OpenCV).

A heatmap `[h, w]` (a class activation map, a grid of window scores) becomes boxes in input
pixels:
1. resize it to the image `(H, W)` (OpenCV, bilinear by default: pixel centres aligned, as
   `cv2.resize` does);
2. normalize: 'minmax' maps it to [0, 1] by (x - min) / (max - min) (as Choe et al. 2020);
   'max' divides by the max (the CAM paper's "fraction of the max", for nonnegative maps);
   a constant map normalizes to all zeros;
3. threshold: the mask is `normalized >= threshold`;
4. connected components of the mask (8-connectivity); keep the largest (most pixels; the
   first in row-major order on a tie) or all of them;
5. each component's bounding rectangle as (x1, y1, x2, y2) pixel edges: a component covering
   pixel columns 3..7 gives x1 = 3, x2 = 8 (continuous coordinates, IoU without `+1`).
An empty mask gives no box (shape [0, 4]).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
}
_EIGHT_NEIGHBOURS = np.ones((3, 3), bool)


def resize_heatmap(
    heatmap: np.ndarray, image_size: tuple[int, int], interpolation: str = "bilinear"
) -> np.ndarray:
    """Resize `heatmap: [h, w]` to `image_size = (H, W)` -> `[H, W]` float32."""
    heatmap = _heatmap(heatmap)
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive (H, W), got {image_size}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}"
        )
    if heatmap.shape == (height, width):
        return heatmap
    return cv2.resize(heatmap, (width, height), interpolation=_INTERPOLATIONS[interpolation])


def normalize_heatmap(heatmap: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """'minmax': (x - min) / (max - min); 'max': x / max. Constant (or max <= 0 for 'max')
    maps give zeros."""
    heatmap = np.asarray(heatmap, np.float32)
    if mode == "minmax":
        low, high = float(heatmap.min()), float(heatmap.max())
        if high <= low:
            return np.zeros_like(heatmap)
        return (heatmap - low) / (high - low)
    if mode == "max":
        high = float(heatmap.max())
        return heatmap / high if high > 0 else np.zeros_like(heatmap)
    raise ValueError(f"normalize must be 'minmax' or 'max', got {mode!r}")


def boxes_from_mask(mask: np.ndarray, all_components: bool = False) -> np.ndarray:
    """Bounding boxes `[K, 4]` (pixel edges) of the 8-connected components of `mask: [H, W]`:
    the largest one (K <= 1) or all of them (in label order: row-major first pixel)."""
    mask = np.asarray(mask, bool)
    labels, count = ndimage.label(mask, structure=_EIGHT_NEIGHBOURS)
    if count == 0:
        return np.zeros((0, 4))
    slices = ndimage.find_objects(labels)
    if not all_components:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        slices = [slices[int(np.argmax(sizes))]]
    return np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices], float)


def prepare_heatmap(
    heatmap: np.ndarray,
    image_size: tuple[int, int] | None = None,
    interpolation: str = "bilinear",
    normalize: str = "minmax",
) -> np.ndarray:
    """Steps 1-2: resized (if `image_size` is given) and normalized heatmap `[H, W]`."""
    if image_size is not None:
        heatmap = resize_heatmap(heatmap, image_size, interpolation)
    return normalize_heatmap(_heatmap(heatmap), normalize)


def boxes_from_heatmap(
    heatmap: np.ndarray,
    image_size: tuple[int, int] | None = None,
    threshold: float = 0.5,
    all_components: bool = False,
    interpolation: str = "bilinear",
    normalize: str = "minmax",
) -> np.ndarray:
    """Boxes `[K, 4]` (x1, y1, x2, y2 pixel edges in the image) from `heatmap: [h, w]`.

    `image_size`: (H, W) to resize to first (None: the heatmap is already at image size).
    `threshold`: fraction of the normalized range (see the module doc).
    """
    prepared = prepare_heatmap(heatmap, image_size, interpolation, normalize)
    return boxes_from_mask(prepared >= threshold, all_components)


def boxes_at_thresholds(
    prepared: np.ndarray, thresholds: Sequence[float], all_components: bool = False
) -> list[np.ndarray]:
    """Boxes of an already prepared heatmap at each of `thresholds` (for threshold sweeps)."""
    return [boxes_from_mask(prepared >= t, all_components) for t in thresholds]


def _heatmap(heatmap: np.ndarray) -> np.ndarray:
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"heatmap must be a non-empty [h, w] array, got shape {heatmap.shape}")
    if not np.all(np.isfinite(heatmap)):
        raise ValueError("heatmap contains NaN or infinite values")
    return heatmap
