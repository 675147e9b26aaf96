"""Peak device memory of the WSDDN and OICR train steps at the paper's five scales.

    python benchmarks/memory_table.py [--smoke] [--out DIR]

For each trunk (AlexNet, VGG16), job (WSDDN; OICR with K = 3), scale and train.dtype, the train
step that `train.py` jits for `configs/wsddn.py` / `configs/oicr.py` (paper settings: 2,000
proposals, batch 2, Adam state, the spatial regulariser) is compiled for this machine's default
device without running it, and XLA's compiled memory analysis gives its per-device peak
(`jwsol.training.memory.peak_bytes`). The data pipeline pads every image to a square canvas of
data.image_size; a scale's canvas here is the longer side of a 4:3 image (VOC's usual shape)
whose shorter side is the scale. Prints a Markdown table and writes `memory_table.json` to --out
(default benchmarks/results/). `--smoke`: AlexNet at one small scale, 64 proposals.
`--measure_cpu WSDDN,alexnet,480,float32` runs that one step on the CPU and compares the growth
of the process's peak resident memory during the step with the estimate.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import math
import resource
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jwsol import tasks
from jwsol.training import config as config_lib
from jwsol.training import loop, memory
from jwsol.training.optimizer import make_optimizer

PAPER_SCALES = (480, 576, 688, 864, 1200)
JOBS = {"WSDDN": "configs/wsddn.py", "OICR": "configs/oicr.py"}
PROPOSALS, BATCH = 2000, 2
DTYPES = ("float32", "bfloat16")


def canvas(scale: int) -> int:
    """The square canvas of a 4:3 image whose shorter side is `scale` px."""
    return math.ceil(scale * 4 / 3)


def batch_shapes(size: int, proposals: int, num_classes: int) -> dict:
    """The shapes and dtypes of the batch keys the WSDDN loss reads (`jwsol.data.detection`)."""
    f32, n = np.float32, BATCH
    return {
        "image": jax.ShapeDtypeStruct((n, size, size, 3), f32),
        "proposals": jax.ShapeDtypeStruct((n, proposals, 4), f32),
        "proposal_mask": jax.ShapeDtypeStruct((n, proposals), np.bool_),
        "proposal_scores": jax.ShapeDtypeStruct((n, proposals), f32),
        "labels": jax.ShapeDtypeStruct((n, num_classes), f32),
        "label_weights": jax.ShapeDtypeStruct((n, num_classes), f32),
    }


def compiled_step(config_path: str, backbone: str, size: int, dtype: str, proposals: int):
    """(the compiled train step, its initial state's function of an rng, the batch shapes)."""
    config = config_lib.load(
        config_path,
        {
            "model.backbone": backbone,
            "data.image_size": size,
            "data.max_proposals": proposals,
            "train.batch_size": BATCH,
            "train.dtype": dtype,
        },
    )
    task = tasks.build(config)
    tx, schedule = make_optimizer(config.optimizer, total_steps=1000, steps_per_epoch=100)
    batch = batch_shapes(size, proposals, task.num_classes)

    def init(rng):
        small = {k: jax.numpy.zeros((1, *v.shape[1:]), v.dtype) for k, v in batch.items()}
        variables = task.init_variables(rng, small)
        params = variables.pop("params")
        return loop.TrainState(jax.numpy.zeros((), np.int32), params, variables, tx.init(params))

    rng = jax.random.PRNGKey(0)
    step = jax.jit(functools.partial(loop.train_step, task, tx, schedule), donate_argnums=0)
    return step.lower(jax.eval_shape(init, rng), batch, rng).compile(), init, batch


def step_peak(config_path: str, backbone: str, size: int, dtype: str, proposals: int) -> int:
    """The compiled train step's peak bytes per device (never run)."""
    return memory.peak_bytes(compiled_step(config_path, backbone, size, dtype, proposals)[0])


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure_cpu(job: str, backbone: str, scale: int, dtype: str) -> str:
    """Runs one step on the CPU: the estimate's temporaries and new outputs against how much the
    process's peak resident memory grows during the step (its arguments are resident before)."""
    size = canvas(scale)
    compiled, init, shapes = compiled_step(JOBS[job], backbone, size, dtype, PROPOSALS)
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, size - 200, (BATCH, PROPOSALS, 2))
    batch = {k: np.zeros(v.shape, v.dtype) for k, v in shapes.items()}
    batch["image"] = rng.normal(size=shapes["image"].shape).astype(np.float32)
    batch["proposals"] = np.concatenate([corner, corner + 16 + 184 * rng.random(corner.shape)], -1)
    batch["proposal_mask"][:] = True
    batch["labels"][:, :3] = batch["label_weights"][:] = 1.0
    args = jax.block_until_ready((jax.jit(init)(jax.random.PRNGKey(0)), jax.device_put(batch)))
    # Freed heap that glibc keeps resident would absorb the step's buffers unseen: return it.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _resident_bytes()
    jax.block_until_ready(compiled(*args, jax.random.PRNGKey(1)))
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    stats = compiled.memory_analysis()
    new = stats.temp_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
    return (
        f"{job} {backbone} {scale} ({size} px) {dtype}: estimated peak "
        f"{memory.peak_bytes(compiled) / memory.GIB:.2f} GiB, of which temporaries and new "
        f"outputs {new / memory.GIB:.2f} GiB; peak resident memory grew {growth / memory.GIB:.2f} "
        f"GiB during the step"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="AlexNet at one small scale")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument(
        "--measure_cpu",
        metavar="JOB,TRUNK,SCALE,DTYPE",
        help="run that one step on the CPU and compare its memory with the estimate",
    )
    args = parser.parse_args(argv)
    if args.measure_cpu:
        job, backbone, scale, dtype = args.measure_cpu.split(",")
        print(measure_cpu(job, backbone, int(scale), dtype))
        return
    backbones = ("alexnet",) if args.smoke else ("alexnet", "vgg16")
    scales = (96,) if args.smoke else PAPER_SCALES
    proposals = 64 if args.smoke else PROPOSALS
    device = jax.devices()[0]
    rows = []
    header = "| job | trunk | scale (canvas) | float32 GiB | bfloat16 GiB | bf16 / f32 |"
    print(f"{device.platform}: {device.device_kind}; batch {BATCH}, {proposals} proposals")
    print(header + "\n|---|---|---|---|---|---|")
    for job, path in JOBS.items():
        for backbone in backbones:
            for scale in scales:
                size = canvas(scale)
                start = time.time()
                peaks = {d: step_peak(path, backbone, size, d, proposals) for d in DTYPES}
                f32, bf16 = (peaks[d] / memory.GIB for d in DTYPES)
                rows.append({
                    "job": job, "backbone": backbone, "scale": scale, "canvas": size,
                    "float32_gib": f32, "bfloat16_gib": bf16, "seconds": time.time() - start,
                })  # fmt: skip
                print(
                    f"| {job} | {backbone} | {scale} ({size} px) | {f32:.2f} | {bf16:.2f} | "
                    f"{bf16 / f32:.2f} |",
                    flush=True,
                )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "name": "memory_table",
        "device": {"platform": device.platform, "kind": device.device_kind},
        "jax": jax.__version__,
        "batch": BATCH,
        "proposals": proposals,
        "rows": rows,
    }
    (out / ("memory_table_smoke.json" if args.smoke else "memory_table.json")).write_text(
        json.dumps(result, indent=1)
    )


if __name__ == "__main__":
    main()
