"""Fixtures shared by every test folder: small made-up data (jwsol.data.fake), never downloads."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax

# Compiled programs persist between runs (most of a test's time is XLA compiling it), so a
# repeated `pytest -m "not slow"` spends its time on the tests. JWSOL_TEST_JAX_CACHE='' disables.
_CACHE = os.environ.get("JWSOL_TEST_JAX_CACHE", os.path.expanduser("~/.cache/jwsol/jax_tests"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# `configs` (configs/common.py) is imported by path from the repository root, like train.py.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest

from jwsol.data import fake


@pytest.fixture(scope="session")
def idx_folder(tmp_path_factory) -> str:
    """The fake MNIST source (jwsol.data.fake.mnist) as IDX files, for the IDX reader's tests."""
    return fake.write_mnist_folder(str(tmp_path_factory.mktemp("idx")))
