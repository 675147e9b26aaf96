"""Detector evaluation in images per second: jwsol against PyTorch + torchvision's pipeline.

A WSDDN evaluation of one image is (a) the forward pass over the test-time views (scales x
flips) and (b) the post-processing: per class, the proposals scoring above
`eval.score_threshold`, then NMS at `eval.nms_iou` (configs/wsddn.py). Both are timed apart:

- forward: `WSDDNTask.predict` jitted (every view in one XLA program) against the same AlexNet
  WSDDN in torch 2.13 (benchmarks/torch_jobs.py, eval mode, `torch.inference_mode`), views made
  with `F.interpolate` and a flip; alternated A B A B;
- post-processing: `jwsol.metrics.detection.detect` (what WSDDNEvaluator runs per image)
  against `torchvision.ops.batched_nms` (benchmarks/torchvision_detect.py, run by Debian's
  /usr/bin/python3: torchvision is not installed for this interpreter), on the same region
  scores; the kept (image, proposal, class) sets must be equal.

Images per second = images / (forward + post-processing). Results: a table in the pytest
summary and benchmarks/results/eval_vs_torch.json (other sizes: eval_vs_torch_<size>.json).
JWSOL_BENCH_SIZE = smoke | default | voc as in test_vs_torch.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch_jobs as tj

from jwsol import tasks
from jwsol.metrics import detection
from jwsol.training.config import load

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
SIZE = os.environ.get("JWSOL_BENCH_SIZE", "default")
NUM_CLASSES = 20


@dataclasses.dataclass(frozen=True)
class EvalShape:
    images: int  # timed per pass
    pixels: int
    proposals: int
    scales: tuple[float, ...]  # canvas side multipliers
    fc: int = 4096
    nms_images: int = 50  # images of region scores for the post-processing timing


SHAPES = {
    "smoke": EvalShape(1, 128, 64, (1.0,), fc=256, nms_images=4),
    "default": EvalShape(1, 512, 2000, (0.8, 1.0, 1.2)),
    "voc": EvalShape(2, 688, 2000, (480 / 688, 576 / 688, 1.0, 864 / 688, 1200 / 688)),
}
ROUNDS = {"smoke": 2, "default": 2, "voc": 3}


def _has_torchvision() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import torchvision"], check=False, capture_output=True
    )
    return probe.returncode == 0


def _proposals(rng, n: int, r: int, side: int) -> np.ndarray:
    """Proposals crowded around a few objects, as selective search's are: [n, r, 4]."""
    centres = rng.uniform(0.2 * side, 0.8 * side, (n, 8, 2))
    pick = centres[np.arange(n)[:, None], rng.integers(0, 8, (n, r))]
    half = rng.uniform(8, side * 0.3, (n, r, 2))
    jitter = rng.normal(0, side * 0.05, (n, r, 2))
    boxes = np.concatenate([pick + jitter - half, pick + jitter + half], -1)
    return np.clip(boxes, 0, side - 1).astype(np.float32)


def region_scores(rng, n: int, r: int) -> np.ndarray:
    """WSDDN-like scores [n, r, C] (a class softmax x a peaked region softmax); about 10% of
    entries pass the 1e-3 threshold, as in a trained model's output."""
    cls = rng.normal(0, 2, (n, r, NUM_CLASSES))
    det = rng.normal(0, 2.5, (n, r, NUM_CLASSES))
    softmax = lambda x, axis: (
        np.exp(x - x.max(axis, keepdims=True))
        / np.exp(x - x.max(axis, keepdims=True)).sum(axis, keepdims=True)
    )
    return (softmax(cls, 2) * softmax(det, 1)).astype(np.float32)


def _forward_runs(shape: EvalShape):
    config = load(str(Path(HERE.parent, "configs", "wsddn.py")))
    config.data.source = "tfds"  # VOC's 20 class names without reading a VOC folder
    config.model.fc_features = shape.fc
    config.data.max_proposals = shape.proposals
    config.data.resize_mode = "fixed"
    config.data.image_size = shape.pixels
    config.eval.scales = tuple(round(shape.pixels * s) for s in shape.scales)
    config.eval.flip = True
    task = tasks.build(config)
    rng = np.random.default_rng(0)
    n, s, r = shape.images, shape.pixels, shape.proposals
    batch = {
        "image": rng.standard_normal((n, s, s, 3), dtype=np.float32),
        "proposals": _proposals(rng, n, r, s),
        "proposal_mask": np.ones((n, r), bool),
        "proposal_scores": np.zeros((n, r), np.float32),
    }
    variables = jax.jit(task.init_variables)(
        jax.random.key(0), {k: v[:1] for k, v in batch.items()}
    )
    predict = jax.jit(task.final_predict)  # every test view (training's evaluations use one)
    sizes = task.final_views[0]
    device_batch = jax.device_put(batch)

    def run_jwsol() -> None:
        jax.block_until_ready(predict(variables, device_batch)["region_scores"])

    torch.manual_seed(0)
    model = tj.WSDDN(NUM_CLASSES, shape.fc, 0, config.model.pool_size, config.model.spatial_scale)
    model.eval()
    images = torch.from_numpy(batch["image"].transpose(0, 3, 1, 2).copy())
    boxes = torch.from_numpy(batch["proposals"])
    mask = torch.from_numpy(batch["proposal_mask"])

    def run_torch() -> None:
        with torch.inference_mode():
            total = 0
            for size in sizes:
                view = F.interpolate(images, size=(size, size), mode="bilinear")
                scaled = boxes * (size / s)
                for flip in (False, True):
                    x, b = view, scaled
                    if flip:
                        x = torch.flip(view, (3,))
                        b = torch.stack(
                            [size - b[..., 2], b[..., 1], size - b[..., 0], b[..., 3]], -1
                        )
                    total = total + model(x, b, mask)[0]
            return total / (2 * len(sizes))

    return {"jwsol": run_jwsol, "torch": run_torch}, sizes


def _jwsol_detect(scores, boxes, threshold, iou):
    kept = []
    for i, (s, b) in enumerate(zip(scores.astype(np.float64), boxes)):
        det = detection.detect(s, b, threshold, iou)
        # detect returns boxes; map them back to proposal indices for the comparison
        index = {tuple(row): k for k, row in enumerate(b.tolist())}
        kept += [(i, index[tuple(row)], int(c)) for row, c in zip(det.boxes.tolist(), det.labels)]
    return kept


def test_detector_eval_vs_torchvision(
    tmp_path, write_results, report_table, format_table, median_alternated
):
    if not _has_torchvision():
        pytest.skip(f"{SYSTEM_PYTHON} has no torchvision (Debian's python3-torchvision)")
    torch.set_num_threads(2)
    shape = SHAPES[SIZE]
    config = load(str(Path(HERE.parent, "configs", "wsddn.py")))
    threshold, iou = float(config.eval.score_threshold), float(config.eval.nms_iou)
    rng = np.random.default_rng(1)
    scores = region_scores(rng, shape.nms_images, shape.proposals)
    boxes = _proposals(rng, shape.nms_images, shape.proposals, shape.pixels)
    rounds = ROUNDS[SIZE]
    np.savez(tmp_path / "in.npz", scores=scores, boxes=boxes, score_threshold=threshold,
             nms_iou=iou, rounds=rounds)  # fmt: skip
    subprocess.run(
        [SYSTEM_PYTHON, str(HERE / "torchvision_detect.py"), str(tmp_path / "in.npz"),
         str(tmp_path / "out.json")],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    theirs = json.loads((tmp_path / "out.json").read_text())
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        ours = _jwsol_detect(scores, boxes, threshold, iou)
        best = min(best, time.perf_counter() - start)
    assert sorted(map(tuple, theirs["kept"])) == sorted(ours)
    post = {"jwsol": best / shape.nms_images, "torch": theirs["seconds"] / shape.nms_images}

    forward, sizes = _forward_runs(shape)
    per_image = {k: v / shape.images for k, v in median_alternated(forward, rounds).items()}
    row = {
        "pixels": shape.pixels,
        "proposals": shape.proposals,
        "views": 2 * len(sizes),
        "jwsol_forward_s": per_image["jwsol"],
        "torch_forward_s": per_image["torch"],
        "jwsol_post_ms": post["jwsol"] * 1e3,
        "torchvision_post_ms": post["torch"] * 1e3,
        "detections_per_image": len(ours) / shape.nms_images,
        "jwsol_images_per_s": 1 / (per_image["jwsol"] + post["jwsol"]),
        "torch_images_per_s": 1 / (per_image["torch"] + post["torch"]),
    }
    row["speed_ratio"] = row["jwsol_images_per_s"] / row["torch_images_per_s"]
    columns = [
        ("views", "views", "d"),
        ("jwsol_forward_s", "jwsol fwd s", ".2f"),
        ("torch_forward_s", "torch fwd s", ".2f"),
        ("jwsol_post_ms", "jwsol NMS ms", ".1f"),
        ("torchvision_post_ms", "batched_nms ms", ".1f"),
        ("jwsol_images_per_s", "jwsol img/s", ".3f"),
        ("torch_images_per_s", "torch img/s", ".3f"),
        ("speed_ratio", "jwsol/torch speed", ".2f"),
    ]
    notes = (
        f"size {SIZE}: {shape.pixels} px, {shape.proposals} proposals, canvas sides {sizes} x "
        f"flip; NMS on {shape.nms_images} images' scores ({threshold:g} threshold, IoU "
        f"{iou:g}); torchvision {theirs['torchvision']} (torch {theirs['torch']})"
    )
    report_table(
        "detector evaluation: jwsol vs torch + torchvision",
        format_table([row], columns) + "\n" + notes,
    )
    name = "eval_vs_torch" if SIZE == "default" else f"eval_vs_torch_{SIZE}"
    write_results(name, [row], {"size": SIZE, "notes": notes})
