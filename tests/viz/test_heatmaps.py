import matplotlib
import numpy as np
import pytest

from jwsol.viz import heatmaps as viz


def test_colorize_uses_the_colour_map_and_clips():
    got = viz.colorize(np.array([[0.0, 1.0, 2.0, -1.0]]))
    # 'jet' runs from dark blue (0, 0, 0.5) to dark red (0.5, 0, 0).
    np.testing.assert_array_equal(got[0], [[0, 0, 128], [128, 0, 0], [128, 0, 0], [0, 0, 128]])
    half = viz.colorize(np.full((1, 1), 0.5), cmap="gray")
    assert half[0, 0].tolist() == [128, 128, 128]
    rgb = np.asarray(matplotlib.colormaps["viridis"](0.25))[:3]
    np.testing.assert_array_equal(
        viz.colorize(np.full((2, 2), 0.25), "viridis")[1, 1], np.round(rgb * 255)
    )


def test_overlay_blends_by_hand():
    image = np.full((2, 3, 3), 100, np.uint8)
    heat = np.zeros((2, 3))
    np.testing.assert_array_equal(viz.overlay(image, heat, alpha=0.0), image)
    np.testing.assert_array_equal(viz.overlay(image, heat, alpha=1.0), viz.colorize(heat))
    # 0.5 * 100 + 0.5 * (0, 0, 128) = (50, 50, 114)
    np.testing.assert_array_equal(viz.overlay(image, heat)[0, 0], [50, 50, 114])
    grey = viz.overlay(np.full((2, 3), 100, np.uint8), heat)
    np.testing.assert_array_equal(grey, viz.overlay(image, heat))


def test_overlay_rejects_mismatched_sizes_and_alpha():
    with pytest.raises(ValueError, match="differ in size"):
        viz.overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), alpha=1.5)


def test_heatmap_grid_draws_one_row_per_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    heat = np.zeros((40, 50))
    heat[10:20, 5:25] = 1.0
    box = np.array([[5, 10, 25, 20]], float)
    maps = [viz.ClassMap("cat", heat, box, box, "p=0.90"), viz.ClassMap("dog", heat, box, box)]
    rows = [viz.ImageMaps(image, np.concatenate([box, box]), ["cat", "dog"], maps, "img 1")]
    one = viz.heatmap_grid(rows, "title")
    two = viz.heatmap_grid(rows * 2, "title")
    assert one.dtype == np.uint8 and one.ndim == 3 and one.shape[2] == 3
    assert two.shape[0] > 1.5 * one.shape[0] and two.shape[1] == one.shape[1]
    # The extracted box is drawn in pure red somewhere in the overlays.
    assert np.any((one[..., 0] == 255) & (one[..., 1] == 0) & (one[..., 2] == 0))
    with pytest.raises(ValueError, match="at least one image"):
        viz.heatmap_grid([])


def test_box_curves_renders_three_panels():
    t = np.arange(10) / 10
    image = viz.box_curves(t, {"acc": t}, 1 - t, t, mark=0.5, title="x")
    assert image.dtype == np.uint8 and image.shape[2] == 3 and image.shape[1] > image.shape[0]
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # lines drawn, not a blank canvas
