"""COCO results and ground truth through pycocotools, and COCO AP on a hand-worked case."""

from __future__ import annotations

import numpy as np
import pytest

from jwsol.errors import ConfigError
from jwsol.metrics import coco
from jwsol.metrics.detection import ImageDetections, ImageGroundTruth

pycocotools = pytest.importorskip("pycocotools", reason="pycocotools is in the dev extra")


def _dets(boxes, scores, labels):
    return ImageDetections(
        np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64),
        np.asarray(labels, np.int64),
    )  # fmt: skip


def _truth(boxes, labels, difficult=None):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult)
    return ImageGroundTruth(boxes, np.asarray(labels, np.int64), difficult)


def test_box_conversions_are_inverse_and_coco_width_is_x2_minus_x1():
    xyxy = np.array([[10.0, 20.0, 50.0, 80.0], [0.5, 1.5, 2.0, 3.0]])
    xywh = coco.xyxy_to_xywh(xyxy)
    np.testing.assert_allclose(xywh, [[10, 20, 40, 60], [0.5, 1.5, 1.5, 1.5]])
    np.testing.assert_allclose(coco.xywh_to_xyxy(xywh), xyxy)


def test_results_round_trip_through_pycocotools_loadres():
    from pycocotools.coco import COCO

    truth = [_truth([[10, 10, 50, 50]], [0]), _truth([[5, 5, 25, 45], [30, 0, 60, 20]], [1, 2])]
    dets = [
        _dets([[10, 12, 50, 48], [0, 0, 30, 30]], [0.4, 0.9], [0, 2]),
        _dets([[5, 5, 25, 45]], [0.7], [1]),
    ]
    gt = COCO()
    gt.dataset = coco.ground_truth(truth, [(64, 64), (48, 80)], ["a", "b", "c"], ["x", "y"])
    gt.createIndex()
    found = coco.results(dets, [1, 2])
    loaded = gt.loadRes(found)
    anns = loaded.loadAnns(loaded.getAnnIds())
    assert len(anns) == 3
    # Best first per image; category ids are class + 1; bbox and area survive the round trip.
    by_score = sorted(anns, key=lambda a: -a["score"])
    assert [a["category_id"] for a in by_score] == [3, 2, 1]
    np.testing.assert_allclose(by_score[0]["bbox"], [0, 0, 30, 30])
    np.testing.assert_allclose(by_score[2]["bbox"], [10, 12, 40, 36])
    assert by_score[2]["area"] == pytest.approx(40 * 36)
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == ["a", "b", "c"]
    assert gt.loadImgs(2)[0] == {"id": 2, "file_name": "y", "height": 48, "width": 80}


def _hand_case():
    """One class, two true boxes in a 100 x 100 image; detections by score: a false positive,
    A exactly (IoU 1), and a box on B with IoU 600 / 900 = 0.667."""
    truth = [_truth([[10, 10, 50, 50], [60, 60, 90, 90]], [0, 0])]
    dets = [_dets([[70, 10, 90, 30], [10, 10, 50, 50], [60, 60, 90, 80]], [0.9, 0.8, 0.7], [0] * 3)]
    return truth, dets


def test_coco_ap_matches_the_hand_worked_value():
    truth, dets = _hand_case()
    # IoU thresholds 0.50..0.65 (4 of 10): both true boxes found, precision envelope 2/3 at
    # every recall. 0.70..0.95 (6): only A, precision 1/2 up to recall 0.5 (51 of the 101
    # recall points), 0 beyond.
    low, high = 2 / 3, 0.5 * 51 / 101
    metrics = coco.coco_ap(dets, truth, [(100, 100)], ["thing"])
    assert metrics["coco/ap50"] == pytest.approx(low)
    assert metrics["coco/ap75"] == pytest.approx(high)
    assert metrics["coco/ap"] == pytest.approx((4 * low + 6 * high) / 10)


def test_difficult_boxes_neither_count_nor_penalise():
    truth, dets = _hand_case()
    # A second image whose only object is difficult, with a confident detection on it.
    truth.append(_truth([[0, 0, 40, 40]], [0], [True]))
    dets.append(_dets([[0, 0, 40, 40]], [0.95], [0]))
    with_difficult = coco.coco_ap(dets, truth, [(100, 100), (50, 50)], ["thing"])
    assert with_difficult == coco.coco_ap(dets[:1], truth[:1], [(100, 100)], ["thing"])


def test_no_detection_is_zero_ap_without_pycocotools_failing():
    truth = [_truth([[10, 10, 50, 50]], [0])]
    metrics = coco.coco_ap([_dets([], [], [])], truth, [(64, 64)], ["thing"])
    assert metrics == {"coco/ap": 0.0, "coco/ap50": 0.0, "coco/ap75": 0.0}


def test_missing_pycocotools_is_a_config_error_saying_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pycocotools(name, *args, **kwargs):
        if name.startswith("pycocotools"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pycocotools)
    truth, dets = _hand_case()
    with pytest.raises(ConfigError, match="pip install pycocotools.*eval.coco_ap=False"):
        coco.coco_ap(dets, truth, [(100, 100)], ["thing"])
