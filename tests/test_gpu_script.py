"""benchmarks/gpu.sh at smoke size on the CPU: every step runs and leaves its results; and the
CPU profile tool, benchmarks/profile_step.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_smoke(tmp_path):
    out = tmp_path / "gpu"
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--smoke", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "jax devices: cpu" in (out / "device.log").read_text()
    memory = json.loads((out / "memory_table_smoke.json").read_text())
    assert {r["job"] for r in memory["rows"]} == {"WSDDN", "OICR"}
    assert all(0 < r["float32_gib"] < 8 and 0 < r["bfloat16_gib"] < 8 for r in memory["rows"])
    for dtype in ("float32", "bfloat16"):
        metrics = json.loads((out / f"main_{dtype}" / "eval_metrics.json").read_text())
        assert metrics["step"] > 0 and 0 <= metrics["cls_map"] <= 1
    if (ROOT / "benchmarks" / "test_vs_torch.py").exists():
        assert (out / "vs_torch_float32.log").exists() and (out / "vs_torch_bfloat16.log").exists()
    else:
        assert "not here yet" in (out / "vs_torch.log").read_text()
    summary = (out / "summary.md").read_text()
    assert "Failed steps: none" in summary and "in bfloat16: map" in summary


def test_gpu_script_rejects_an_unknown_argument():
    done = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--fast"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: unknown argument '--fast'; use --smoke and/or --out DIR (--help)"
    ]


@pytest.mark.slow
def test_profile_step_lists_the_ops_of_a_step():
    """benchmarks/profile_step.py at smoke size: thread time per step by op kind, from a trace."""
    env = dict(os.environ, JWSOL_BENCH_SIZE="smoke")
    done = subprocess.run(
        [sys.executable, "benchmarks/profile_step.py", "sliding_window", "--steps", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    total = float(lines[0].split("per step, ")[1].split()[0])
    kinds = lines[lines.index("-- by kind") + 1 : lines.index("-- by op")]
    assert total > 0 and kinds
    assert sum(float(k.split()[0]) for k in kinds) <= total + 0.01 * len(kinds)
    assert any("conv" in k or "ynn" in k for k in kinds)  # the step's convolutions are seen
