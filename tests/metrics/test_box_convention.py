"""eval.box_convention='wsolevaluation' against a port of clovaai/wsolevaluation's BoxEvaluator
written here from its rules (per threshold: a uint8 copy, cv2.threshold with a strict `>` at
int(t x peak), findContours RETR_TREE, bounding rectangles read as inclusive corners, IoU with
+1, the largest contour by contourArea, (0, 0, 0, 0) for an empty mask)."""

import cv2
import numpy as np
import pytest

from jwsol.metrics import localization as L


def port_boxes(scoremap, thresholds, multi_contour):
    """Per threshold: the boxes [n, 4] (inclusive corners) that wsolevaluation scores."""
    height, width = scoremap.shape
    image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    out = []
    for threshold in thresholds:
        _, binary = cv2.threshold(image, int(threshold * np.max(image)), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            out.append(np.zeros((1, 4)))
            continue
        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        out.append(np.array(boxes, float))
    return out


def port_iou(a, b):
    """Every pair's IoU with the +1 of inclusive pixel corners, 0 where degenerate."""
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.maximum(0, ix) * np.maximum(0, iy)
    area = lambda r: (r[:, 2] - r[:, 0] + 1) * (r[:, 3] - r[:, 1] + 1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def port_accuracy(scoremaps, truths, thresholds, multi_contour, iou_percent):
    """num_correct / cnt per cam threshold [T] (BoxEvaluator.accumulate, then compute)."""
    correct = np.zeros(len(thresholds))
    for scoremap, truth in zip(scoremaps, truths):
        for t, boxes in enumerate(port_boxes(scoremap, thresholds, multi_contour)):
            if port_iou(boxes, truth).max() >= iou_percent / 100:
                correct[t] += 1
    return correct / len(scoremaps)


def random_samples(seed, count, size):
    rng = np.random.default_rng(seed)
    maps, truths = [], []
    for k in range(count):
        if k % 3 == 0:  # noise: many contours, holes, nested components
            heat = rng.random(size)
        else:
            cells = rng.normal(size=(int(rng.integers(3, 9)), int(rng.integers(3, 9))))
            heat = cv2.resize(cells, size[::-1], interpolation=cv2.INTER_LINEAR)
        maps.append(L.normalize_heatmap(heat))
        corner = rng.integers(0, min(size) // 2, size=(2, 2))
        side = rng.integers(3, min(size) // 2, size=(2, 2))
        truth = np.concatenate([corner, corner + side], axis=1).astype(float)
        truths.append(truth[: 1 + k % 2])  # one or two true boxes
    return maps, truths


@pytest.mark.parametrize("seed, size", [(0, (56, 56)), (1, (40, 64)), (2, (96, 72))])
def test_wsolevaluation_convention_reproduces_its_numbers(seed, size):
    thresholds = np.arange(0, 1, 0.01)  # wsolevaluation's cam_threshold_list
    maps, truths = random_samples(seed, 9, size)
    pool = L.BoxAccumulator(1, thresholds, cam_index=50, convention="wsolevaluation")
    for heat, truth in zip(maps, truths):
        pool.add(0, heat, truth)
    metrics, curves = pool.result()
    v1 = port_accuracy(maps, truths, thresholds, multi_contour=False, iou_percent=50)
    np.testing.assert_array_equal(curves["largest"], v1)
    v2 = [port_accuracy(maps, truths, thresholds, True, p) for p in (30, 50, 70)]
    np.testing.assert_array_equal(curves["any"], np.stack(v2))
    assert metrics["max_box_acc"] == v1.max()
    assert metrics["max_box_acc_v2"] == pytest.approx(np.mean([v.max() for v in v2]), abs=1e-12)
    assert metrics["box_convention_wsolevaluation"] == 1.0


def test_the_conventions_differ_by_the_inclusive_corner():
    # A block on columns 2..5, rows 1..3: both conventions give the numbers (2, 1, 6, 4), pixel
    # edges for 'exact' (IoU 1 with the block's edge box), an inclusive corner for
    # wsolevaluation: a 5 x 4 box, IoU 12 / 20 with the block written inclusively (2, 1, 5, 3).
    heat = np.zeros((10, 10), np.float32)
    heat[1:4, 2:6] = 1.0
    thresholds = np.array([0.5])
    for convention in L.CONVENTIONS:
        np.testing.assert_array_equal(
            L.sweep_boxes(heat, thresholds, convention)[1], [[2, 1, 6, 4]]
        )
    largest, _ = L.threshold_hits(heat, [[2, 1, 6, 4]], thresholds, (0.99,), "exact")
    assert largest.all()
    largest, _ = L.threshold_hits(heat, [[2, 1, 5, 3]], thresholds, (0.6, 0.61), "wsolevaluation")
    np.testing.assert_array_equal(largest[:, 0], [True, False])


def test_unknown_convention_is_an_error():
    with pytest.raises(ValueError, match="box_convention='voc'"):
        L.BoxAccumulator(1, np.arange(10) / 10, 5, convention="voc")
