"""Grad-CAM pictures: maps (from `jwsol.ops.gradcam`) upsampled, scaled and laid over their
images in a gallery."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from jwsol.viz.boxes import figure_to_array
from jwsol.viz.heatmaps import overlay


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """maps [N, h, w] -> [N, height, width], bilinear with half-pixel centres (as the image it
    explains: cell (i, j) covers the same fraction of the image)."""
    maps = jnp.asarray(maps, jnp.float32)
    return np.asarray(jax.image.resize(maps, (maps.shape[0], height, width), "bilinear"))


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each map [.., h, w] divided by its maximum (all-zero maps stay 0): values in [0, 1]."""
    maps = np.asarray(maps, np.float32)
    peak = maps.max(axis=(-2, -1), keepdims=True)
    return np.where(peak > 0, maps / np.where(peak > 0, peak, 1.0), 0.0)


def gradcam_gallery(
    images: np.ndarray,
    titles: Sequence[str],
    maps: Sequence[np.ndarray],
    map_titles: Sequence[Sequence[str]] | None = None,
    examples_per_row: int = 3,
    panel_inches: float = 1.7,
) -> np.ndarray:
    """A grid of examples: each shows its image uint8 [H, W, 3] (titled `titles[k]`), then one
    overlay per entry of `maps` (each [K, h, w], e.g. the predicted and the true class's map),
    titled `map_titles[m][k]` (default 'Grad-CAM').

    Maps are upsampled to the image and scaled by their own maximum. Returns uint8 [H', W', 3].
    """
    images = np.asarray(images)
    k, height, width = images.shape[:3]
    heats = [normalise(upsample(m, height, width)) for m in maps] if k else []
    per = 1 + len(maps)
    cols = per * max(1, min(examples_per_row, k))
    nrows = max(1, -(-k // max(1, min(examples_per_row, k))))
    fig, axes = plt.subplots(
        nrows, cols, figsize=(cols * panel_inches, nrows * panel_inches * 1.2), squeeze=False
    )
    panels = axes.ravel()
    for ax in panels:
        ax.axis("off")
    for idx in range(k):
        panels[idx * per].imshow(images[idx])
        panels[idx * per].set_title(titles[idx], fontsize=7)
        for m, heat in enumerate(heats):
            ax = panels[idx * per + 1 + m]
            ax.imshow(overlay(images[idx], heat[idx], alpha=0.45))
            ax.set_title(map_titles[m][idx] if map_titles else "Grad-CAM", fontsize=7)
    if k == 0:
        panels[0].text(0.5, 0.5, "no examples", ha="center", va="center")
    fig.tight_layout()
    return figure_to_array(fig)
