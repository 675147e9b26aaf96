"""Localization box metrics: the all-thresholds-at-once code against a per-threshold oracle
(one cv2 resize and one labelling per cam threshold, written below), hand-worked maps, heatmap
placement against np.interp, components against a breadth-first flood fill."""

from collections import deque

import cv2
import numpy as np
import pytest
from scipy import ndimage

from jwsol.metrics import localization as L
from jwsol.ops.boxes_np import iou_matrix

GRID = np.round(np.arange(0, 100) * 0.01, 2)  # Choe et al.'s cam thresholds
RECEPTIVE_FIELD = (31.5, 16.0)  # the localizer's cell geometry (centre of cell 0, stride)


# The oracle: one threshold at a time ------------------------------------------------------------


def oracle_boxes(mask: np.ndarray, all_components: bool) -> np.ndarray:
    """Boxes [K, 4] of the 8-connected components of mask: all, or the largest (first on a tie)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros((0, 4))
    slices = ndimage.find_objects(labels)
    if not all_components:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        slices = [slices[int(np.argmax(sizes))]]
    return np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices], float)


def oracle_hits(heatmaps, truths, thresholds, all_components, image_sizes=None, ious=L.V2_IOUS):
    """[S, D, T] bool: sample s hits at IoU threshold d and cam threshold t."""
    hits = np.zeros((len(heatmaps), len(ious), len(thresholds)), bool)
    for s, (heatmap, truth) in enumerate(zip(heatmaps, truths)):
        heatmap = np.asarray(heatmap, np.float32)
        if image_sizes is not None:
            height, width = image_sizes[s]
            heatmap = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
        low, high = heatmap.min(), heatmap.max()
        prepared = (heatmap - low) / (high - low) if high > low else np.zeros_like(heatmap)
        for t, threshold in enumerate(thresholds):
            boxes = oracle_boxes(prepared >= threshold, all_components)
            if len(boxes):
                hits[s, :, t] = iou_matrix(boxes, truth).max() >= np.asarray(ious)
    return hits


def fast_hits(heatmaps, truths, thresholds, all_components, image_sizes=None):
    """The same [S, D, T] from `threshold_hits` (maps placed by the 'stretch' alignment)."""
    out = []
    for s, (heatmap, truth) in enumerate(zip(heatmaps, truths)):
        size = np.shape(heatmap) if image_sizes is None else image_sizes[s]
        canvas = size[0]
        placed = L.heatmap_to_image(np.asarray(heatmap, np.float32), canvas, size)
        largest, any_box = L.threshold_hits(L.normalize_heatmap(placed), truth, thresholds)
        out.append(any_box if all_components else largest)
    return np.stack(out)


IMPLEMENTATIONS = {"fast": fast_hits, "oracle": oracle_hits}


def smooth_heatmap(seed, size=48):
    score_map = np.random.default_rng(seed).normal(size=(6, 6))
    return L.normalize_heatmap(L.heatmap_to_image(score_map, size, (size, size)))


def test_pooled_hits_equal_the_oracle():
    rng = np.random.default_rng(3)
    thresholds = np.arange(20) / 20
    heatmaps, truths, classes = [], [], []
    for s in range(8):
        heatmaps.append(smooth_heatmap(10 + s))
        x1, y1 = rng.integers(0, 24, 2)
        w, h = rng.integers(8, 24, 2)
        truths.append(np.array([[x1, y1, x1 + w, y1 + h]], float))
        classes.append(s % 3)
    pool = L.BoxAccumulator(3, thresholds, cam_index=4)  # 0.2 on the grid of 20
    for heat, truth, c in zip(heatmaps, truths, classes):
        pool.add(c, heat, truth)
    metrics, curves = pool.result()
    largest = oracle_hits(heatmaps, truths, thresholds, all_components=False)
    every = oracle_hits(heatmaps, truths, thresholds, all_components=True)
    np.testing.assert_allclose(curves["largest"], largest[:, 1].mean(0))
    np.testing.assert_allclose(curves["any"], every.mean(0))
    assert metrics["max_box_acc"] == pytest.approx(largest[:, 1].mean(0).max())
    assert metrics["max_box_acc_v2"] == pytest.approx(every.mean(0).max(axis=1).mean())
    per_class = [largest[np.array(classes) == c, 1, 4].mean() for c in range(3)]
    assert metrics["corloc"] == pytest.approx(np.mean(per_class))
    assert metrics["num_loc_samples"] == 8


# Hand-worked maps, both implementations ---------------------------------------------------------


def block_heatmap(size, box, value=1.0):
    heatmap = np.zeros(size)
    x1, y1, x2, y2 = box
    heatmap[y1:y2, x1:x2] = value
    return heatmap


@pytest.mark.parametrize("hits", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_curve_on_blocks(hits):
    # Sample 0: heatmap exactly on the box -> hit for every t > 0; t = 0 keeps the whole 10x10
    # image: IoU 16/100, miss. Sample 1: heatmap off the box, IoU 4/28 at best: always a miss.
    truth = np.array([[2, 2, 6, 6]])
    heatmaps = [block_heatmap((10, 10), (2, 2, 6, 6)), block_heatmap((10, 10), (0, 0, 4, 4))]
    curve = hits(heatmaps, [truth, truth], GRID, False)[:, 1].mean(0)
    assert curve[0] == 0.0
    np.testing.assert_array_equal(curve[1:], 0.5)


@pytest.mark.parametrize("hits", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_threshold_sweep_on_rings(hits):
    # 8x8 map: centre 2x2 = 1.0, the ring around it (4x4) = 0.6, the next (6x6) = 0.3. Truth =
    # the 4x4 ring. Boxes by cam threshold t: t = 0: 8x8 (IoU .25); 0 < t <= .3: 6x6 (IoU .44);
    # .3 < t <= .6: 4x4 (IoU 1); t > .6: 2x2 (IoU .25).
    heatmap = np.zeros((8, 8))
    heatmap[1:7, 1:7] = 0.3
    heatmap[2:6, 2:6] = 0.6
    heatmap[3:5, 3:5] = 1.0
    curve = hits([heatmap], [np.array([[2, 2, 6, 6]])], GRID, True)[0]
    t = GRID
    np.testing.assert_array_equal(curve[0], (t > 0) & (t <= 0.6))
    np.testing.assert_array_equal(curve[1], (t > 0.3) & (t <= 0.6))
    np.testing.assert_array_equal(curve[2], (t > 0.3) & (t <= 0.6))


@pytest.mark.parametrize("hits", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_v2_uses_every_component_and_v1_the_largest(hits):
    heatmap = block_heatmap((20, 20), (10, 10, 20, 20))  # the big blob is wrong
    heatmap[0:3, 0:3] = 1.0  # the small one is right
    truth = [np.array([[0, 0, 3, 3]])]
    assert not hits([heatmap], truth, GRID, False).any()
    assert hits([heatmap], truth, GRID, True)[0, :, 1:].all()


@pytest.mark.parametrize("hits", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_any_true_box_counts_and_maps_are_resized_to_the_image(hits):
    heatmap = block_heatmap((10, 10), (5, 5, 9, 9))
    truth = [np.array([[0, 0, 3, 3], [5, 5, 9, 9]])]
    assert hits([heatmap], truth, GRID, False)[0, 1, 1:].all()
    # A 4x4 map with its top-left 2x2 hot is a 16x16 box on a 32x32 image.
    small = block_heatmap((4, 4), (0, 0, 2, 2))
    truth = [np.array([[0, 0, 16, 16]])]
    assert hits([small], truth, [0.5], False, image_sizes=[(32, 32)])[0, 1, 0]
    assert not hits([small], truth, [0.5], False)[0, 1, 0]  # 2x2 box on the 4x4 map


def test_corloc_averages_per_class_then_over_classes():
    truth = np.array([[2, 2, 6, 6]])
    good = block_heatmap((10, 10), (2, 2, 6, 6))
    bad = block_heatmap((10, 10), (0, 0, 2, 2))
    pool = L.BoxAccumulator(2, np.arange(10) / 10, cam_index=2)
    for heatmap, cls in zip([good, bad, bad, good], [0, 0, 0, 1]):  # class 0: 1 of 3, 1: 1 of 1
        pool.add(cls, heatmap, truth)
    metrics, _ = pool.result()
    assert metrics["corloc"] == pytest.approx(2 / 3)
    assert metrics["max_box_acc"] == pytest.approx(0.5)  # pooled over samples


def test_no_sample_gives_nan_and_no_curves():
    metrics, curves = L.BoxAccumulator(2, np.arange(10) / 10, 2).result()
    assert np.isnan(metrics["corloc"]) and metrics["num_loc_samples"] == 0 and curves is None


def test_a_sample_needs_a_true_box():
    with pytest.raises(ValueError, match="true box"):
        L.threshold_hits(np.zeros((3, 3)), np.zeros((0, 4)), GRID)


# Heatmap placement ------------------------------------------------------------------------------


def test_receptive_field_placement_puts_cells_at_their_centres():
    impulse = np.zeros((5, 5))
    impulse[2, 1] = 1.0  # row 2 (centre y 63.5), column 1 (centre x 47.5)
    heat = L.heatmap_to_image(impulse, 128, (128, 128), geometry=RECEPTIVE_FIELD)
    assert heat[63, 47] == pytest.approx(1.0)
    assert heat[71, 47] == pytest.approx(0.5)  # centre 71.5: halfway to row 3
    assert heat[63, 55] == pytest.approx(0.5)
    assert heat[63, 63] == pytest.approx(0.0)  # next column's centre
    edge = np.zeros((5, 5))
    edge[0, 0] = 1.0
    heat = L.heatmap_to_image(edge, 128, (128, 128), geometry=RECEPTIVE_FIELD)
    assert np.all(heat[:32, :32] == 1.0)  # before the first centre the edge value repeats


def test_stretch_placement_is_cv2_resize_of_the_canvas_then_crop():
    rng = np.random.default_rng(1)
    score_map = rng.normal(size=(7, 7)).astype(np.float32)
    full = cv2.resize(score_map, (100, 100), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(L.heatmap_to_image(score_map, 100, (100, 100)), full, atol=1e-5)
    cropped = L.heatmap_to_image(score_map, 100, (60, 80))
    np.testing.assert_allclose(cropped, full[:60, :80], atol=1e-5)


@pytest.mark.parametrize("geometry", [RECEPTIVE_FIELD, None])
def test_any_output_size_samples_the_bilinear_surface(geometry):
    """Oracle: np.interp along x, then along y, between the cell centres (edges repeated)."""
    score_map = np.random.default_rng(2).normal(size=(9, 9))
    first, step = geometry or (192 / 18, 192 / 9)
    centres = first + step * np.arange(9)
    for out in [(192, 192), (96, 96), (50, 70)]:
        got = L.heatmap_to_image(score_map, 192, (180, 192), out, geometry)
        ys = (np.arange(out[0]) + 0.5) * 180 / out[0]
        xs = (np.arange(out[1]) + 0.5) * 192 / out[1]
        along_x = np.stack([np.interp(xs, centres, row) for row in score_map])  # [9, W']
        expected = np.stack([np.interp(ys, centres, col) for col in along_x.T], axis=1)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_normalize_is_min_max_and_a_constant_map_is_zero():
    np.testing.assert_allclose(L.normalize_heatmap(np.array([[2.0, 4.0, 10.0]])), [[0, 0.25, 1]])
    np.testing.assert_array_equal(L.normalize_heatmap(np.full((2, 3), 3.0)), np.zeros((2, 3)))


# Components -------------------------------------------------------------------------------------


def reference_sweep(prepared, thresholds):
    """The sweep as it was (before OpenCV): one 3-D labelling of every threshold plane, boxes
    from find_objects, the largest per plane by size then row-major order. Kept as the reference
    the faster `exact_boxes` must equal."""
    planar = np.zeros((3, 3, 3), bool)
    planar[1] = True  # 8-connectivity inside each plane, none across planes
    stack = prepared[None] >= np.asarray(thresholds, np.float32)[:, None, None]
    labels, count = ndimage.label(stack, structure=planar)
    largest = np.full(len(thresholds), -1)
    if count == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4)), largest
    slices = ndimage.find_objects(labels)
    plane = np.array([s[0].start for s in slices])
    boxes = np.array([[s[2].start, s[1].start, s[2].stop, s[1].stop] for s in slices], float)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = np.lexsort((np.arange(len(plane)), -sizes, plane))
    planes, first = np.unique(plane[order], return_index=True)
    largest[planes] = order[first]
    return plane, boxes, largest


def assert_same_sweep(got, want):
    """Equal per plane: the same set of boxes and the same largest box."""
    (plane, boxes, largest), (want_plane, want_boxes, want_largest) = got, want
    np.testing.assert_array_equal(largest >= 0, want_largest >= 0)
    for t in np.flatnonzero(want_largest >= 0):
        mine = sorted(map(tuple, boxes[plane == t].tolist()))
        assert mine == sorted(map(tuple, want_boxes[want_plane == t].tolist())), t
        np.testing.assert_array_equal(boxes[largest[t]], want_boxes[want_largest[t]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_boxes_equal_the_oracle_at_every_threshold(seed):
    prepared = smooth_heatmap(seed)
    thresholds = np.arange(50) / 50
    plane, boxes, largest = L.exact_boxes(prepared, thresholds)
    assert plane.max() == len(thresholds) - 1
    for t, threshold in enumerate(thresholds):
        mask = prepared >= np.float32(threshold)
        got = sorted(map(tuple, boxes[plane == t].tolist()))
        assert got == sorted(map(tuple, oracle_boxes(mask, True).tolist()))
        np.testing.assert_array_equal(boxes[largest[t]][None], oracle_boxes(mask, False))


@pytest.mark.parametrize("seed", range(6))
def test_exact_boxes_equal_the_previous_implementation(seed):
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(20, 70)), int(rng.integers(20, 70)))
    if seed % 2:  # noise: many components, nested ones and ties
        prepared = rng.random(size).astype(np.float32)
    else:
        cells = rng.normal(size=(5, 7))
        prepared = L.normalize_heatmap(cv2.resize(cells, size[::-1], interpolation=cv2.INTER_CUBIC))
    prepared = np.round(prepared * 20) / 20 if seed == 4 else prepared  # plateaus, equal sizes
    thresholds = np.arange(100) / 100
    assert_same_sweep(L.exact_boxes(prepared, thresholds), reference_sweep(prepared, thresholds))


@pytest.mark.parametrize("seed", range(4))
def test_exact_boxes_take_any_thresholds_thin_maps_and_nan(seed):
    """Thresholds unsorted, repeated or none; maps one pixel thin; NaN pixels (in no mask)."""
    rng = np.random.default_rng(seed)
    size = [(1, 40), (40, 1), (1, 1), (17, 23)][seed]
    prepared = rng.random(size).astype(np.float32)
    prepared[rng.random(size) < 0.1] = np.nan
    thresholds = rng.permutation(np.concatenate([np.arange(30) / 30, [0.5, 0.5, 0.0]]))
    assert_same_sweep(L.exact_boxes(prepared, thresholds), reference_sweep(prepared, thresholds))
    plane, boxes, largest = L.exact_boxes(prepared, [])
    assert plane.shape == (0,) and boxes.shape == (0, 4) and largest.shape == (0,)


def test_the_compiled_sweep_equals_its_python_source():
    prepared = np.random.default_rng(0).random((9, 7)).astype(np.float32)
    args = (prepared.reshape(-1), 7, (np.arange(10) / 10).astype(np.float32))
    for got, want in zip(L._compiled_sweep()(*args), L._component_sweep(*args)):
        np.testing.assert_array_equal(got, want)


def test_boxes_use_pixel_edges_and_diagonal_neighbours_connect():
    heatmap = np.zeros((8, 8), np.float32)
    heatmap[2:5, 3:7] = 1.0  # rows 2..4, columns 3..6
    np.testing.assert_array_equal(L.largest_box(heatmap, 0.5), [[3, 2, 7, 5]])
    diagonal = np.eye(4, dtype=np.float32)[:3]
    np.testing.assert_array_equal(L.exact_boxes(diagonal, [0.5])[1], [[0, 0, 3, 3]])
    assert L.largest_box(np.zeros((5, 5), np.float32), 0.5).shape == (0, 4)
    np.testing.assert_array_equal(L.largest_box(np.zeros((5, 6), np.float32), 0.0), [[0, 0, 6, 5]])


def test_largest_component_tie_goes_to_the_first_in_row_major_order():
    mask = np.zeros((6, 8), np.float32)
    mask[3:5, 0:2] = 1.0  # 4 pixels, first pixel (3, 0)
    mask[0:2, 5:7] = 1.0  # 4 pixels, first pixel (0, 5): first in row-major order
    np.testing.assert_array_equal(L.largest_box(mask, 0.5), [[5, 0, 7, 2]])


def flood_fill_boxes(mask):
    seen = np.zeros_like(mask)
    boxes, sizes = [], []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        queue, pixels = deque([(y0, x0)]), []
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                    if inside and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        ys, xs = zip(*pixels)
        boxes.append([min(xs), min(ys), max(xs) + 1, max(ys) + 1])
        sizes.append(len(pixels))
    return boxes, sizes


@pytest.mark.parametrize("seed", range(5))
def test_components_match_flood_fill(seed):
    mask = np.random.default_rng(seed).uniform(size=(24, 30)) < 0.3
    boxes, sizes = flood_fill_boxes(mask)
    _, got, _ = L.exact_boxes(mask.astype(np.float32), [0.5])
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, boxes))
    assert L.largest_box(mask.astype(np.float32), 0.5).tolist() == [boxes[int(np.argmax(sizes))]]


# Coverage and the threshold grid ----------------------------------------------------------------


def test_coverage_curves_by_hand():
    prepared = np.array([[0.0, 0.5], [1.0, 0.25]])
    inside = np.array([[False, True], [True, False]])
    coverage, in_box = L.coverage_curves(prepared, inside, np.array([0.0, 0.3, 0.6, 1.0, 1.1]))
    np.testing.assert_allclose(coverage, [1, 1, 0.5, 0.5, 0])
    np.testing.assert_allclose(in_box, [2 / 4, 2 / 2, 1, 1, 0])


def test_box_pixels_takes_pixel_centres():
    inside = L.box_pixels(np.array([[0.5, 0, 2, 1.6]]), (3, 3))
    np.testing.assert_array_equal(inside, [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_coverage_at_precision_takes_the_best_reaching_threshold():
    coverage = np.array([1.0, 0.9, 0.6, 0.2])
    in_box = np.array([0.2, 0.4, 0.55, 0.8])
    assert L.coverage_at_precision(coverage, in_box, 0.5) == 0.6
    assert L.coverage_at_precision(coverage, in_box, 0.4) == 0.9
    assert np.isnan(L.coverage_at_precision(coverage, in_box, 0.9))


def test_cam_threshold_must_be_on_the_grid():
    with pytest.raises(ValueError, match="cam_threshold=0.25"):
        L.cam_threshold_grid(10, 0.25)
    with pytest.raises(ValueError, match="num_cam_thresholds=0"):
        L.cam_threshold_grid(0, 0.0)
    grid, index = L.cam_threshold_grid(100, 0.2)
    assert index == 20 and grid[index] == pytest.approx(0.2)
    np.testing.assert_array_equal(grid, GRID)


def test_sample_on_image_shrinks_the_longer_side_and_scales_the_boxes():
    score_map = np.zeros((8, 8))
    score_map[2:4, 0:4] = 1.0  # canvas 32: rows 8..15, columns 0..15 of the image
    truth = np.array([[0.0, 8.0, 16.0, 16.0]])
    full, boxes = L.sample_on_image(score_map, 32, (24, 32), truth)
    assert full.shape == (24, 32) and full.max() == 1.0
    np.testing.assert_array_equal(boxes, truth)
    half, boxes = L.sample_on_image(score_map, 32, (24, 32), truth, max_side=16)
    assert half.shape == (12, 16)
    np.testing.assert_allclose(boxes, truth / 2)
    unchanged, _ = L.sample_on_image(score_map, 32, (24, 32), truth, max_side=64)
    np.testing.assert_array_equal(unchanged, full)
