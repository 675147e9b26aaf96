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

_M = np.array([[0xD2511F53], [0xCD9E8D57]], np.uint64)  # round multipliers of words 0, 2
_W = np.array([[0x9E3779B9], [0xBB67AE85]], np.uint64)  # key increments between rounds
_SCRAMBLE_KEY = np.array([[0x3EC8F720], [0x02461E29]], np.uint64)  # mixes a seed into a key
_LOW = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def _philox(key: np.ndarray, counter: np.ndarray) -> np.ndarray:
    """Philox-4x32-10 of counter [4, N] under key [2, N]: [4, N], every array uint64 holding
    32-bit words (so that a 32 x 32 bit product fits)."""
    even, odd = counter[0::2], counter[1::2]  # words (0, 2) are multiplied, (1, 3) mixed in
    for round_ in range(10):
        product = _M * even
        even = (product >> _32)[::-1] ^ odd ^ key  # (hi1 ^ c1 ^ k0, hi0 ^ c3 ^ k1)
        odd = (product & _LOW)[::-1]  # (lo1, lo0)
        if round_ < 9:
            key = (key + _W) & _LOW
    return np.stack([even[0], odd[0], even[1], odd[1]])


def _words(seeds: np.ndarray, calls: int) -> np.ndarray:
    """uint32 [..., 4 * calls]: the generator's first `calls` outputs for each seed [..., 2]."""
    seeds = np.asarray(seeds)
    wide = seeds.reshape(-1, 2).astype(np.int64).view(np.uint64).T  # int32 sign-extended
    counter = np.stack([wide[0] & _LOW, wide[0] >> _32, wide[1] & _LOW, wide[1] >> _32])
    mix = _philox(np.broadcast_to(_SCRAMBLE_KEY, (2, wide.shape[1])), counter)
    # Output k of each seed: key (mix0, mix1), counter (k, 0, mix2, mix3).
    steps = np.tile(np.arange(calls, dtype=np.uint64), wide.shape[1])
    mix = np.repeat(mix, calls, axis=1)
    out = _philox(mix[:2], np.stack([steps, np.zeros_like(steps), mix[2], mix[3]]))
    return out.T.astype(np.uint32).reshape(*seeds.shape[:-1], 4 * calls)


def full_int64(seeds: np.ndarray, count: int) -> np.ndarray:
    """int64 [..., count]: `stateless_random_uniform([count], seed, dtype=int64)` for each
    seed [..., 2]."""
    words = _words(seeds, (count + 1) // 2)[..., : 2 * count].astype(np.uint64)
    return (words[..., 0::2] | (words[..., 1::2] << _32)).view(np.int64)


def full_int32(seeds: np.ndarray, count: int) -> np.ndarray:
    """int32 [..., count]: `stateless_random_uniform([count], seed, dtype=int32)` for each
    seed [..., 2]."""
    return _words(seeds, (count + 3) // 4)[..., :count].view(np.int32)


def split(seeds: np.ndarray, num: int) -> np.ndarray:
    """[..., num, 2]: `tf.random.experimental.stateless_split(seed, num)` for each seed [..., 2]
    (its dtype, int64 or int32, kept)."""
    seeds = np.asarray(seeds)
    draw = full_int64 if seeds.dtype == np.int64 else full_int32
    return draw(seeds, 2 * num).reshape(*seeds.shape[:-1], num, 2)


def fold_in(seeds: np.ndarray, data: int) -> np.ndarray:
    """int32 [..., 2]: `tf.random.experimental.stateless_fold_in(seed, data)` for a Python int
    `data` (an int32 tensor to TensorFlow, so the new seed is int32)."""
    first = full_int32(seeds, 1)
    return np.concatenate([first, np.full_like(first, data)], axis=-1)


def in_range(bits: np.ndarray, low, high) -> np.ndarray:
    """int64 [...]: TensorFlow's int64 uniform in [`low`, `high`) made from its 64 random bits
    `bits` (int64 [...], `full_int64(seed, 1)`): low + bits mod (high - low), unsigned."""
    bits = np.asarray(bits, np.int64).view(np.uint64)
    low = np.broadcast_to(np.asarray(low, np.int64), bits.shape)
    span = np.asarray(high, np.int64).view(np.uint64) - low.view(np.uint64)
    return low + (bits % span).view(np.int64)


def uniform_int64(seeds: np.ndarray, low, high) -> np.ndarray:
    """int64 [...]: `stateless_random_uniform([], seed, low, high, dtype=int64)` for each seed
    [..., 2], `low` < `high` (int64, broadcast to the seeds' leading shape)."""
    return in_range(full_int64(seeds, 1)[..., 0], low, high)


def uniform_float32(seeds: np.ndarray, low, high) -> np.ndarray:
    """float32 [...]: `stateless_random_uniform([], seed, low, high)` (float32) for each seed
    [..., 2]; `low`, `high` broadcast to the seeds' leading shape."""
    mantissa = _words(seeds, 1)[..., 0] & np.uint32(0x7FFFFF)
    unit = (mantissa | np.uint32(127 << 23)).view(np.float32) - np.float32(1.0)  # [0, 1)
    low32, high32 = np.asarray(low, np.float32), np.asarray(high, np.float32)
    return unit * (high32 - low32) + low32
