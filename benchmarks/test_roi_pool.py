"""roi_pool throughput against a PyTorch CPU implementation timed in the same run.

torchvision is not installed here, so the reference is the usual pure-PyTorch RoI pooling:
a loop over rois, each cropped from the map and passed through `adaptive_max_pool2d` (for
rois inside the map its bins are torchvision's; the test checks the outputs are equal).
Forward alone and forward + backward (sum of squares), for an AlexNet conv5 map of a 224-px
image with 500 rois and of a ~480-px VOC image with 2000 proposals. The ratio is
torch time / jwsol time (> 1: jwsol faster). Results: a printed table and
benchmarks/results/roi_pool.json (with the machine described).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from jwsol.ops import roi_pool as rp

OUTPUT_SIZE = (6, 6)
SCALE = 1 / 16
CASES = [  # (map side, channels, rois)
    (13, 256, 500),
    (30, 256, 2000),
]
ROUNDS = 3


def torch_roi_pool(features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """features [C, H, W], rois [R, 4] inside the map -> [R, C, ph, pw]."""
    height, width = features.shape[1:]
    pooled = []
    for x1, y1, x2, y2 in torch.round(rois * SCALE).long().tolist():
        x2, y2 = min(x2, width - 1), min(y2, height - 1)
        pooled.append(F.adaptive_max_pool2d(features[:, y1 : y2 + 1, x1 : x2 + 1], OUTPUT_SIZE))
    return torch.stack(pooled)


def make_case(side: int, channels: int, count: int):
    rng = np.random.default_rng(side)
    features = rng.normal(size=(side, side, channels)).astype(np.float32)
    image = side / SCALE
    corner = rng.uniform(0, image * 0.7, (count, 2))
    size = rng.uniform(16, image * 0.3, (count, 2))
    # Far corner at most image - 9 px, so round(x2 * scale) stays on the map and the crop
    # reference needs no clipping (where it would differ from torchvision's).
    rois = np.concatenate([corner, np.minimum(corner + size, image - 9)], 1).astype(np.float32)
    return features, rois


def measure_case(side: int, channels: int, count: int, best_time) -> dict:
    """Check jwsol against the torch reference on one case, then time both."""
    features, rois = make_case(side, channels, count)
    f_jax, r_jax = jnp.asarray(features), jnp.asarray(rois)
    f_torch = torch.from_numpy(features).permute(2, 0, 1).contiguous().requires_grad_(True)
    r_torch = torch.from_numpy(rois)

    forward = jax.jit(lambda f, r: rp.roi_pool(f, r, OUTPUT_SIZE, SCALE))
    backward = jax.jit(jax.grad(lambda f, r: jnp.sum(rp.roi_pool(f, r, OUTPUT_SIZE, SCALE) ** 2)))

    def torch_backward():
        f_torch.grad = None
        (torch_roi_pool(f_torch, r_torch) ** 2).sum().backward()

    ours = np.asarray(forward(f_jax, r_jax))
    theirs = torch_roi_pool(f_torch.detach(), r_torch).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(ours, theirs)
    torch_backward()
    np.testing.assert_allclose(
        np.asarray(backward(f_jax, r_jax)),
        f_torch.grad.permute(1, 2, 0).numpy(),
        rtol=1e-5,
        atol=1e-4,
    )

    with torch.no_grad():
        torch_forward_s = best_time(lambda: torch_roi_pool(f_torch, r_torch), ROUNDS)
    torch_backward_s = best_time(torch_backward, ROUNDS)
    jax_forward_s = best_time(lambda: forward(f_jax, r_jax).block_until_ready(), ROUNDS)
    jax_backward_s = best_time(lambda: backward(f_jax, r_jax).block_until_ready(), ROUNDS)
    return {
        "map": f"{side}x{side}x{channels}",
        "rois": count,
        "jax_forward_s": jax_forward_s,
        "torch_forward_s": torch_forward_s,
        "forward_ratio": torch_forward_s / jax_forward_s,
        "jax_grad_s": jax_backward_s,
        "torch_grad_s": torch_backward_s,
        "grad_ratio": torch_backward_s / jax_backward_s,
    }


def test_roi_pool_against_torch(write_results, report_table, best_time, format_table):
    rows = [measure_case(*case, best_time) for case in CASES]
    columns = [
        ("map", "map", ""),
        ("rois", "rois", "d"),
        ("jax_forward_s", "jwsol fwd s", ".4f"),
        ("torch_forward_s", "torch fwd s", ".4f"),
        ("forward_ratio", "fwd ratio", ".1f"),
        ("jax_grad_s", "jwsol fwd+bwd s", ".4f"),
        ("torch_grad_s", "torch fwd+bwd s", ".4f"),
        ("grad_ratio", "fwd+bwd ratio", ".1f"),
    ]
    report_table(
        "roi_pool: jwsol (JAX) vs PyTorch crop + adaptive_max_pool2d", format_table(rows, columns)
    )
    write_results(
        "roi_pool",
        rows,
        {"output_size": list(OUTPUT_SIZE), "spatial_scale": SCALE, "rounds": ROUNDS},
    )
