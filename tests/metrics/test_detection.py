"""VOC AP, CorLoc, per-class NMS detections and proposal recall: hand-worked cases and a straightforward reference
(one global loop over detections, as the devkit describes it) on random data."""

import numpy as np
import pytest

from jwsol.metrics import detection as D


def reference_voc(dets, gts, threshold=0.5, use_07=True):
    """dets: per image (boxes, scores); gts: per image (boxes, difficult). Global loop."""
    flat = [
        (float(s), image, np.asarray(b, float))
        for image, (boxes, scores) in enumerate(dets)
        for b, s in zip(boxes, scores)
    ]
    flat.sort(key=lambda item: -item[0])  # Python's sort is stable
    used = [np.zeros(len(g[0]), bool) for g in gts]
    npos = sum(int(np.sum(~np.asarray(d, bool))) for _, d in gts)
    tp, fp = [], []
    for _, image, box in flat:
        truth, difficult = np.asarray(gts[image][0], float), np.asarray(gts[image][1], bool)
        best, best_j = -1.0, -1
        for j, g in enumerate(truth):
            iw = min(box[2], g[2]) - max(box[0], g[0]) + 1
            ih = min(box[3], g[3]) - max(box[1], g[1]) + 1
            inter = max(iw, 0) * max(ih, 0)
            union = (
                (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
                + (g[2] - g[0] + 1) * (g[3] - g[1] + 1)
                - inter
            )
            if inter / union > best:
                best, best_j = inter / union, j
        if best > threshold and difficult[best_j]:
            tp.append(0)
            fp.append(0)
        elif best > threshold and not used[image][best_j]:
            used[image][best_j] = True
            tp.append(1)
            fp.append(0)
        else:
            tp.append(0)
            fp.append(1)
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    recall = ctp / npos
    precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
    if use_07:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = [pr for r, pr in zip(recall, precision) if r >= t]
            ap += (max(p) if p else 0.0) / 11
    else:
        # Area under the envelope p(r) = max precision at recall >= r, piecewise in r.
        ap, previous = 0.0, 0.0
        for r in sorted(set(recall.tolist())):
            ap += (r - previous) * max(pr for rr, pr in zip(recall, precision) if rr >= r)
            previous = r
    return ap, recall, precision


def hand_case():
    gts = [
        (np.array([[0, 0, 9, 9], [20, 20, 29, 29]]), np.array([False, True])),
        (np.array([[0, 0, 9, 9]]), np.array([False])),
    ]
    dets = [
        (np.array([[0, 0, 9, 9], [0, 0, 9, 9], [20, 20, 29, 29]]), np.array([0.9, 0.8, 0.7])),
        (np.array([[50, 50, 60, 60], [1, 1, 9, 9]]), np.array([0.6, 0.5])),
    ]
    return dets, gts


def test_hand_worked_difficult_and_duplicate():
    dets, gts = hand_case()
    # Order: TP (0.9), duplicate FP (0.8), difficult ignored (0.7), FP (0.6), TP IoU .81 (0.5).
    result = D.evaluate_class(dets, gts, use_07_metric=True)
    np.testing.assert_allclose(result["recall"], [0.5, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(result["precision"], [1.0, 0.5, 0.5, 1 / 3, 0.5])
    assert result["num_positives"] == 2
    # 11-point: t = 0 .. 0.5 reach precision 1 (6 points), t = 0.6 .. 1 only 0.5 (5 points).
    assert result["ap"] == pytest.approx(8.5 / 11)
    # All-point: recall 0 -> 0.5 at envelope 1, 0.5 -> 1 at envelope 0.5.
    assert D.evaluate_class(dets, gts, use_07_metric=False)["ap"] == pytest.approx(0.75)


def test_best_overlap_already_matched_is_a_false_positive():
    # The second detection overlaps G2 by 0.667 but G1 (matched) by 0.818: VOC says FP.
    gts = [(np.array([[0, 0, 9, 9], [3, 0, 12, 9]]), np.array([False, False]))]
    dets = [(np.array([[0, 0, 9, 9], [1, 0, 10, 9]]), np.array([0.9, 0.8]))]
    result = D.evaluate_class(dets, gts)
    np.testing.assert_allclose(result["recall"], [0.5, 0.5])
    np.testing.assert_allclose(result["precision"], [1.0, 0.5])


def test_iou_threshold_is_strict_with_inclusive_pixels():
    # Pixels 0..9 x 0..9 (100) vs 0..9 x 0..4 (50): IoU exactly 0.5 -> not a hit.
    gts = [(np.array([[0, 0, 9, 4]]), np.array([False]))]
    dets = [(np.array([[0, 0, 9, 9]]), np.array([1.0]))]
    assert D.evaluate_class(dets, gts)["ap"] == 0.0
    assert D.evaluate_class(dets, gts, iou_threshold=0.49)["ap"] == pytest.approx(1.0)


def test_voc07_points_are_numpy_arange_floats():
    # Recall exactly 0.3 does not reach the arange point 0.30000000000000004.
    recall = np.array([0.1, 0.2, 0.3])
    precision = np.array([1.0, 1.0, 1.0])
    assert D.voc_ap(recall, precision, True) == pytest.approx(3 / 11)


def test_no_detections_and_no_positives():
    gts = [(np.array([[0, 0, 5, 5]]), np.array([False]))]
    dets = [(np.zeros((0, 4)), np.zeros(0))]
    assert D.evaluate_class(dets, gts)["ap"] == 0.0
    only_difficult = [(np.array([[0, 0, 5, 5]]), np.array([True]))]
    assert np.isnan(D.evaluate_class(dets, only_difficult)["ap"])


def random_class_data(rng, images=30):
    dets, gts = [], []
    for _ in range(images):
        m = rng.integers(0, 4)
        xy = rng.uniform(0, 80, (m, 2))
        truth = np.concatenate([xy, xy + rng.uniform(5, 40, (m, 2))], 1).round()
        difficult = rng.uniform(size=m) < 0.2
        gts.append((truth, difficult))
        k = rng.integers(0, 6)
        near = truth[rng.integers(0, m, k)] if m else np.zeros((k, 4))
        boxes = near + rng.normal(0, 4, (k, 4))
        boxes[rng.uniform(size=k) < 0.3] = rng.uniform(0, 100, 4)
        # Coarse scores give exact ties, which both sides break by input order.
        dets.append((boxes, np.round(rng.uniform(size=k), 1)))
    return dets, gts


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_07", [True, False])
def test_evaluate_class_matches_reference(seed, use_07):
    dets, gts = random_class_data(np.random.default_rng(seed))
    ap, recall, precision = reference_voc(dets, gts, use_07=use_07)
    result = D.evaluate_class(dets, gts, use_07_metric=use_07)
    np.testing.assert_allclose(result["recall"], recall)
    np.testing.assert_allclose(result["precision"], precision)
    assert result["ap"] == pytest.approx(ap, abs=1e-12)


def test_mean_ap_splits_classes_and_skips_classes_without_positives():
    rng = np.random.default_rng(7)
    per_class = [random_class_data(rng, images=12) for _ in range(2)]
    detections, ground_truth = [], []
    for image in range(12):
        det_parts = [per_class[c][0][image] for c in range(2)]
        gt_parts = [per_class[c][1][image] for c in range(2)]
        detections.append(
            D.ImageDetections(
                np.concatenate([d[0].reshape(-1, 4) for d in det_parts]),
                np.concatenate([d[1] for d in det_parts]),
                np.concatenate([np.full(len(d[1]), c) for c, d in enumerate(det_parts)]),
            )
        )
        ground_truth.append(
            D.ImageGroundTruth(
                np.concatenate([g[0].reshape(-1, 4) for g in gt_parts]),
                np.concatenate([np.full(len(g[1]), c) for c, g in enumerate(gt_parts)]),
                np.concatenate([g[1] for g in gt_parts]),
            )
        )
    result = D.mean_ap(detections, ground_truth, 3, ["cat", "dog", "cow"])
    expected = [reference_voc(*per_class[c])[0] for c in range(2)]
    assert result["ap"]["cat"] == pytest.approx(expected[0])
    assert result["ap"]["dog"] == pytest.approx(expected[1])
    assert np.isnan(result["ap"]["cow"])  # no box of class 2 anywhere
    assert result["map"] == pytest.approx(np.mean(expected))
    with pytest.raises(ValueError, match="labels outside"):
        D.mean_ap(detections, ground_truth, 1)


def test_corloc_hand_worked():
    ground_truth = [
        D.ImageGroundTruth(
            np.array([[0, 0, 9, 9], [30, 30, 39, 39]]), np.array([0, 1]), np.array([False, False])
        ),
        D.ImageGroundTruth(np.array([[0, 0, 9, 9]]), np.array([0]), np.array([False])),
        D.ImageGroundTruth(np.array([[0, 0, 9, 9]]), np.array([1]), np.array([True])),
    ]
    detections = [
        # class 0: top box (0.9) hits; class 1: top box (0.8) misses though a lower one hits.
        D.ImageDetections(
            np.array([[0, 0, 9, 9], [0, 0, 5, 5], [30, 30, 39, 39]]),
            np.array([0.9, 0.8, 0.1]),
            np.array([0, 1, 1]),
        ),
        D.ImageDetections(np.array([[50, 50, 60, 60]]), np.array([0.5]), np.array([0])),
        # Image 2 only has a difficult class-1 box: not a positive image, not counted.
        D.ImageDetections(np.array([[0, 0, 9, 9]]), np.array([0.5]), np.array([1])),
    ]
    result = D.corloc(detections, ground_truth, 3)
    assert result["per_class"]["0"] == 0.5  # hit in image 0, miss in image 1
    assert result["per_class"]["1"] == 0.0
    assert np.isnan(result["per_class"]["2"])
    assert result["corloc"] == 0.25
    assert result["outcomes"] == pytest.approx(
        {"hit": 1 / 3, "part": 0.0, "too_large": 0.0, "elsewhere": 2 / 3, "none": 0.0}
    )


def test_corloc_outcomes_sort_the_misses():
    # One image, four positive classes, each a 10x10 true box (inclusive ends, plus_one).
    truth = np.array([[0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9], [60, 0, 69, 9]])
    ground_truth = [D.ImageGroundTruth(truth, np.array([0, 1, 2, 3]), np.zeros(4, bool))]
    detections = [
        D.ImageDetections(
            np.array(
                [
                    [0, 0, 4, 4],  # class 0: 25 px inside its 100 px box, IoU 0.25 -> part
                    [15, 0, 34, 14],  # class 1: 300 px holding all of its box, IoU 1/3 -> too_large
                    [45, 5, 54, 14],  # class 2: IoU 25/175, a quarter inside -> elsewhere
                    [0, 0, 9, 9],  # class 0 again, lower score: the top box decides
                ]
            ),
            np.array([0.9, 0.8, 0.7, 0.1]),
            np.array([0, 1, 2, 0]),
        )
    ]  # class 3: no detection -> none
    result = D.corloc(detections, ground_truth, 4)
    assert result["corloc"] == 0.0
    assert result["outcomes"] == {
        "hit": 0.0, "part": 0.25, "too_large": 0.25, "elsewhere": 0.25, "none": 0.25
    }  # fmt: skip


def test_detect_thresholds_then_suppresses_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float64)
    # class 0: boxes 0 and 1 overlap (IoU 9/11 > 0.4): the lower-scoring one goes;
    # class 1: only box 2 passes the threshold.
    scores = np.array([[0.5, 0.0], [0.6, 0.001], [0.2, 0.3], [0.0005, 0.0]])
    dets = D.detect(scores, boxes, score_threshold=1e-3, nms_iou=0.4)
    np.testing.assert_array_equal(dets.labels, [0, 0, 1])
    np.testing.assert_allclose(dets.scores, [0.6, 0.2, 0.3])
    np.testing.assert_array_equal(dets.boxes, boxes[[1, 2, 2]])
    capped = D.detect(scores, boxes, score_threshold=1e-3, nms_iou=0.4, max_per_class=1)
    np.testing.assert_array_equal(capped.labels, [0, 1])
    none = D.detect(np.zeros((4, 2)), boxes, 1e-3, 0.4)
    assert none.boxes.shape == (0, 4) and len(none.scores) == len(none.labels) == 0


def test_detect_and_top_boxes_take_each_class_its_own_box():
    # Box regression gives every proposal a box per class [R, C, 4]: proposal 0 is the best for
    # both classes but moved differently; class 0's two moved boxes overlap and NMS drops one.
    boxes = np.array(
        [[[0, 0, 10, 10], [50, 50, 60, 60]], [[1, 0, 11, 10], [20, 20, 30, 30]]], np.float64
    )
    scores = np.array([[0.9, 0.8], [0.5, 0.4]])
    dets = D.detect(scores, boxes, score_threshold=1e-3, nms_iou=0.4)
    np.testing.assert_array_equal(dets.labels, [0, 1, 1])
    np.testing.assert_array_equal(dets.boxes, [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]])
    tops = D.top_boxes(scores, boxes, [1, 0])
    np.testing.assert_array_equal(tops.boxes, [[50, 50, 60, 60], [0, 0, 10, 10]])
    np.testing.assert_allclose(tops.scores, [0.8, 0.9])


def test_proposal_recall():
    truth = [np.array([[0, 0, 9, 9], [20, 20, 29, 29]]), np.array([[0, 0, 9, 9]]), np.zeros((0, 4))]
    proposals = [np.array([[0, 0, 9, 4], [21, 21, 29, 29]]), np.zeros((0, 4)), np.ones((3, 4))]
    # Box 1: IoU 0.5 >= 0.5 covered; box 2: 81/100 covered; image 1 has no proposals.
    assert D.proposal_recall(proposals, truth) == pytest.approx(2 / 3)
    assert D.proposal_recall(proposals, truth, iou_threshold=0.6) == pytest.approx(1 / 3)
    # Continuous coordinates (no +1): (5, 0, 15, 10) covers (0, 0, 10, 10) at IoU 50/150.
    props = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)]
    assert D.proposal_recall([props[:2]], gt, plus_one=False) == 0.5
    assert D.proposal_recall([props], gt, plus_one=False) == 1.0
    assert D.proposal_recall([props[:1]], gt, 0.3, plus_one=False) == 0.5


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"detections\[0\] boxes"):
        D.evaluate_class([(np.zeros((2, 3)), np.zeros(2))], [(np.zeros((0, 4)), np.zeros(0))])
    with pytest.raises(ValueError, match="images"):
        D.evaluate_class([], [(np.zeros((0, 4)), np.zeros(0))])
