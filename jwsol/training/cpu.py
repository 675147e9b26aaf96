"""Host-side speed settings for CPU runs: XLA:CPU compiler options and glibc malloc tuning.

Measured on the 2-core development VM (`pytest benchmarks/test_train_step.py`; docs/
sliding_window.md, "Training the localizer in 10 minutes on 2 CPU cores"): the sliding-window
train step at batch 32 took 91 ms with XLA's defaults, 78 with either setting, 65 with both.
Which kernels a step compiles with is `train.cpu_kernels` ('auto' times both on the run's step).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# NOTE: XLA:CPU sends dots and convolutions to YNNPACK by default (jaxlib 0.10); with YNNPACK
# fusions off it uses Eigen. Which is faster depends on the net and on the CPU: on an AMD EPYC
# YNNPACK ran AlexNet's convolutions faster, on an Intel Xeon (AVX-512) Eigen ran the
# localizer's step 1.9x faster and ResNet-50's 1.09x slower (docs/speed.md). So
# `train.cpu_kernels='auto'` times both on the run's own step. The option is experimental,
# hence the check below.
_EIGEN = {"xla_cpu_experimental_ynn_fusion_type": ""}
KERNELS = ("auto", "ynnpack", "eigen")
AUTO_MIN_STEPS = 200  # shorter runs keep XLA's default: timing both would cost more than it saves


@functools.cache
def cpu_compiler_options() -> dict[str, str] | None:
    """XLA options selecting Eigen over YNNPACK on CPU, or None (not CPU / not supported)."""
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(jnp.negative).lower(jnp.zeros(2)).compile(compiler_options=_EIGEN)
    except Exception:  # noqa: BLE001  an XLA that does not know the option: run its defaults
        return None
    return dict(_EIGEN)


def kernel_options(kernels: str) -> dict[str, str] | None:
    """XLA compiler options for `train.cpu_kernels` 'ynnpack' (None: XLA's default) or 'eigen'."""
    if kernels not in KERNELS[1:]:
        raise ValueError(f"cpu_kernels={kernels!r}: expected 'ynnpack' or 'eigen' here")
    return cpu_compiler_options() if kernels == "eigen" else None


def choose_kernels(
    jit_for: Callable[[dict[str, str] | None], Callable], args: tuple, rounds: int = 2
) -> tuple[str, dict[str, float]] | None:
    """Times `jit_for(options)(*args)` with YNNPACK and with Eigen, A B A B after one warm-up
    call each; returns ('ynnpack' | 'eigen', {kernels: median seconds}), or None where there is
    no choice (not CPU, or an XLA without the option). `jit_for` must not donate `args`."""
    eigen = cpu_compiler_options()
    if eigen is None:
        return None
    runs = {"ynnpack": jit_for(None), "eigen": jit_for(eigen)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for name, fn in runs.items():
        jax.block_until_ready(fn(*args))  # compiles, warms up
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            seconds[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(s)) for name, s in seconds.items()}
    return min(medians, key=medians.get), medians


# glibc mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc() -> bool:
    """Keeps freed memory in the process instead of returning it to the OS (glibc only).

    XLA:CPU allocates every step's activations afresh. With glibc's defaults each large buffer
    is a new mmap whose pages the kernel must fault in and zero again: ~12,000 page faults and a
    fifth of the step in the kernel for the sliding-window step. Raising the mmap and trim
    thresholds lets freed buffers be reused (0 faults a step in the benchmark). The cost is that the
    process's resident memory stays at its peak. Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, 1 << 30),
            (_M_TRIM_THRESHOLD, 1 << 30),
            (_M_TOP_PAD, 64 << 20),
        )
    )
