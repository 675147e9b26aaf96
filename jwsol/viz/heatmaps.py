"""Class heatmaps over images: colour-mapped overlays and a readable per-image grid.

`overlay` blends a colour-mapped heatmap into an image; `heatmap_grid` draws one row per image:
the image with all its true boxes (named), then one overlay per class with that class's true
boxes (green) and the box extracted from the heatmap (red). `box_curves` plots box accuracy and
coverage against the heatmap threshold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from jwsol.metrics import localization
from jwsol.ops.boxes_np import iou_matrix
from jwsol.viz.boxes import draw_boxes, figure_to_array


def colorize(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """heatmap [H, W] with values in [0, 1] (clipped) -> uint8 [H, W, 3] through `cmap`."""
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be [H, W], got shape {heatmap.shape}")
    rgba = matplotlib.colormaps[cmap](np.clip(heatmap, 0.0, 1.0))
    return np.round(rgba[..., :3] * 255.0).astype(np.uint8)


def overlay(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
    """(1 - alpha) * image + alpha * colorize(heatmap), rounded: uint8 [H, W, 3].

    image: uint8 [H, W, 3] (or [H, W], shown as grey); heatmap: [H, W] in [0, 1], same size.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[:2] != np.shape(heatmap):
        raise ValueError(f"image {image.shape[:2]} and heatmap {np.shape(heatmap)} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(heatmap, cmap)
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


@dataclasses.dataclass
class ClassMap:
    """One class's heatmap on one image (every array at the image's size)."""

    name: str
    heatmap: np.ndarray  # [H, W] in [0, 1]
    true_boxes: np.ndarray  # [M, 4] (x1, y1, x2, y2) pixel edges, this class only
    boxes: np.ndarray  # [K, 4] boxes extracted from the heatmap
    caption: str = ""  # e.g. the class probability and the best IoU


@dataclasses.dataclass
class ImageMaps:
    """One image with its true boxes and the heatmaps of some of its classes."""

    image: np.ndarray  # uint8 [H, W, 3]
    true_boxes: np.ndarray  # [G, 4], every object
    box_names: Sequence[str]  # [G] class name of each true box
    maps: Sequence[ClassMap]
    title: str = ""


def image_maps(
    image: np.ndarray,
    true_boxes: np.ndarray,
    box_names: Sequence[str],
    samples: Sequence[tuple[int, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    probs: np.ndarray,
    canvas_size: int,
    geometry: tuple[float, float] | None,
    threshold: float,
    title: str = "",
) -> ImageMaps:
    """One figure row: each sample (class, score map [h, w] on the S x S canvas, its true boxes)
    placed on `image` [H, W, 3] (`localization.heatmap_to_image`), min-max normalised, with the
    box of its largest component >= threshold and a caption of probs[class] and that box's IoU.
    """
    size = image.shape[:2]
    maps = []
    for cls, score_map, truth in samples:
        heat = localization.heatmap_to_image(score_map, canvas_size, size, None, geometry)
        prepared = localization.normalize_heatmap(heat)
        boxes = localization.largest_box(prepared, threshold)
        iou = iou_matrix(boxes, truth).max() if len(boxes) else 0.0
        caption = f"p={probs[cls]:.2f}  IoU={iou:.2f}"
        maps.append(ClassMap(class_names[cls], prepared, truth, boxes, caption))
    return ImageMaps(image, true_boxes, box_names, maps, title)


def heatmap_grid(
    rows: Sequence[ImageMaps],
    title: str = "",
    max_maps: int | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    panel_inches: float = 2.2,
) -> np.ndarray:
    """One row per image: the image with named true boxes, then up to `max_maps` class overlays.

    Returns the rendered figure as uint8 [H, W, 3].
    """
    if not rows:
        raise ValueError("heatmap_grid needs at least one image")
    width = max(len(r.maps) for r in rows) if max_maps is None else max_maps
    ncols = 1 + max(1, width)
    fig, axes = plt.subplots(
        len(rows),
        ncols,
        figsize=(ncols * panel_inches, len(rows) * panel_inches * 1.12 + (0.4 if title else 0)),
        squeeze=False,
    )
    for row, axs in zip(rows, axes):
        for ax in axs:
            ax.axis("off")
        axs[0].imshow(row.image)
        draw_boxes(axs[0], row.true_boxes, "lime", labels=list(row.box_names))
        axs[0].set_title(row.title, fontsize=7)
        for ax, class_map in zip(axs[1:], row.maps[: ncols - 1]):
            ax.imshow(overlay(row.image, class_map.heatmap, alpha, cmap))
            draw_boxes(ax, class_map.true_boxes, "lime")
            draw_boxes(ax, class_map.boxes, "red")
            caption = f"{class_map.name}\n{class_map.caption}" if class_map.caption else ""
            ax.set_title(caption or class_map.name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
        # Leave the suptitle its own strip (about 0.35 inch) above the panel captions.
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    else:
        fig.tight_layout()
    return figure_to_array(fig)


def box_curves(
    thresholds: np.ndarray,
    accuracy: dict[str, np.ndarray],
    coverage: np.ndarray,
    in_box: np.ndarray,
    mark: float | None = None,
    title: str = "",
) -> np.ndarray:
    """Three panels: box accuracy curves (name -> [T]) over the heatmap threshold; the fraction
    of true-box pixels covered (`coverage` [T]) and of the mask inside the boxes (`in_box` [T])
    over the threshold; and coverage against in-box, the trade-off the threshold walks along.
    A dotted line (a dot in the last panel) marks the threshold `mark`. Returns uint8 [H, W, 3].
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, values in accuracy.items():
        axes[0].plot(thresholds, values, label=name)
    axes[1].plot(thresholds, coverage, label="true-box pixels covered")
    axes[1].plot(thresholds, in_box, label="mask inside true boxes")
    axes[2].plot(in_box, coverage)
    for ax, ylabel in zip(axes[:2], ("hit rate", "fraction")):
        ax.set_xlabel("threshold (fraction of the min-max range)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        if mark is not None:
            ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
    if mark is not None:
        k = int(np.argmin(np.abs(np.asarray(thresholds) - mark)))
        axes[2].plot(in_box[k], coverage[k], "o", color="grey", label=f"threshold {mark:g}")
        axes[2].legend(fontsize=7)
    axes[2].set_xlabel("fraction of the mask inside true boxes")
    axes[2].set_ylabel("fraction of true-box pixels covered")
    for ax in axes:
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[2].set_xlim(0, 1)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return figure_to_array(fig)


def localization_curves(
    thresholds: np.ndarray, curves: dict[str, np.ndarray], mark: float, title: str = ""
) -> np.ndarray:
    """`box_curves` of the curves that `localization.BoxAccumulator.result` returns."""
    accuracy = {"MaxBoxAcc (largest, IoU 0.5)": curves["largest"]}
    for d, iou in enumerate(localization.V2_IOUS):
        accuracy[f"any component, IoU {iou:g}"] = curves["any"][d]
    return box_curves(thresholds, accuracy, curves["coverage"], curves["in_box"], mark, title)
