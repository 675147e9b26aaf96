"""torchvision's detection post-processing, timed: run by benchmarks/test_eval_vs_torch.py with an
interpreter that has torchvision (Debian's /usr/bin/python3), never imported by jwsol.

    python3 torchvision_detect.py IN.npz OUT.json

IN.npz holds scores [I, R, C], boxes [I, R, 4], score_threshold, nms_iou, rounds. Per image:
every (proposal, class) with score > threshold, then `torchvision.ops.batched_nms` with the class
as the group (per-class NMS in one call). OUT.json: the best seconds over `rounds` passes over
all images, the versions, and the kept (image, proposal, class) triples to check against jwsol.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import torchvision
from torchvision.ops import batched_nms


def detect(scores: torch.Tensor, boxes: torch.Tensor, threshold: float, iou: float):
    """One image: (proposal index [K], class [K]) kept, by descending score."""
    region, label = torch.nonzero(scores > threshold, as_tuple=True)
    keep = batched_nms(boxes[region], scores[region, label], label, iou)
    return region[keep], label[keep]


def main(path_in: str, path_out: str) -> None:
    torch.set_num_threads(2)
    data = np.load(path_in)
    scores = torch.from_numpy(data["scores"])
    boxes = torch.from_numpy(data["boxes"])
    threshold, iou = float(data["score_threshold"]), float(data["nms_iou"])
    best, kept = float("inf"), []
    for _ in range(int(data["rounds"])):
        start = time.perf_counter()
        kept = [detect(s, b, threshold, iou) for s, b in zip(scores, boxes)]
        best = min(best, time.perf_counter() - start)
    triples = [[i, int(r), int(c)] for i, (rs, cs) in enumerate(kept) for r, c in zip(rs, cs)]
    out = {
        "seconds": best,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "kept": triples,
    }
    with open(path_out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
