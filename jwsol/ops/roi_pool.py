"""Region-of-interest pooling on NHWC feature maps: `roi_pool` (max) and `roi_align` (bilinear).

Both take one image's `features: [H, W, C]` and `rois: [R, 4]` (x1, y1, x2, y2 in input
pixels; `spatial_scale` maps them onto the feature map) and return `[R, ph, pw, C]`;
`batched_roi_pool` / `batched_roi_align` vmap them over `features: [N, H, W, C]`,
`rois: [N, R, 4]` -> `[N, R, ph, pw, C]`. Padded proposals are fine: every roi gives some
output (a degenerate one pools a 1x1 cell), the caller masks what it does not want.
No gradient flows to `rois` (as in torchvision).

roi_pool matches `torchvision.ops.roi_pool` number for number:
  x1' = round(x1 * scale) (half away from zero, in float32), likewise y1', x2', y2';
  roi_w = max(x2' - x1' + 1, 1), roi_h likewise; bin size roi_h / ph (float32);
  bin i rows [floor(i * bin_h), ceil((i + 1) * bin_h)) shifted by y1' and clipped to [0, H];
  output = max over the bin, 0 for an empty bin.

How roi_pool is computed (no loops over rois): a 2D sparse table. For every pair of levels
(a, b) with 2**a <= H and 2**b <= W we precompute table[a, b, y, x] = max of the 2**a x 2**b
block whose top-left cell is (y, x). A bin [y0, y1) x [x0, x1) is the union of four such
blocks of size 2**floor(log2(y1 - y0)) x 2**floor(log2(x1 - x0)) anchored at its four corners
(they may overlap, max does not mind), so each output value is the max of four gathered
C-vectors. Cost: the table holds (floor(log2 H) + 1) * (floor(log2 W) + 1) * H * W * C values
(16x the feature map for 13x13, 36x for 50x50), built once per image and shared by all rois;
then R * ph * pw * 4 gathers of C values. Maxima are exact, so outputs equal the reference
bit for bit. An int32 table of the same size carries each block's argmax (first maximum in
row-major order), and every max is a `where` selection, so plain autodiff gives torchvision's
gradient: each bin's output gradient goes to its argmax cell, exact ties included. Reverse
mode costs a scatter-add of R * ph * pw * 4 C-vectors into the table, then the selections.

roi_align follows `torchvision.ops.roi_align`: sample points on a regular grid in each bin
(`sampling_ratio` per axis, or ceil(roi_size / output_size) when <= 0), bilinear
interpolation with torchvision's border rules, mean over the samples, `aligned` shifts by
-0.5 px. Interpolation is separable, so each roi becomes two small weight matrices
Ay: [ph, H], Ax: [pw, W] and out = einsum('ph,qw,hwc->pqc'): matrix multiplies, no gathers.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _round_half_away(x: jax.Array) -> jax.Array:
    """C's `round`: halves go away from zero (jnp.round goes to even)."""
    truncated = jnp.trunc(x)
    return jnp.where(jnp.abs(x - truncated) == 0.5, truncated + jnp.sign(x), jnp.round(x))


_MAX_DIVISOR = 64  # bound on output sizes and samples per bin, from `_divide`'s int32 range


def _pow2(k: jax.Array) -> jax.Array:
    """2.0**k as float32 for int32 k in [-252, 254], exactly (a product of two normal floats)."""
    half = k // 2

    def from_exponent(e):
        return jax.lax.bitcast_convert_type((e + 127) << 23, jnp.float32)

    return from_exponent(half) * from_exponent(k - half)


def _divide(x: jax.Array, divisor: int | jax.Array) -> jax.Array:
    """float32 `x / divisor`, correctly rounded (IEEE), for integer divisors in [1, 64].

    NOTE: XLA rewrites a division by a constant into a multiplication by its reciprocal,
    which is off by an ulp in some cases (14 / 6 becomes 2.3333335, not 2.3333333); the
    references then floor/ceil `bin * i` and land on another cell. So we divide in integer
    arithmetic: x = m * 2**e with a 24-bit integer m, and m / divisor is rounded to 24 bits
    (half to even) with an integer remainder. Exact on every backend.
    """
    x = jnp.asarray(x, jnp.float32)
    divisor = jnp.asarray(divisor, jnp.int32)
    bits = jax.lax.bitcast_convert_type(jnp.abs(x), jnp.int32)
    field = bits >> 23
    normal = field > 0
    mantissa = jnp.where(normal, (bits & 0x7FFFFF) | 0x800000, bits & 0x7FFFFF)
    exponent = jnp.where(normal, field - 150, -149)  # |x| = mantissa * 2**exponent
    mantissa_1 = jnp.maximum(mantissa, 1)
    # floor(log2(mantissa / divisor)); the << 6 keeps the quotient >= 1 for divisors <= 64.
    log2_quotient = _floor_log2((mantissa_1 << 6) // divisor) - 6
    shift = 23 - log2_quotient  # in [0, 29]: numerator < 2**24 * 64 fits int32
    numerator = mantissa_1 << shift
    quotient = numerator // divisor
    twice_rest = 2 * (numerator - quotient * divisor)
    round_up = (twice_rest > divisor) | ((twice_rest == divisor) & ((quotient & 1) == 1))
    quotient = quotient + round_up.astype(jnp.int32)
    out = quotient.astype(jnp.float32) * _pow2(exponent - shift)
    out = jnp.where(mantissa == 0, 0.0, out)
    return jnp.where(x < 0, -out, out)


def _floor_log2(n: jax.Array) -> jax.Array:
    """floor(log2(n)) for int32 n >= 1, exactly (no float log)."""
    return jnp.int32(31) - jax.lax.clz(n.astype(jnp.int32))


def _bin_edges(start: jax.Array, end: jax.Array, bins: int, size: int) -> tuple:
    """torchvision's integer bin edges along one axis.

    `start`, `end`: [R] rounded roi edges (float32 holding integers); returns lo, hi: [R, bins]
    int32, clipped to [0, size]; a bin is empty where hi <= lo.
    """
    extent = jnp.maximum(end - start + 1, 1)  # [R]
    bin_size = _divide(extent, bins)  # [R], float32 as in the reference
    index = jnp.arange(bins, dtype=jnp.float32)  # [bins]
    lo = jnp.floor(index[None, :] * bin_size[:, None]) + start[:, None]
    hi = jnp.ceil((index[None, :] + 1) * bin_size[:, None]) + start[:, None]
    return (
        jnp.clip(lo, 0, size).astype(jnp.int32),
        jnp.clip(hi, 0, size).astype(jnp.int32),
    )


def roi_pool(
    features: jax.Array,
    rois: jax.Array,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> jax.Array:
    """Max-pool each roi into a fixed grid, as `torchvision.ops.roi_pool`.

    Args:
      features: [H, W, C] one image's feature map.
      rois: [R, 4] (x1, y1, x2, y2) in input pixels.
      output_size: ph or (ph, pw).
      spatial_scale: feature cells per input pixel (1/16 for AlexNet/VGG conv5).

    Returns:
      [R, ph, pw, C], dtype of `features`.
    """
    _check_inputs(features, rois)
    return _roi_pool(features, rois, _pair(output_size), float(spatial_scale))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _roi_pool(
    features: jax.Array, rois: jax.Array, output_size: tuple[int, int], spatial_scale: float
) -> jax.Array:
    height, width = features.shape[:2]
    empty, a, b, rows, cols = _bin_geometry(
        jax.lax.stop_gradient(rois), output_size, spatial_scale, height, width
    )
    values, argmax = _sparse_table(features)  # [LH, LW, H, W, C] each
    corners = [(values[a, b, y, x], argmax[a, b, y, x]) for y in rows for x in cols]
    best, best_index = corners[0]  # [R, ph, pw, C] each
    for value, index in corners[1:]:
        best, best_index = _max_first(best, best_index, value, index)
    return jnp.where(empty[..., None], jnp.zeros((), features.dtype), best)


def _bin_geometry(rois, output_size, spatial_scale, height, width):
    """Where each bin's four sparse-table blocks are.

    Returns empty [R, ph, pw] bool, level_h [R, ph, 1], level_w [R, 1, pw] and the block
    starts rows = (near, far) [R, ph, 1] each, cols = (near, far) [R, 1, pw] each.
    """
    pooled_h, pooled_w = output_size
    # Coordinates in float32 as in the reference kernel for float32 inputs.
    scaled = rois.astype(jnp.float32) * jnp.float32(spatial_scale)
    x1, y1, x2, y2 = (_round_half_away(scaled[:, k]) for k in range(4))  # [R] each
    row_lo, row_hi = _bin_edges(y1, y2, pooled_h, height)  # [R, ph]
    col_lo, col_hi = _bin_edges(x1, x2, pooled_w, width)  # [R, pw]
    empty = (row_hi <= row_lo)[:, :, None] | (col_hi <= col_lo)[:, None, :]  # [R, ph, pw]
    # Clamp lengths to >= 1 so empty bins index valid cells; their output is replaced by 0.
    row_len = jnp.maximum(row_hi - row_lo, 1)
    col_len = jnp.maximum(col_hi - col_lo, 1)
    level_h = _floor_log2(row_len)  # [R, ph]
    level_w = _floor_log2(col_len)  # [R, pw]
    row_lo = jnp.minimum(row_lo, height - 1)
    col_lo = jnp.minimum(col_lo, width - 1)
    row_far = row_lo + row_len - (1 << level_h)  # [R, ph], start of the block ending at hi
    col_far = col_lo + col_len - (1 << level_w)  # [R, pw]
    rows = (row_lo[:, :, None], row_far[:, :, None])
    cols = (col_lo[:, None, :], col_far[:, None, :])
    return empty, level_h[:, :, None], level_w[:, None, :], rows, cols


def _max_first(value_a, index_a, value_b, index_b):
    """Elementwise max of two candidates; on equal values the smaller flat index (row-major
    first) wins, the cell torchvision's strict `>` scan keeps. A `where`, not `jnp.maximum`,
    so the gradient goes to the chosen cell alone (jnp.maximum splits it on ties)."""
    take_b = (value_b > value_a) | ((value_b == value_a) & (index_b < index_a))
    return jnp.where(take_b, value_b, value_a), jnp.where(take_b, index_b, index_a)


def _shifted_max_first(values, indices, shift, axis):
    """Combine entry i with entry i + shift along `axis` (entries past the end keep their own:
    they are never read)."""
    pad = [(0, 0)] * values.ndim
    pad[axis] = (0, shift)
    tail_values = jax.lax.slice_in_dim(values, shift, values.shape[axis], axis=axis)
    tail_indices = jax.lax.slice_in_dim(indices, shift, indices.shape[axis], axis=axis)
    tail_values = jnp.pad(tail_values, pad, constant_values=-jnp.inf)
    tail_indices = jnp.pad(tail_indices, pad)
    return _max_first(values, indices, tail_values, tail_indices)


def _sparse_table(features: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[H, W, C] -> values, argmax: [LH, LW, H, W, C] each.

    values[a, b, y, x] = max of features[y:y+2^a, x:x+2^b]; argmax holds the flat index
    y' * W + x' of its first maximum in row-major order (int32, not differentiated).
    """
    height, width = features.shape[:2]
    index = jnp.arange(height * width, dtype=jnp.int32).reshape(height, width, 1)
    columns = [(features, jnp.broadcast_to(index, features.shape))]
    for level in range(1, width.bit_length()):  # floor(log2 W) + 1 levels
        columns.append(_shifted_max_first(*columns[-1], 1 << (level - 1), axis=1))
    levels = [(jnp.stack([c[0] for c in columns]), jnp.stack([c[1] for c in columns]))]
    for level in range(1, height.bit_length()):  # rows: axis 1 of [LW, H, W, C]
        levels.append(_shifted_max_first(*levels[-1], 1 << (level - 1), axis=1))
    return jnp.stack([v for v, _ in levels]), jnp.stack([i for _, i in levels])


def batched_roi_pool(
    features: jax.Array,
    rois: jax.Array,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> jax.Array:
    """`roi_pool` over a batch: features [N, H, W, C], rois [N, R, 4] -> [N, R, ph, pw, C]."""
    return jax.vmap(lambda f, r: roi_pool(f, r, output_size, spatial_scale))(features, rois)


def _axis_weights(
    start: jax.Array,
    bin_size: jax.Array,
    grid: jax.Array,
    bins: int,
    max_samples: int,
    size: int,
) -> jax.Array:
    """Bilinear weights along one axis, summed over each bin's sample points.

    `start`, `bin_size`: [R] float32 roi start and bin size in feature cells; `grid`: [R]
    int32 samples per bin used (<= max_samples, the static sample axis).
    Returns [R, bins, size]: weights[r, i, h] = sum over the samples s of bin i of the weight
    that sample's 1-D interpolation puts on cell h (0 for samples outside [-1, size]).
    """
    sample = jnp.arange(max_samples, dtype=jnp.float32)  # [S]
    index = jnp.arange(bins, dtype=jnp.float32)  # [B]
    bin_size = bin_size[:, None, None]  # [R, 1, 1]
    # Same expression and order as the reference: start + i * bin + (s + 0.5) * bin / grid.
    pos = (
        start[:, None, None]
        + index[None, :, None] * bin_size
        + _divide((sample[None, None, :] + 0.5) * bin_size, jnp.maximum(grid, 1)[:, None, None])
    )  # [R, B, S]
    # NOTE: the reference drops a 2-D sample if y or x is outside [-1, size]; that
    # indicator is a product of per-axis indicators, so it folds into each axis' weights.
    use = (sample < grid[:, None, None]) & (pos >= -1.0) & (pos <= size)  # [R, B, S]
    pos = jnp.maximum(pos, 0.0)
    low = jnp.floor(pos).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    frac = jnp.where(at_edge, 0.0, pos - low.astype(jnp.float32))
    use = use.astype(jnp.float32)
    cells = jnp.arange(size)
    weights = ((1.0 - frac) * use)[..., None] * (low[..., None] == cells)
    weights += (frac * use)[..., None] * (high[..., None] == cells)  # [R, B, S, size]
    return jnp.sum(weights, axis=2)


def roi_align(
    features: jax.Array,
    rois: jax.Array,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    max_samples: int | None = None,
) -> jax.Array:
    """Bilinear RoIAlign as `torchvision.ops.roi_align`.

    Args:
      features: [H, W, C].
      rois: [R, 4] (x1, y1, x2, y2) in input pixels.
      output_size: ph or (ph, pw).
      spatial_scale: feature cells per input pixel.
      sampling_ratio: samples per bin and axis; <= 0 means adaptive, ceil(roi_h / ph) and
        ceil(roi_w / pw) per roi, as torchvision.
      aligned: shift the roi by -0.5 cell (pixel-centre model); also lifts the 1-cell minimum.
      max_samples: adaptive mode only: the static cap on samples per bin and axis (a jit needs
        a fixed size). Default: enough for rois up to twice the feature map. A roi needing
        more is sampled at the cap under jit; called eagerly, it raises instead.

    Returns:
      [R, ph, pw, C], dtype of `features`.
    """
    pooled_h, pooled_w = _pair(output_size)
    _check_inputs(features, rois)
    height, width = features.shape[:2]
    if sampling_ratio > _MAX_DIVISOR:
        raise ValueError(f"sampling_ratio must be <= {_MAX_DIVISOR}, got {sampling_ratio}")
    if sampling_ratio > 0:
        max_samples = sampling_ratio
    else:
        if max_samples is None:
            max_samples = max(math.ceil(2 * height / pooled_h), math.ceil(2 * width / pooled_w))
            max_samples = min(max_samples + 1, _MAX_DIVISOR)
        if not 1 <= max_samples <= _MAX_DIVISOR:
            raise ValueError(f"max_samples must be in [1, {_MAX_DIVISOR}], got {max_samples}")
        if not isinstance(rois, jax.core.Tracer) and rois.shape[0] > 0:
            _check_adaptive_samples(
                np.asarray(rois), (pooled_h, pooled_w), spatial_scale, aligned, max_samples
            )
    return _roi_align(
        features,
        rois,
        (pooled_h, pooled_w),
        float(spatial_scale),
        sampling_ratio > 0,
        bool(aligned),
        int(max_samples),
    )


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _roi_align(
    features: jax.Array,
    rois: jax.Array,
    output_size: tuple[int, int],
    spatial_scale: float,
    fixed_grid: bool,
    aligned: bool,
    max_samples: int,
) -> jax.Array:
    """roi_align with `max_samples` samples per bin and axis if `fixed_grid`, else adaptive
    ceil(bin size) samples capped at `max_samples`."""
    pooled_h, pooled_w = output_size
    height, width = features.shape[:2]
    offset = jnp.float32(0.5 if aligned else 0.0)
    scaled = jax.lax.stop_gradient(rois).astype(jnp.float32) * jnp.float32(spatial_scale)
    start_x, start_y, end_x, end_y = (scaled[:, k] - offset for k in range(4))
    roi_w = end_x - start_x
    roi_h = end_y - start_y
    if not aligned:
        roi_w = jnp.maximum(roi_w, 1.0)
        roi_h = jnp.maximum(roi_h, 1.0)
    bin_h = _divide(roi_h, pooled_h)  # [R]
    bin_w = _divide(roi_w, pooled_w)
    if fixed_grid:
        grid_h = grid_w = jnp.full(roi_h.shape, max_samples, jnp.int32)
    else:
        # Clip before the int cast: a huge roi's ceil does not fit int32.
        grid_h = jnp.clip(jnp.ceil(bin_h), -1, max_samples).astype(jnp.int32)
        grid_w = jnp.clip(jnp.ceil(bin_w), -1, max_samples).astype(jnp.int32)

    weights_h = _axis_weights(start_y, bin_h, grid_h, pooled_h, max_samples, height)  # [R, ph, H]
    weights_w = _axis_weights(start_x, bin_w, grid_w, pooled_w, max_samples, width)  # [R, pw, W]
    count = jnp.maximum(grid_h * grid_w, 1).astype(jnp.float32)  # [R]; empty grid -> zeros
    weights_h = weights_h / count[:, None, None]
    # HIGHEST: keep float32 matmuls exact-ish on GPUs/TPUs that would otherwise use TF32/bf16.
    return jnp.einsum(
        "rph,rqw,hwc->rpqc",
        weights_h.astype(features.dtype),
        weights_w.astype(features.dtype),
        features,
        precision=jax.lax.Precision.HIGHEST,
    )


def _check_adaptive_samples(
    rois: np.ndarray, output_size: tuple[int, int], spatial_scale: float, aligned: bool, cap: int
) -> None:
    """Raise if a concrete roi needs more adaptive samples per bin than the static cap."""
    scaled = rois.astype(np.float32) * np.float32(spatial_scale)
    sizes = scaled[:, 2:] - scaled[:, :2]  # [R, 2] (w, h)
    if not aligned:
        sizes = np.maximum(sizes, 1.0)
    need = np.ceil(sizes / np.float32([output_size[1], output_size[0]])).max()
    if need > cap:
        raise ValueError(
            f"roi_align: a roi needs {int(need)} samples per bin and axis, more than "
            f"max_samples={cap}; pass a larger max_samples (at most {_MAX_DIVISOR}) or a "
            "fixed sampling_ratio"
        )


def batched_roi_align(
    features: jax.Array, rois: jax.Array, output_size: int | tuple[int, int], **options: Any
) -> jax.Array:
    """`roi_align` over a batch: features [N, H, W, C], rois [N, R, 4] -> [N, R, ph, pw, C].

    options: `roi_align`'s keyword arguments (spatial_scale, sampling_ratio, aligned, ...).
    """
    return jax.vmap(lambda f, r: roi_align(f, r, output_size, **options))(features, rois)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or not 1 <= min(pair) <= max(pair) <= _MAX_DIVISOR:
        raise ValueError(
            f"output_size must be an int or (ph, pw) in [1, {_MAX_DIVISOR}], got {size!r}"
        )
    return int(pair[0]), int(pair[1])


def _check_inputs(features: jax.Array, rois: jax.Array) -> None:
    if features.ndim != 3:
        raise ValueError(
            f"features must be [H, W, C] (use the batched_ form for N), got {features.shape}"
        )
    if rois.ndim != 2 or rois.shape[1] != 4:
        raise ValueError(f"rois must be [R, 4] (x1, y1, x2, y2), got {rois.shape}")
