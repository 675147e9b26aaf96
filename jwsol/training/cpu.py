"""Host-side speed settings for CPU runs: XLA:CPU compiler options and glibc malloc tuning.

Measured on the 2-core development VM (`pytest benchmarks/test_train_step.py`; docs/
sliding_window.md, "Training the localizer in 10 minutes on 2 CPU cores"): the sliding-window
train step at batch 32 took 91 ms with XLA's defaults, 78 with either setting, 65 with both.
The compiler options are per job (`train.cpu_eigen`): WSDDN's step is 1.5x slower with them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

import jax
import jax.numpy as jnp

# NOTE: XLA:CPU sends dots (and, through fusions, convolutions) to YNNPACK by default (jaxlib
# 0.10); with YNNPACK fusions off it uses Eigen, measured faster here for the conv pass
# (tall [pixels, 400] x [400, 400] matmuls) and the sliding-window training step, slower for
# WSDDN's. The option is experimental, hence the check below.
_EIGEN_DOTS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def cpu_compiler_options() -> dict[str, str] | None:
    """XLA options selecting Eigen over YNNPACK on CPU, or None (not CPU / not supported)."""
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(jnp.negative).lower(jnp.zeros(2)).compile(compiler_options=_EIGEN_DOTS)
    except Exception:  # noqa: BLE001  an XLA that does not know the option: run its defaults
        return None
    return dict(_EIGEN_DOTS)


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
