"""The NumPy batch draws equal TensorFlow's stateless ops, one seed at a time, bit for bit."""

import numpy as np
import pytest
import tensorflow as tf

from jwsol.data import stateless


def _seeds(dtype, n=64):
    """Seeds with words past 32 bits and negative ones (TensorFlow keeps the low 32 bits)."""
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    seeds = rng.integers(info.min, info.max, (n, 2), dtype=dtype, endpoint=True)
    seeds[:4] = [[0, 0], [0, 1], [7, 123456], [-1, info.max]]
    return seeds


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_split_and_fold_in(dtype):
    seeds = _seeds(dtype)
    for num in (1, 2, 3, 4):
        want = [tf.random.experimental.stateless_split(s, num).numpy() for s in seeds]
        got = stateless.split(seeds, num)
        assert got.dtype == want[0].dtype
        np.testing.assert_array_equal(got, np.stack(want))
    want = [tf.random.experimental.stateless_fold_in(s, 1).numpy() for s in seeds]
    got = stateless.fold_in(seeds, 1)
    assert got.dtype == want[0].dtype
    np.testing.assert_array_equal(got, np.stack(want))


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_uniform_int64_with_per_seed_bounds(dtype):
    seeds = _seeds(dtype)
    rng = np.random.default_rng(1)
    low = rng.integers(-40, 40, len(seeds))
    high = low + rng.integers(1, 70, len(seeds))
    high[:3] = low[:3] + [1, 2**40, 3]  # one value; a range past 32 bits
    want = [
        tf.random.stateless_uniform([], s, lo, hi, dtype=tf.int64).numpy()
        for s, lo, hi in zip(seeds, low, high, strict=True)
    ]
    got = stateless.uniform_int64(seeds, low, high)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    scalar = stateless.uniform_int64(seeds, 0, 60000)  # scalar bounds broadcast
    want = [tf.random.stateless_uniform([], s, 0, 60000, dtype=tf.int64).numpy() for s in seeds]
    np.testing.assert_array_equal(scalar, want)


@pytest.mark.parametrize("bounds", [(-15.0, 15.0), (0.75, 1.25), (0.0, 1.0), (-0.3, 7.1)])
def test_uniform_float32(bounds):
    seeds = _seeds(np.int64, n=200)
    want = [tf.random.stateless_uniform([], s, *bounds, dtype=tf.float32).numpy() for s in seeds]
    got = stateless.uniform_float32(seeds, *bounds)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_philox_known_answer():
    """Random123's published Philox-4x32-10 known-answer vector (counter and key all ones)."""
    ones = np.full((4, 1), 0xFFFFFFFF, np.uint64)
    got = stateless._philox(ones[:2], ones)
    np.testing.assert_array_equal(got[:, 0], [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD])


def test_leading_dimensions_are_independent_seeds():
    """Seeds [B, K, 2] with bounds per column: the same as each column [B, 2] on its own."""
    seeds = _seeds(np.int64, n=24).reshape(8, 3, 2)
    low, high = np.array([-15.0, 0.75, 2.0]), np.array([15.0, 1.25, 9.0])
    got = stateless.uniform_float32(seeds, low, high)
    ints = stateless.uniform_int64(seeds, np.arange(24).reshape(8, 3), 100)
    splits = stateless.split(seeds, 2)
    assert got.shape == ints.shape == (8, 3) and splits.shape == (8, 3, 2, 2)
    for k in range(3):
        column = seeds[:, k]
        np.testing.assert_array_equal(got[:, k], stateless.uniform_float32(column, low[k], high[k]))
        bound = np.arange(24).reshape(8, 3)[:, k]
        np.testing.assert_array_equal(ints[:, k], stateless.uniform_int64(column, bound, 100))
        np.testing.assert_array_equal(splits[:, k], stateless.split(column, 2))
