"""TensorFlow's stateless random draws for a whole batch of seeds at once, in NumPy.

`tf.random.stateless_*` take one seed per call, so examples that each draw from their own
(seed, index) cost several ops per example. These functions give the same values, bit for bit,
for a batch of seeds [B, 2] in one vectorised pass: the Philox-4x32-10 generator TensorFlow
uses on CPU (algorithm "auto_select"), its seed scrambling (`StatelessRandomGetKeyCounter`:
each seed word as 64 bits, int32 ones sign-extended) and its conversions to integers and float32.
tests/data/test_stateless.py compares every function with TensorFlow's own ops.
"""

from __future__ import annotations

import numpy as np

_W = (np.uint32(0x9E3779B9), np.uint32(0xBB67AE85))  # key increments between rounds
_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))  # round multipliers
_SCRAMBLE_KEY = (0x3EC8F720, 0x02461E29)  # the fixed key that mixes a seed into key, counter


def _philox(key: np.ndarray, counter: np.ndarray) -> np.ndarray:
    """Philox-4x32-10 of counter [..., 4] under key [..., 2] (uint32): uint32 [..., 4]."""
    k0, k1 = key[..., 0], key[..., 1]
    c = [counter[..., i] for i in range(4)]
    with np.errstate(over="ignore"):  # uint32 key increments wrap by design
        for round_ in range(10):
            p0 = _M[0] * c[0].astype(np.uint64)
            p1 = _M[1] * c[2].astype(np.uint64)
            hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), p0.astype(np.uint32)
            hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), p1.astype(np.uint32)
            c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
            if round_ < 9:
                k0, k1 = k0 + _W[0], k1 + _W[1]
    return np.stack(c, axis=-1)


def _words(seeds: np.ndarray, calls: int) -> np.ndarray:
    """uint32 [B, 4 * calls]: the generator's first `calls` outputs for each seed [B, 2]."""
    wide = np.asarray(seeds).astype(np.int64).view(np.uint64)  # int32 words sign-extended
    words = np.stack([wide, wide >> np.uint64(32)], axis=-1).astype(np.uint32)  # (low, high)
    fixed = np.broadcast_to(np.array(_SCRAMBLE_KEY, np.uint32), wide.shape)
    mix = _philox(fixed, words.reshape(len(wide), 4))  # (s0 low, s0 high, s1 low, s1 high)
    key = mix[:, None, :2]
    step = np.arange(calls, dtype=np.uint32)[None, :]  # counter (step, 0, mix2, mix3)
    counter = np.stack(np.broadcast_arrays(step, 0, mix[:, None, 2], mix[:, None, 3]), axis=-1)
    return _philox(key, counter.astype(np.uint32)).reshape(len(seeds), 4 * calls)


def full_int64(seeds: np.ndarray, count: int) -> np.ndarray:
    """int64 [B, count]: `stateless_random_uniform([count], seed, dtype=int64)` for each seed."""
    words = _words(seeds, (count + 1) // 2)[:, : 2 * count].astype(np.uint64)
    return (words[:, 0::2] | (words[:, 1::2] << np.uint64(32))).view(np.int64)


def full_int32(seeds: np.ndarray, count: int) -> np.ndarray:
    """int32 [B, count]: `stateless_random_uniform([count], seed, dtype=int32)` for each seed."""
    return _words(seeds, (count + 3) // 4)[:, :count].view(np.int32)


def split(seeds: np.ndarray, num: int) -> np.ndarray:
    """[B, num, 2]: `tf.random.experimental.stateless_split(seed, num)` for each seed [B, 2]
    (its dtype, int64 or int32, kept)."""
    seeds = np.asarray(seeds)
    draw = full_int64 if seeds.dtype == np.int64 else full_int32
    return draw(seeds, 2 * num).reshape(len(seeds), num, 2)


def fold_in(seeds: np.ndarray, data: int) -> np.ndarray:
    """int32 [B, 2]: `tf.random.experimental.stateless_fold_in(seed, data)` for a Python int
    `data` (an int32 tensor to TensorFlow, so the new seed is int32)."""
    return np.stack([full_int32(seeds, 1)[:, 0], np.full(len(seeds), data, np.int32)], axis=-1)


def uniform_int64(seeds: np.ndarray, low, high) -> np.ndarray:
    """int64 [B]: `stateless_random_uniform([], seed, low, high, dtype=int64)` for each seed,
    `low` < `high` (int64 scalars or [B])."""
    bits = full_int64(seeds, 1)[:, 0].view(np.uint64)
    low = np.broadcast_to(np.asarray(low, np.int64), bits.shape)
    span = np.asarray(high, np.int64).view(np.uint64) - low.view(np.uint64)
    return low + (bits % span).view(np.int64)


def uniform_float32(seeds: np.ndarray, low: float, high: float) -> np.ndarray:
    """float32 [B]: `stateless_random_uniform([], seed, low, high)` (float32) for each seed."""
    mantissa = _words(seeds, 1)[:, 0] & np.uint32(0x7FFFFF)
    unit = (mantissa | np.uint32(127 << 23)).view(np.float32) - np.float32(1.0)  # [0, 1)
    low32, high32 = np.float32(low), np.float32(high)
    return unit * (high32 - low32) + low32
