"""Max pooling, forward and backward: `jwsol.ops.pool.max_pool` against flax's `nn.max_pool`
(XLA's reduce_window, whose gradient is a select_and_scatter), every pool shape of the jobs'
benchmark steps, and the OICR scenes train step (configs/oicr.py:scenes, the main job) with
each of the two pools in the AlexNet trunk.

Timed alternately in one run after a warm-up, median of ROUNDS; outputs and gradients are
checked equal first. Ratios are flax's time / ours (> 1: ours faster). Results: a table and
benchmarks/results/pool.json. JWSOL_BENCH_SIZE=smoke: one small pool, no OICR step.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jwsol.ops.pool import max_pool

SIZE = os.environ.get("JWSOL_BENCH_SIZE", "default")
ROUNDS = 7 if SIZE != "smoke" else 2
# (name, input shape, window, stride, padding)
POOLS = {
    "smoke": [("tiny 2x2/2", (2, 8, 8, 4), 2, 2, 0)],
    "default": [
        ("sliding window 2x2/2", (32, 26, 26, 32), 2, 2, 0),
        ("AlexNet pool1 3x3/2", (4, 127, 127, 64), 3, 2, 0),
        ("AlexNet pool2 3x3/2", (4, 63, 63, 192), 3, 2, 0),
        ("AlexNet pool5 3x3/2", (4, 31, 31, 256), 3, 2, 0),
        ("ResNet-50 stem 3x3/2 pad 1", (8, 112, 112, 64), 3, 2, 1),
    ],
}


def _measure(median_alternated, name, shape, window, stride, pad) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(np.maximum(rng.standard_normal(shape, dtype=np.float32), 0))  # post-ReLU
    padding = ((pad, pad), (pad, pad))
    pools = {
        "flax": lambda v: nn.max_pool(v, (window,) * 2, (stride,) * 2, padding=padding),
        "ours": lambda v: max_pool(v, window, stride, padding),
    }
    cot = jnp.asarray(rng.standard_normal(pools["flax"](x).shape, dtype=np.float32))
    runs, results = {}, {}
    for key, pool in pools.items():
        forward = jax.jit(pool)
        grad = jax.jit(jax.grad(lambda v, pool=pool: jnp.sum(pool(v) * cot)))
        results[key] = (np.asarray(forward(x)), np.asarray(grad(x)))
        runs[f"{key}_forward"] = lambda f=forward: jax.block_until_ready(f(x))
        runs[f"{key}_gradient"] = lambda g=grad: jax.block_until_ready(g(x))
    for ours, theirs in zip(results["ours"], results["flax"]):
        np.testing.assert_array_equal(ours, theirs)
    ms = {k: v * 1e3 for k, v in median_alternated(runs, ROUNDS).items()}
    row = {"pool": name, "input": "x".join(map(str, shape))}
    row.update({f"{k}_ms": v for k, v in ms.items()})
    row["gradient_ratio"] = ms["flax_gradient"] / ms["ours_gradient"]
    return row


def _oicr_step_row(median_alternated) -> dict:
    """The main job's train step with either pool in the AlexNet trunk, alternated."""
    import test_oicr_step

    from jwsol.models import alexnet

    runs, ours = {}, alexnet.max_pool
    config = str(test_oicr_step.CONFIGS / "oicr.py:scenes")
    try:
        runs["ours"] = test_oicr_step._compiled_step(config)
        alexnet.max_pool = lambda v, k, s: nn.max_pool(v, (k, k), (s, s), padding="VALID")
        runs["flax"] = test_oicr_step._compiled_step(config)
    finally:
        alexnet.max_pool = ours
    ms = {k: v * 1e3 for k, v in median_alternated(runs, 5).items()}  # a run: STEPS steps
    steps = test_oicr_step.STEPS
    return {
        "pool": "OICR scenes train step (main job)",
        "input": "16 x 320 x 320 x 3, 128 proposals",
        "flax_gradient_ms": ms["flax"] / steps,
        "ours_gradient_ms": ms["ours"] / steps,
        "gradient_ratio": ms["flax"] / ms["ours"],
    }


def test_pool(write_results, report_table, format_table, median_alternated):
    rows = [_measure(median_alternated, *pool) for pool in POOLS.get(SIZE, POOLS["default"])]
    if SIZE != "smoke":
        rows.append(_oicr_step_row(median_alternated))
    for row in rows:
        row["load_average_1min"] = round(os.getloadavg()[0], 2)
    columns = [("pool", "pool", ""), ("input", "input", "")]
    columns += [
        (f"{k}_{part}_ms", f"{k} {part} ms", ".2f")
        for part in ("forward", "gradient")
        for k in ("flax", "ours")
    ]
    columns += [
        ("gradient_ratio", "flax / ours (gradient)", ".1f"),
        ("load_average_1min", "load", ".1f"),
    ]
    report_table(
        f"max pooling, median of {ROUNDS} alternated (size {SIZE})", format_table(rows, columns)
    )
    write_results("pool" if SIZE == "default" else f"pool_{SIZE}", rows)
    assert all(row["gradient_ratio"] > 0 for row in rows)
