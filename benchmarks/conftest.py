"""Shared by every benchmark: describe the machine, time things, print tables, write results.

Benchmarks take these as fixtures of the same names (`machine_info`, `write_results`,
`report_table`, `format_table`, `best_time`, `matmul_gflops`): each is the function below,
except `machine_info`, which is its result for the session. Results go to
`benchmarks/results/<name>.json` (or `$JWSOL_BENCH_RESULTS/<name>.json`) as {"name", "machine",
"rows", ...extra}; tables registered with `report_table` are printed at the end of the pytest
run (pytest captures test output).
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

# JWSOL_BENCH_RESULTS: another folder for the results (benchmarks/gpu.sh keeps a GPU's apart).
RESULTS_DIR = Path(os.environ.get("JWSOL_BENCH_RESULTS") or Path(__file__).parent / "results")

# Benchmarks import their helper modules (conv_speed.py) by name: pytest's importlib mode does
# not put this folder on sys.path.
sys.path.insert(0, str(Path(__file__).parent))

_TABLES: list[tuple[str, str]] = []


def _cpuinfo() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or platform.machine()}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and "cpu_model" not in info:
            info["cpu_model"] = value
        elif key == "flags" and "cpu_simd" not in info:
            simd = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
            info["cpu_simd"] = [flag for flag in simd if flag in value.split()]
    return info


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False,
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, load, library versions and JAX devices of this run."""
    import jax

    info: dict[str, Any] = {
        **_cpuinfo(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": _memory_gib(),
        # NOTE: the load average says whether other processes shared the cores while we timed.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("jax", "jaxlib", "flax", "numpy", "torch", "pytest-benchmark")
        },
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(device) for device in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "git_commit": _git_commit(),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def write_results(
    name: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None
) -> Path:
    """Write `benchmarks/results/<name>.json` (or $JWSOL_BENCH_RESULTS/<name>.json) with the machine described; returns the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"name": name, "machine": machine_info(), "rows": rows, **(extra or {})}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Plain-text table; columns are (key, header, format spec such as '.2f' or 'd' or '')."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            value = row.get(key)
            line.append("-" if value is None else format(value, spec))
        cells.append(line)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    text = [" ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    text.insert(1, " ".join("-" * width for width in widths))
    return "\n".join(text)


def report_table(title: str, table: str) -> None:
    """Print `table` under `title` in the pytest terminal summary (and right away with -s)."""
    _TABLES.append((title, table))
    print(f"\n{title}\n{table}")


def best_time(fn: Callable[[], Any], rounds: int) -> float:
    """Least wall time of `rounds` calls of `fn`, which must block until its result is ready.

    The minimum is the time least disturbed by other processes on shared cores.
    """
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def median_alternated(runs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each run, called A B A B `rounds` times after one warm-up
    call each (which also compiles); each run must block until its result is ready."""
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


@functools.cache
def _matmuls(size: int) -> tuple[Any, Any, dict[str, Any]]:
    """Operands and compiled matmuls per XLA CPU dot backend, made once per size."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((size, size), dtype=np.float32))
    b = jnp.asarray(rng.standard_normal((size, size), dtype=np.float32))
    variants = {"default": None}
    if jax.default_backend() == "cpu":
        variants["eigen"] = {"xla_cpu_experimental_ynn_fusion_type": ""}
    compiled = {
        name: jax.jit(jnp.matmul).lower(a, b).compile(compiler_options=options)
        for name, options in variants.items()
    }
    for matmul in compiled.values():
        matmul(a, b).block_until_ready()
    return a, b, compiled


def matmul_gflops(size: int = 2048, rounds: int = 5) -> dict[str, float]:
    """GFLOP/s of a [size, size] @ [size, size] float32 matmul in JAX, per XLA CPU dot backend.

    XLA:CPU can run a dot through YNNPACK (its default in jaxlib 0.10) or through Eigen (with
    YNNPACK fusions off); "best" is the better of the two, the machine's figure. Call it
    between the timings it is compared with: on shared cores the rate moves with the load.
    """
    a, b, compiled = _matmuls(size)
    result = {}
    for name, matmul in compiled.items():
        seconds = best_time(lambda matmul=matmul: matmul(a, b).block_until_ready(), rounds)
        result[name] = 2 * size**3 / seconds / 1e9
    result["best"] = max(result.values())
    return result


@pytest.fixture(name="machine_info", scope="session")
def _machine_info_fixture() -> dict[str, Any]:
    return machine_info()


@pytest.fixture(name="write_results", scope="session")
def _write_results_fixture() -> Callable[..., Path]:
    return write_results


@pytest.fixture(name="report_table", scope="session")
def _report_table_fixture() -> Callable[[str, str], None]:
    return report_table


@pytest.fixture(name="best_time", scope="session")
def _best_time_fixture() -> Callable[[Callable[[], Any], int], float]:
    return best_time


@pytest.fixture(name="median_alternated", scope="session")
def _median_alternated_fixture() -> Callable[..., dict[str, float]]:
    return median_alternated


@pytest.fixture(name="format_table", scope="session")
def _format_table_fixture() -> Callable[..., str]:
    return format_table


@pytest.fixture(name="matmul_gflops", scope="session")
def _matmul_gflops_fixture() -> Callable[..., dict[str, float]]:
    return matmul_gflops


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for title, table in _TABLES:
        terminalreporter.write_sep("=", title)
        terminalreporter.write_line(table)
