"""Where a job's jwsol train step spends its time on XLA:CPU, by kind of HLO op.

    python benchmarks/profile_step.py JOB [--steps N] [--top K]

JOB is one of benchmarks/test_vs_torch.py's jobs (the same step, shapes and optimizer, at the
size JWSOL_BENCH_SIZE picks). The step runs N times under `jax.profiler.trace`; the trace's
events on XLA's worker threads are summed per op name and per kind (the name without its
`.N` suffix: `ynn_fusion` = YNNPACK convolutions and dots, `transpose_copy_fusion` = layout
copies, `*_reduce_fusion` = reductions such as BatchNorm's). Times are thread time per step:
on 2 cores a kind can add up to twice the wall time. Convolutions that run asynchronously on
the intra-op pool may be counted where they are awaited. Numbers: docs/speed.md.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_vs_torch as bench  # the benchmark's own step builders


def op_times(trace_dir: str, steps: int) -> collections.Counter:
    """{op name: ms per step} summed over XLA's worker threads, from the trace in trace_dir."""
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    totals: collections.Counter = collections.Counter()
    for plane in jax.profiler.ProfileData.from_file(path).planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:  # XLA:CPU's worker threads
                continue
            for event in line.events:
                if event.name != "ThunkExecutor::Execute":
                    totals[event.name] += event.duration_ns / 1e6 / steps
    return totals


def by_kind(times: collections.Counter) -> collections.Counter:
    kinds: collections.Counter = collections.Counter()
    for name, ms in times.items():
        kinds[re.sub(r"\.\d+$", "", name)] += ms
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", choices=bench.JOBS)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after 2 warm-up)")
    parser.add_argument("--top", type=int, default=15, help="kinds and ops listed")
    args = parser.parse_args()
    shape = bench.SHAPES[bench.SIZE][args.job]
    config = bench._config(args.job, shape)
    geom = None
    if args.job == "sliding_window":
        geom = bench.tasks.build(config).model.window_geometry(shape.pixels)
    batch = bench.make_batch(args.job, shape, geom)
    run, _, kernels = bench.jwsol_step(args.job, shape, config, batch)
    run(), run()
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(args.steps):
                run()
        times = op_times(trace_dir, args.steps)
    total = sum(times.values())
    print(f"{args.job} ({bench.SIZE}, {kernels} kernels): thread ms per step, {total:.1f} in all")
    for title, table in (("by kind", by_kind(times)), ("by op", times)):
        print(f"-- {title}")
        for name, ms in table.most_common(args.top):
            print(f"{ms:10.2f}  {name}")


if __name__ == "__main__":
    main()
