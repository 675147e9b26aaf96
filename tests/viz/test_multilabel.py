"""Multi-label figures: the ranked mosaic skips missing images, the tail curve draws NaNs."""

import numpy as np

from jwsol.viz import multilabel


def test_ranked_images_figure_with_missing_images():
    c, k, t = 2, 3, 8
    thumbs = np.full((c, k, t, t, 3), 100, np.uint8)
    scores = np.linspace(0, 1, c * k).reshape(c, k)
    kinds = np.array([[1, 0, -1], [1, -2, -2]])  # positive, negative, ignored, no image
    figure = multilabel.ranked_images_figure(
        thumbs, thumbs, scores, scores, kinds, kinds, ["a", "b"]
    )
    assert figure.dtype == np.uint8 and figure.ndim == 3 and figure.shape[-1] == 3


def test_tail_curve_figure_accepts_undefined_points():
    figure = multilabel.tail_curve_figure(np.array([0.5, 0.7]), np.array([0.8, np.nan]), 0.8)
    assert figure.dtype == np.uint8 and figure.shape[-1] == 3
