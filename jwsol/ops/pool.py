"""2-D max pooling with the numbers of `flax.linen.max_pool` (XLA's reduce_window), faster to train.

`max_pool(x, window, stride, padding)`: x [N, H, W, C] -> [N, h, w, C], h = (H + pads - k) //
s + 1 (floor mode, padding with -inf), the same values as `nn.max_pool`. Its gradient is the
one XLA derives for `reduce_window` max (`select_and_scatter`: each output's cotangent goes to
the FIRST maximum of its window in row-major order, as torch's `max_pool2d` does too), equal to
the last bit, ties included (the adds run in the same order). It is built from the k*k strided
views of the input instead, because XLA:CPU's `select_and_scatter` is slower than these views
for every pool of our nets (docs/speed.md, "Max pooling"). Reverse mode only
(`jax.custom_vjp`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jwsol.ops.conv import pair


def _padding(padding) -> tuple[tuple[int, int], tuple[int, int]]:
    if padding == "VALID":
        return (0, 0), (0, 0)
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    (top, bottom), (left, right) = padding
    return (int(top), int(bottom)), (int(left), int(right))


def _geometry(shape, window, stride, padding):
    """(padded H, W; out h, w; window kh, kw; stride sh, sw; pads) of an [N, H, W, C] input."""
    (kh, kw), (sh, sw), pads = pair(window), pair(stride), _padding(padding)
    hp, wp = shape[1] + sum(pads[0]), shape[2] + sum(pads[1])
    if hp < kh or wp < kw:
        raise ValueError(f"max_pool: window {(kh, kw)} larger than the padded input {(hp, wp)}")
    return (hp, wp), ((hp - kh) // sh + 1, (wp - kw) // sw + 1), (kh, kw), (sh, sw), pads


def _views(padded: jax.Array, out_hw, window, stride):
    """The k*k strided views [N, h, w, C] of `padded`, window offset (i, j) in row-major order."""
    (h, w), (kh, kw), (sh, sw) = out_hw, window, stride
    n, c = padded.shape[0], padded.shape[3]
    for i in range(kh):
        for j in range(kw):
            yield (i, j), lax.slice(
                padded, (0, i, j, 0), (n, i + sh * (h - 1) + 1, j + sw * (w - 1) + 1, c),
                (1, sh, sw, 1),
            )  # fmt: skip


def _pad_input(x: jax.Array, pads) -> jax.Array:
    if not any(sum(p) for p in pads):
        return x
    low = jnp.array(-jnp.inf, x.dtype)
    return lax.pad(x, low, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, window, stride, padding="VALID") -> jax.Array:
    """Max over each k x k window at stride s: [N, H, W, C] -> [N, h, w, C].

    window, stride: int or (kh, kw), (sh, sw); padding: 'VALID', an int, or ((top, bottom),
    (left, right)), padded with -inf.
    """
    _, out_hw, k, s, pads = _geometry(x.shape, window, stride, padding)
    views = (v for _, v in _views(_pad_input(x, pads), out_hw, k, s))
    return functools.reduce(jnp.maximum, views)


def _forward(x, window, stride, padding):
    return max_pool(x, window, stride, padding), x


def _backward(window, stride, padding, residuals, g):
    """Each output's cotangent to the first maximum of its window (select_and_scatter's rule)."""
    x = residuals
    (hp, wp), out_hw, k, s, pads = _geometry(x.shape, window, stride, padding)
    (h, w), zero = out_hw, jnp.array(0, g.dtype)
    views = list(_views(_pad_input(x, pads), out_hw, k, s))
    # The maxima again from the views' own x: the selection never depends on a second copy,
    # and the residuals are x alone.
    out = functools.reduce(jnp.maximum, (v for _, v in views))
    hits, taken = [], jnp.zeros(out.shape, bool)
    for offset, view in views:
        hit = (view == out) & ~taken
        taken = taken | hit
        hits.append((offset, hit))
    # Offsets last to first: each input then sums its outputs' cotangents in the outputs'
    # row-major order, the order select_and_scatter adds them in (same float rounding).
    # Offset i = q * stride + r sends output row y to input row (y + q) * stride + r: per
    # residue (r_h, r_w) a sum of cell-shifted arrays, then the residues interleaved by a
    # reshape (a strided pad would do it in one op, but XLA's partitioner gets its interior
    # padding wrong when the batch is sharded over devices).
    (kh, kw), (sh, sw) = k, s
    cells = (h + (kh - 1) // sh, w + (kw - 1) // sw)
    by_residue = {}
    for (i, j), hit in reversed(hits):
        (qi, ri), (qj, rj) = divmod(i, sh), divmod(j, sw)
        shifted = jnp.pad(
            jnp.where(hit, g, zero),
            ((0, 0), (qi, cells[0] - h - qi), (qj, cells[1] - w - qj), (0, 0)),
        )
        key = (ri, rj)
        by_residue[key] = shifted + by_residue[key] if key in by_residue else shifted
    empty = jnp.zeros((g.shape[0], *cells, g.shape[3]), g.dtype)  # residues no window reaches
    rows = [
        jnp.stack([by_residue.get((ri, rj), empty) for rj in range(sw)], axis=3) for ri in range(sh)
    ]  # each [N, cells_h, cells_w, sw, C]
    grad = jnp.stack(rows, axis=2).reshape(g.shape[0], cells[0] * sh, cells[1] * sw, -1)
    grad = jnp.pad(
        grad[:, :hp, :wp],
        ((0, 0), (0, max(0, hp - grad.shape[1])), (0, max(0, wp - grad.shape[2])), (0, 0)),
    )
    (top, bottom), (left, right) = pads
    return (grad[:, top : hp - bottom, left : wp - right],)


max_pool.defvjp(_forward, _backward)
