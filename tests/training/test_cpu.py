"""jwsol.training.cpu: the CPU compiler options and the glibc malloc tuning do what they say."""

import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jwsol.training import cpu

_FAULTS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from jwsol.training import cpu
    if sys.argv[1] == "tuned":
        assert cpu.tune_malloc()
    np.ones(1 << 22).sum()  # warm up: the first 32 MB come from the OS either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        np.ones(1 << 22).sum()  # 32 MB, freed at once
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _page_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
@pytest.mark.slow
def test_tune_malloc_reuses_freed_buffers():
    # Default glibc: each 32 MB buffer is a fresh mmap whose pages fault in again (here ~500
    # faults per buffer, fewer with transparent huge pages); tuned: the freed heap is reused.
    default, tuned = _page_faults("default"), _page_faults("tuned")
    assert default > 20 * 10, default
    assert tuned < default / 10, (tuned, default)


def test_cpu_compiler_options_keep_results():
    options = cpu.cpu_compiler_options()
    # The option is experimental: a jaxlib without it must give None (its defaults), not fail.
    assert options is None or options == cpu._EIGEN
    x = jax.random.normal(jax.random.key(0), (2, 12, 12, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 8))

    def f(x, w):
        y = jax.lax.conv_general_dilated(
            x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.tanh(y.reshape(-1, 8) @ w.reshape(-1, 8).T[:8])

    np.testing.assert_allclose(
        jax.jit(f, compiler_options=options)(x, w), jax.jit(f)(x, w), rtol=1e-5, atol=1e-5
    )


def test_cpu_compiler_options_fall_back_when_xla_refuses(monkeypatch):
    monkeypatch.setattr(cpu, "_EIGEN", {"xla_cpu_no_such_option_anywhere": "1"})
    cpu.cpu_compiler_options.cache_clear()
    try:
        assert cpu.cpu_compiler_options() is None
    finally:
        cpu.cpu_compiler_options.cache_clear()


def test_kernel_options_name_the_kernels():
    assert cpu.kernel_options("ynnpack") is None  # XLA's default
    assert cpu.kernel_options("eigen") == cpu.cpu_compiler_options()
    with pytest.raises(ValueError, match="cpu_kernels='auto'"):
        cpu.kernel_options("auto")  # the loop resolves 'auto' first


@pytest.mark.parametrize("slow", ["ynnpack", "eigen"])
def test_choose_kernels_keeps_the_faster(slow):
    if cpu.cpu_compiler_options() is None:
        pytest.skip("this XLA has no Eigen option: nothing to choose")
    compiled = []

    def jit_for(options):
        name = "ynnpack" if options is None else "eigen"
        compiled.append(name)
        delay = 0.03 if name == slow else 0.0

        def run(x):
            time.sleep(delay)
            return x + 1

        return run

    kernels, seconds = cpu.choose_kernels(jit_for, (jnp.zeros(3),), rounds=2)
    assert compiled == ["ynnpack", "eigen"]
    assert kernels == ("eigen" if slow == "ynnpack" else "ynnpack")
    assert seconds[slow] >= 0.03 > seconds[kernels]
