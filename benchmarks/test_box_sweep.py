"""The localizer's box-metric sweep per (image, class) sample, against the implementation it
replaced and against clovaai/wsolevaluation's per-threshold contour loop, timed in one run.

A sample: a 12 x 12 score map placed on the image by the localizer's receptive-field geometry
(smooth, CAM-like), min-max normalised, 100 cam thresholds, one true box; at 224 px (the
evaluated resolution, eval.box_max_side) and 56 px. Timed, best of ROUNDS over SAMPLES maps:
- jwsol: `threshold_hits` (MaxBoxAcc and MaxBoxAccV2 hits from one sweep), 'exact' and
  'wsolevaluation' conventions;
- previous: the 3-D ndimage labelling it replaced (tests/metrics/test_localization.py keeps it
  as the reference), with the same IoU step;
- wsolevaluation: its BoxEvaluator loop (ported in tests/metrics/test_box_convention.py), run
  twice per sample as it is for its two evaluators (MaxBoxAcc: largest contour; V2: all).
Ratios are other time / jwsol 'exact' time (> 1: jwsol faster). Results: a printed table and
benchmarks/results/box_sweep.json.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from jwsol.metrics import localization as L
from jwsol.models.localizer import score_map_geometry
from jwsol.ops.boxes_np import iou_matrix

SIDES = (224, 56)
SAMPLES = 8
ROUNDS = 3
THRESHOLDS = np.arange(100) / 100
TESTS = Path(__file__).parent.parent / "tests" / "metrics"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_samples(side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(side)
    samples = []
    for _ in range(SAMPLES):
        score_map = rng.normal(size=(12, 12))
        heat = L.heatmap_to_image(score_map, 192, (side, side), geometry=score_map_geometry())
        corner = rng.integers(0, side // 2, 2)
        truth = np.concatenate([corner, corner + rng.integers(side // 8, side // 2, 2)])
        samples.append((L.normalize_heatmap(heat), truth[None].astype(float)))
    return samples


def previous_hits(reference_sweep, prepared, truth):
    """`threshold_hits` as it was: the reference sweep, then the same IoU step."""
    plane, boxes, pick = reference_sweep(prepared, THRESHOLDS)
    ious = np.asarray(L.V2_IOUS)[:, None]
    largest = np.zeros((len(ious), len(THRESHOLDS)), bool)
    any_box = np.zeros_like(largest)
    best = iou_matrix(boxes, truth).max(axis=1)
    has = pick >= 0
    largest[:, has] = best[pick[has]][None] >= ious
    for d, iou in enumerate(ious[:, 0]):
        any_box[d] = np.bincount(plane[best >= iou], minlength=len(THRESHOLDS)) > 0
    return largest, any_box


def wsol_loop(port, prepared, truth):
    """wsolevaluation's two evaluators on one sample: max IoU per threshold, largest and all."""
    out = []
    for multi_contour in (False, True):
        boxes = port.port_boxes(prepared, THRESHOLDS, multi_contour)
        out.append([port.port_iou(b, truth).max() for b in boxes])
    return out


def test_box_sweep(write_results, report_table, best_time, format_table):
    reference_sweep = _load("test_localization").reference_sweep
    port = _load("test_box_convention")
    rows = []
    for side in SIDES:
        samples = make_samples(side)
        for prepared, truth in samples:  # equal results first
            new = L.threshold_hits(prepared, truth, THRESHOLDS)
            old = previous_hits(reference_sweep, prepared, truth)
            np.testing.assert_array_equal(new[0], old[0])
            np.testing.assert_array_equal(new[1], old[1])

        def run(fn, samples=samples):
            return best_time(lambda: [fn(p, t) for p, t in samples], ROUNDS) / len(samples)

        exact_s = run(lambda p, t: L.threshold_hits(p, t, THRESHOLDS))
        wsol_mode_s = run(
            lambda p, t: L.threshold_hits(p, t, THRESHOLDS, convention="wsolevaluation")
        )
        previous_s = run(lambda p, t: previous_hits(reference_sweep, p, t))
        loop_s = run(lambda p, t: wsol_loop(port, p, t))
        rows.append(
            {
                "side": side,
                "exact_ms": 1e3 * exact_s,
                "wsol_mode_ms": 1e3 * wsol_mode_s,
                "previous_ms": 1e3 * previous_s,
                "wsolevaluation_loop_ms": 1e3 * loop_s,
                "vs_previous": previous_s / exact_s,
                "vs_wsolevaluation_loop": loop_s / exact_s,
            }
        )
    columns = [
        ("side", "px", "d"),
        ("exact_ms", "jwsol exact ms", ".2f"),
        ("wsol_mode_ms", "jwsol wsol ms", ".2f"),
        ("previous_ms", "previous ms", ".2f"),
        ("wsolevaluation_loop_ms", "wsolevaluation ms", ".2f"),
        ("vs_previous", "previous / jwsol", ".1f"),
        ("vs_wsolevaluation_loop", "wsolevaluation / jwsol", ".1f"),
    ]
    report_table(
        "box-metric sweep per sample (100 cam thresholds, MaxBoxAcc + V2 hits)",
        format_table(rows, columns),
    )
    write_results(
        "box_sweep",
        rows,
        {"thresholds": len(THRESHOLDS), "samples": SAMPLES, "rounds": ROUNDS},
    )
    assert all(row["vs_previous"] > 1 for row in rows)


GAP_KEYS = ("max_box_acc", "max_box_acc_v2", *(f"max_box_acc_v2_iou{d}" for d in (30, 50, 70)))


def convention_gap(side: int, random_maps: bool, count: int = 150) -> dict:
    """Both conventions' metrics (percent) on `count` maps whose true box is the largest
    component's box at a random threshold in [0.3, 0.8]: CAM-like or uniform-noise maps."""
    rng = np.random.default_rng(side)
    pools = {c: L.BoxAccumulator(1, THRESHOLDS, 50, c) for c in L.CONVENTIONS}
    for _ in range(count):
        if random_maps:
            heat = rng.random((side, side))
        else:
            score_map = rng.normal(size=(12, 12))
            heat = L.heatmap_to_image(score_map, 192, (side, side), geometry=score_map_geometry())
        prepared = L.normalize_heatmap(heat)
        truth = L.largest_box(prepared, rng.uniform(0.3, 0.8))
        for pool in pools.values():
            pool.add(0, prepared, truth)
    metrics = {c: pool.result()[0] for c, pool in pools.items()}
    row = {"side": side, "maps": "noise" if random_maps else "cam"}
    for key in GAP_KEYS:
        exact, wsol = (100 * metrics[c][key] for c in L.CONVENTIONS)
        row[key] = wsol - exact
    return row


def test_convention_gap(write_results, report_table, format_table):
    rows = [convention_gap(224, False), convention_gap(56, False), convention_gap(56, True)]
    columns = [("side", "px", "d"), ("maps", "maps", "")] + [(k, k, "+.1f") for k in GAP_KEYS]
    report_table(
        "wsolevaluation minus exact, points (150 maps, truth = a largest component's box)",
        format_table(rows, columns),
    )
    write_results("box_convention_gap", rows, {"thresholds": len(THRESHOLDS), "maps": 150})
