"""Grad-CAM pictures: map scaling and upsampling by hand, and the gallery layout."""

import numpy as np

from jwsol.viz import gradcam


def test_normalise_and_upsample():
    maps = np.array([[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
    scaled = gradcam.normalise(maps)
    np.testing.assert_allclose(scaled[0], maps[0] / 4.0)
    np.testing.assert_array_equal(scaled[1], 0.0)
    up = gradcam.upsample(maps[:1], 4, 4)[0]
    # Half-pixel centres: output pixel centre (0.5 + i) / 2 - 0.5 in input pixels, clamped.
    assert up[0, 0] == 0.0 and up[3, 3] == 4.0
    np.testing.assert_allclose(up[1, 1], 0.75 * 0.75 * 0 + 0.75 * 0.25 * (2 + 1) + 0.0625 * 4)
    np.testing.assert_allclose(gradcam.upsample(np.full((1, 3, 3), 2.5), 7, 5), 2.5)


def test_gallery_lays_out_rows_of_examples():
    images = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    maps = np.random.default_rng(1).uniform(size=(5, 2, 2))
    one_row = gradcam.gradcam_gallery(images[:3], ["a"] * 3, [maps[:3], maps[:3]])
    two_rows = gradcam.gradcam_gallery(images, ["a"] * 5, [maps, maps], [["p"] * 5, ["t"] * 5])
    assert one_row.dtype == np.uint8 and one_row.shape[2] == 3
    assert one_row.shape[1] == two_rows.shape[1]  # 3 examples x 3 panels a row
    assert two_rows.shape[0] > 1.8 * one_row.shape[0]
    empty = gradcam.gradcam_gallery(np.zeros((0, 16, 16, 3), np.uint8), [], [maps[:0]])
    assert empty.ndim == 3
