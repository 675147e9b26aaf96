"""Fixtures shared by every test folder: small made-up data (jwsol.data.fake), never downloads."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
