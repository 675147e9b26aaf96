"""jwsol.ops.conv: every lowering gives lax.conv_general_dilated's outputs and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jwsol.ops.conv import conv2d, im2col_patches

CASES = [  # (input shape, kernel shape, stride, padding)
    ((2, 9, 11, 3), (3, 3, 3, 4), 1, ((1, 1), (1, 1))),  # ResNet's 3x3
    ((1, 13, 13, 2), (3, 3, 2, 5), 2, ((1, 1), (1, 1))),  # strided 3x3
    ((2, 8, 8, 4), (1, 1, 4, 6), 2, ((0, 0), (0, 0))),  # 1x1 downsample shortcut
    ((1, 23, 23, 3), (11, 11, 3, 4), 4, ((2, 2), (2, 2))),  # AlexNet conv1
    ((1, 10, 7, 2), (2, 3, 2, 3), (2, 1), ((0, 1), (2, 0))),  # uneven everything
]


def _reference(x, kernel, stride, padding):
    stride = (stride, stride) if isinstance(stride, int) else stride
    return jax.lax.conv_general_dilated(
        x, kernel, stride, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )  # fmt: skip


@pytest.mark.parametrize(("x_shape", "k_shape", "stride", "padding"), CASES)
def test_im2col_equals_the_plain_convolution(x_shape, k_shape, stride, padding):
    rng = np.random.default_rng(sum(x_shape))
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal(k_shape), jnp.float32)
    expected = _reference(x, kernel, stride, padding)
    out = jax.jit(conv2d, static_argnums=(2, 3, 4))(x, kernel, stride, padding, "im2col")
    assert out.shape == expected.shape
    np.testing.assert_allclose(
        out, expected, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(expected)))
    )

    cotangent = jnp.asarray(rng.standard_normal(expected.shape), jnp.float32)

    def grads(fn):
        return jax.grad(lambda x, k: jnp.sum(fn(x, k) * cotangent), argnums=(0, 1))(x, kernel)

    ours = grads(lambda x, k: conv2d(x, k, stride, padding, "im2col"))
    theirs = grads(lambda x, k: _reference(x, k, stride, padding))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_patches_row_order_is_the_hwio_kernel_order():
    x = jnp.arange(2 * 3 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 3, 2)
    patches = im2col_patches(x, (2, 2), (1, 1))
    # output cell (0, 1) of image 1: rows (0..1) x cols (1..2), channels innermost
    np.testing.assert_array_equal(patches[1, 0, 1], x[1, 0:2, 1:3].reshape(-1))


def test_xla_is_lax_and_unknown_impl_is_an_error():
    x, k = jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1))
    np.testing.assert_array_equal(conv2d(x, k), _reference(x, k, 1, ((0, 0), (0, 0))))
    with pytest.raises(ValueError, match="conv impl='fft'"):
        conv2d(x, k, impl="fft")


@pytest.mark.parametrize(("impl", "chunk"), [("xla", 2), ("xla", 3), ("im2col", 2)])
def test_batch_chunks_equal_the_whole_batch(impl, chunk):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((5, 8, 8, 3)), jnp.float32)  # 5: a short last chunk
    kernel = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)
    pads = ((1, 1), (1, 1))
    expected = _reference(x, kernel, 2, pads)
    np.testing.assert_allclose(conv2d(x, kernel, 2, pads, impl, batch_chunk=chunk), expected,
                               rtol=1e-5, atol=1e-5)  # fmt: skip

    def grad_w(c):
        return jax.grad(lambda k: jnp.sum(conv2d(x, k, 2, pads, impl, c) ** 2))(kernel)

    np.testing.assert_allclose(grad_w(chunk), grad_w(0), rtol=1e-4, atol=1e-4)
