"""Per layer shape: which convolution lowering trains fastest on this machine.

For each conv layer of the jobs in benchmarks/test_vs_torch.py (ResNet-18 small-input at 64 px,
ResNet-50 at 224 px, the AlexNet trunk at 512 px), the layer's forward + backward
(value_and_grad of sum(conv(x, w) * cotangent) over x and w), in four ways:

  xla        lax.conv_general_dilated, XLA:CPU's defaults (YNNPACK dots)
  xla+eigen  the same, compiled with jwsol.training.cpu.cpu_compiler_options() (Eigen)
  im2col     jwsol.ops.conv.conv2d(impl='im2col'): shifted views + one matmul, defaults
  im2col+eigen the same with Eigen dots

and the same layer in torch (F.conv2d forward + backward, NCHW, `TORCH_THREADS` threads).
Timed alternately after a warm-up; the median of `ROUNDS`. Every lowering's output is
checked against `xla`'s. Results: a table and benchmarks/results/conv_layers.json.
JWSOL_BENCH_SIZE=smoke runs two tiny layers (CI).
"""

from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from jwsol.ops.conv import conv2d
from jwsol.training.cpu import cpu_compiler_options

SIZE = os.environ.get("JWSOL_BENCH_SIZE", "default")
TORCH_THREADS = int(os.environ.get("JWSOL_BENCH_TORCH_THREADS", "2"))
ROUNDS = 3 if SIZE != "smoke" else 2
# (name, batch, side, C_in, C_out, kernel, stride, padding)
LAYERS = {
    "smoke": [("tiny3x3", 2, 8, 4, 8, 3, 1, 1), ("tiny1x1s2", 2, 8, 4, 8, 1, 2, 0)],
    "default": [
        ("r18 stem", 16, 64, 3, 64, 3, 1, 1),
        ("r18 layer1", 16, 64, 64, 64, 3, 1, 1),
        ("r18 layer2 s2", 16, 64, 64, 128, 3, 2, 1),
        ("r18 layer2", 16, 32, 128, 128, 3, 1, 1),
        ("r18 layer3", 16, 16, 256, 256, 3, 1, 1),
        ("r18 layer4", 16, 8, 512, 512, 3, 1, 1),
        ("r18 down3 1x1", 16, 32, 128, 256, 1, 2, 0),
        ("r50 stem", 8, 224, 3, 64, 7, 2, 3),
        ("r50 l1 3x3", 8, 56, 64, 64, 3, 1, 1),
        ("r50 l1 1x1", 8, 56, 64, 256, 1, 1, 0),
        ("r50 l3 3x3", 8, 14, 256, 256, 3, 1, 1),
        ("r50 l3 1x1", 8, 14, 256, 1024, 1, 1, 0),
        ("alex conv1", 2, 512, 3, 64, 11, 4, 2),
        ("alex conv2", 2, 63, 64, 192, 5, 1, 2),
        ("alex conv3", 2, 31, 192, 384, 3, 1, 1),
        ("alex conv4", 2, 31, 384, 256, 3, 1, 1),
    ],
}
VARIANTS = ("xla", "xla+eigen", "im2col", "im2col+eigen")


def _jwsol_grad(impl: str, stride: int, padding: int, eigen: bool, x, w, cotangent):
    pads = ((padding, padding), (padding, padding))

    def loss(x, w):
        return jnp.sum(conv2d(x, w, stride, pads, impl) * cotangent)

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    options = cpu_compiler_options() if eigen else None
    return fn.lower(x, w).compile(compiler_options=options)


def measure(layer) -> dict:
    name, n, side, c_in, c_out, k, stride, pad = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, side, side, c_in), dtype=np.float32)
    w = (rng.standard_normal((k, k, c_in, c_out)) / np.sqrt(k * k * c_in)).astype(np.float32)
    h_out = (side + 2 * pad - k) // stride + 1
    cot = rng.standard_normal((n, h_out, h_out, c_out), dtype=np.float32)
    xj, wj, cj = map(jnp.asarray, (x, w, cot))
    runs, reference = {}, None
    for variant in VARIANTS:
        impl, eigen = variant.split("+")[0], variant.endswith("+eigen")
        compiled = _jwsol_grad(impl, stride, pad, eigen, xj, wj, cj)
        _, (gx, gw) = compiled(xj, wj)
        if reference is None:
            reference = (np.asarray(gx), np.asarray(gw))
        for ours, ref in zip((gx, gw), reference):
            assert np.max(np.abs(np.asarray(ours) - ref)) <= 1e-4 * np.max(np.abs(ref)), variant
        runs[variant] = lambda c=compiled: jax.block_until_ready(c(xj, wj))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    wt = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).requires_grad_(True)
    ct = torch.from_numpy(cot.transpose(0, 3, 1, 2).copy())

    def run_torch():
        xt.grad = wt.grad = None
        (F.conv2d(xt, wt, stride=stride, padding=pad) * ct).sum().backward()

    runs["torch"] = run_torch
    for run in runs.values():
        run()
    seconds = {v: [] for v in runs}
    for _ in range(ROUNDS):
        for v, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[v].append(time.perf_counter() - start)
    flops = 3 * 2 * n * h_out * h_out * c_out * k * k * c_in  # forward + two backward convs
    row = {"layer": name, "shape": f"{n}x{side}x{side}x{c_in}->{c_out} k{k}s{stride}"}
    for v, s in seconds.items():
        row[f"{v}_ms"] = statistics.median(s) * 1e3
    fastest = min(VARIANTS, key=lambda v: row[f"{v}_ms"])
    row.update(
        fastest=fastest,
        gflop=flops / 1e9,
        fastest_gflops=flops / row[f"{fastest}_ms"] * 1e-6,
        fastest_over_torch=row[f"{fastest}_ms"] / row["torch_ms"],
        xla_over_torch=row["xla_ms"] / row["torch_ms"],
        load_average_1min=round(os.getloadavg()[0], 1),
    )
    return row


def test_conv_layers(write_results, report_table, format_table):
    torch.set_num_threads(TORCH_THREADS)
    rows = [measure(layer) for layer in LAYERS.get(SIZE, LAYERS["default"])]
    columns = [("layer", "layer", ""), ("shape", "shape", "")]
    columns += [(f"{v}_ms", f"{v} ms", ".1f") for v in (*VARIANTS, "torch")]
    columns += [
        ("fastest", "fastest", ""),
        ("fastest_gflops", "GF/s", ".1f"),
        ("xla_over_torch", "xla/torch", ".2f"),
        ("fastest_over_torch", "best/torch", ".2f"),
        ("load_average_1min", "load", ".1f"),
    ]
    report_table(
        f"conv layers, forward + backward, median of {ROUNDS} alternated (size {SIZE})",
        format_table(rows, columns),
    )
    name = "conv_layers" if SIZE == "default" else f"conv_layers_{SIZE}"
    write_results(name, rows, {"variants": VARIANTS, "torch_threads": TORCH_THREADS})
