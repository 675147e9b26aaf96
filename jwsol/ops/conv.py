"""2-D convolution lowerings with the numbers of `lax.conv_general_dilated` (NHWC, HWIO).

`conv2d(x, kernel, stride, padding, impl)`:
- 'xla': `lax.conv_general_dilated`, XLA's own convolution (Eigen or YNNPACK on CPU, cuDNN on
  GPU);
- 'im2col': the k*k shifted views of the padded input concatenated along channels, then one
  [N*h*w, k*k*C_in] x [k*k*C_in, C_out] matmul. Its gradient is a matmul and a sum of shifted
  slices, so the whole train step runs on the dot kernels, which XLA:CPU drives near the
  machine's matmul rate where its convolutions are not (docs/speed.md, per layer).

`batch_chunk` > 0 runs either on chunks of that many examples, one after the other, and
concatenates: XLA:CPU's convolution backward grows more than linearly with the batch (a ResNet-18
3x3 layer at 64 px: 13 ms per image at batch 16, 25 at batch 64), so chunks of 16 are faster. The
forward and the input gradient are exactly the unchunked ones; the weight gradient is summed in
another order (float32 rounding).

Which one a model's layer uses is the model's choice (a `conv_impl` field); the default stays
'xla' everywhere, where it was measured no slower. Both give the same numbers within float32
rounding (tests/ops/test_conv.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("xla", "im2col")


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """An int or a pair of ints as (height, width)."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def im2col_patches(x: jax.Array, kernel_hw: tuple[int, int], stride: tuple[int, int]) -> jax.Array:
    """VALID windows of x [N, H, W, C] as [N, h, w, kh * kw * C], rows in (dy, dx, c) order (the
    order of an HWIO kernel reshaped to [kh * kw * C, C_out])."""
    (kh, kw), (sy, sx) = kernel_hw, stride
    height, width = x.shape[1:3]
    h_out, w_out = (height - kh) // sy + 1, (width - kw) // sx + 1
    views = [
        lax.slice(
            x,
            (0, dy, dx, 0),
            (x.shape[0], dy + (h_out - 1) * sy + 1, dx + (w_out - 1) * sx + 1, x.shape[3]),
            (1, sy, sx, 1),
        )
        for dy in range(kh)
        for dx in range(kw)
    ]
    return views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    stride: int | Sequence[int] = 1,
    padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0)),
    impl: str = "xla",
    batch_chunk: int = 0,
) -> jax.Array:
    """x [N, H, W, C_in], kernel [kh, kw, C_in, C_out] -> [N, h, w, C_out]; explicit padding
    ((top, bottom), (left, right)). `impl`: one of IMPLS; `batch_chunk` > 0: that many examples
    at a time (the last chunk may be smaller)."""
    stride, padding = pair(stride), tuple(tuple(p) for p in padding)
    if 0 < batch_chunk < x.shape[0]:
        chunks = [
            conv2d(x[i : i + batch_chunk], kernel, stride, padding, impl)
            for i in range(0, x.shape[0], batch_chunk)
        ]  # unrolled: a lax.map over chunks was 40x slower (docs/speed.md)
        return jnp.concatenate(chunks, axis=0)
    if impl == "xla":
        return lax.conv_general_dilated(
            x, kernel, stride, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    if impl != "im2col":
        raise ValueError(f"conv impl={impl!r}: expected one of {IMPLS}")
    kh, kw, c_in, c_out = kernel.shape
    if any(p for pair in padding for p in pair):
        x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    patches = im2col_patches(x, (kh, kw), stride)
    return jnp.dot(patches, kernel.reshape(kh * kw * c_in, c_out))
