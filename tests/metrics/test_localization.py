"""CorLoc / MaxBoxAcc / MaxBoxAccV2 on hand-made heatmaps whose answers are worked out below."""

import numpy as np
import pytest

from jwsol.metrics import localization as L

THRESHOLDS = L.DEFAULT_CAM_THRESHOLDS


def block_heatmap(size, box, value=1.0):
    heatmap = np.zeros(size)
    x1, y1, x2, y2 = box
    heatmap[y1:y2, x1:x2] = value
    return heatmap


def rings_heatmap():
    """8x8 map: centre 2x2 = 1.0, the ring around it (4x4) = 0.6, the next (6x6) = 0.3."""
    heatmap = np.zeros((8, 8))
    heatmap[1:7, 1:7] = 0.3
    heatmap[2:6, 2:6] = 0.6
    heatmap[3:5, 3:5] = 1.0
    return heatmap


def test_curve_on_blocks():
    # Sample 0: heatmap exactly on the box -> hit for every t > 0; t = 0 keeps the whole 10x10
    # image: IoU 16/100, miss. Sample 1: heatmap off the box, IoU 4/28 at best: always a miss.
    truth = np.array([[2, 2, 6, 6]])
    heatmaps = [block_heatmap((10, 10), (2, 2, 6, 6)), block_heatmap((10, 10), (0, 0, 4, 4))]
    curve = L.box_accuracy_curve(heatmaps, [truth, truth])
    assert curve.shape == (1, 100)
    assert curve[0, 0] == 0.0
    np.testing.assert_array_equal(curve[0, 1:], 0.5)
    result = L.max_box_acc(heatmaps, [truth, truth])
    assert result["max_box_acc"] == 0.5 and result["best_threshold"] == 0.01


def test_threshold_sweep_on_rings():
    # Ground truth = the 4x4 ring. Boxes by cam threshold t (normalized map = raw map):
    #   t = 0: 8x8 (IoU 16/64 = .25); 0 < t <= .3: 6x6 (IoU 16/36 = .44);
    #   .3 < t <= .6: 4x4 (IoU 1); t > .6: 2x2 (IoU 4/16 = .25).
    truth = [np.array([[2, 2, 6, 6]])]
    curve = L.box_accuracy_curve([rings_heatmap()], truth, iou_thresholds=(0.3, 0.5, 0.7))
    t = THRESHOLDS
    np.testing.assert_array_equal(curve[0], (t > 0) & (t <= 0.6))
    np.testing.assert_array_equal(curve[1], (t > 0.3) & (t <= 0.6))
    np.testing.assert_array_equal(curve[2], (t > 0.3) & (t <= 0.6))
    v2 = L.max_box_acc_v2([rings_heatmap()], truth)
    assert v2["max_box_acc_v2"] == 1.0
    assert v2["best_thresholds"] == {0.3: 0.01, 0.5: 0.31, 0.7: 0.31}


def test_v2_uses_every_component_and_v1_the_largest():
    # The big blob is wrong, the small one is right.
    heatmap = block_heatmap((20, 20), (10, 10, 20, 20))
    heatmap[0:3, 0:3] = 1.0
    truth = [np.array([[0, 0, 3, 3]])]
    assert L.max_box_acc([heatmap], truth)["max_box_acc"] == 0.0
    v2 = L.max_box_acc_v2([heatmap], truth)
    assert v2["per_iou"] == {0.3: 1.0, 0.5: 1.0, 0.7: 1.0}


def test_any_ground_truth_box_counts():
    heatmap = block_heatmap((10, 10), (5, 5, 9, 9))
    truth = [np.array([[0, 0, 3, 3], [5, 5, 9, 9]])]
    assert L.max_box_acc([heatmap], truth)["max_box_acc"] == 1.0


def test_heatmaps_are_resized_to_the_image():
    # A 4x4 map with its top-left 2x2 hot is a 16x16 box on a 32x32 image.
    heatmap = block_heatmap((4, 4), (0, 0, 2, 2))
    truth = [np.array([[0, 0, 16, 16]])]
    result = L.corloc_from_heatmaps([heatmap], truth, image_sizes=[(32, 32)], cam_threshold=0.5)
    assert result["corloc"] == 1.0
    # Without resizing, the 2x2 box on the 4x4 map misses the 16x16 box.
    assert L.corloc_from_heatmaps([heatmap], truth, cam_threshold=0.5)["corloc"] == 0.0


def test_corloc_averages_per_class_then_over_classes():
    truth = np.array([[2, 2, 6, 6]])
    good = block_heatmap((10, 10), (2, 2, 6, 6))
    bad = block_heatmap((10, 10), (0, 0, 2, 2))
    heatmaps = [good, bad, bad, good]
    classes = [0, 0, 0, 1]  # class 0: 1 of 3, class 1: 1 of 1
    result = L.corloc_from_heatmaps(heatmaps, [truth] * 4, classes=classes)
    assert result["per_class"] == {0: pytest.approx(1 / 3), 1: 1.0}
    assert result["corloc"] == pytest.approx(2 / 3)
    assert L.corloc_from_heatmaps(heatmaps, [truth] * 4)["corloc"] == 0.5


def test_bad_input():
    with pytest.raises(ValueError, match="ground-truth"):
        L.max_box_acc([np.zeros((3, 3))], [])
    with pytest.raises(ValueError, match=r"gt_boxes\[0\]"):
        L.max_box_acc([np.zeros((3, 3))], [np.zeros((0, 4))])
