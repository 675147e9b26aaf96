"""benchmarks/conv_speed.py: every faster lowering gives the numbers of the model's ConvStack.

(ConvStack itself is checked against torch in tests/models/test_sliding_window.py.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conv_speed import Im2colConv, conv_pass, tiled_apply

from jwsol.models.sliding_window import REFERENCE_LAYERS, ConvStack
from jwsol.ops.windows import Layer


def random_variables(model, inputs: jax.Array, seed: int, scale: float = 0.3):
    """Variables of `model` with every entry (biases too) from U(-scale, scale)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), inputs)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.uniform(-scale, scale, x.shape), x.dtype), shapes)


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize(
    ("layers", "shape"),
    [
        (REFERENCE_LAYERS, (2, 16, 16, 3)),
        (REFERENCE_LAYERS, (1, 20, 31, 3)),
        # Padding anywhere, strided convs and pools, a 1x1 conv with stride.
        (
            (Layer("conv", 3, 2, 1, 4), Layer("pool", 3, 1, 1), Layer("conv", 1, 2, 0, 3)),
            (2, 13, 10, 2),
        ),
        ((Layer("conv", 4, 1, 2, 2), Layer("conv", 2, 1, 1, 5)), (1, 7, 9, 2)),
    ],
)
def test_im2col_conv_equals_the_model_conv(layers, shape):
    images = jnp.asarray(np.random.default_rng(sum(shape)).standard_normal(shape), jnp.float32)
    model = ConvStack(layers)
    variables = random_variables(model, images, seed=1)
    im2col = ConvStack(layers, conv=Im2colConv)
    assert jax.tree.map(jnp.shape, jax.eval_shape(im2col.init, jax.random.key(0), images)) == (
        jax.tree.map(jnp.shape, variables)
    )
    expected = jax.jit(model.apply)(variables, images)
    out = jax.jit(im2col.apply)(variables, images)
    assert out.shape == expected.shape
    assert relative_error(out, expected) <= 1e-5


@pytest.mark.parametrize(
    ("layers", "shape", "rows_per_tile"),
    [
        (REFERENCE_LAYERS, (2, 33, 29, 3), 4),  # 10 output rows: the last tile is cropped
        (REFERENCE_LAYERS, (1, 16, 16, 3), 1),
        (
            (Layer("conv", 3, 2, 2, 4), Layer("pool", 2, 2), Layer("conv", 3, features=3)),
            (3, 21, 17, 3),
            3,
        ),
        ((Layer("conv", 2, 1, 1, 3), Layer("conv", 1, features=2)), (1, 9, 12, 3), 16),
    ],
)
def test_tiled_pass_equals_the_whole_image_pass(layers, shape, rows_per_tile):
    images = jnp.asarray(np.random.default_rng(7).standard_normal(shape), jnp.float32)
    variables = random_variables(ConvStack(layers), images, seed=8)
    whole = jax.jit(ConvStack(layers).apply)(variables, images)
    tiled = jax.jit(tiled_apply(layers, "im2col", rows_per_tile))(variables, images)
    assert tiled.shape == whole.shape
    assert relative_error(tiled, whole) <= 1e-5
    offered = conv_pass(layers, rows_per_tile=rows_per_tile)(variables, images)
    assert relative_error(offered, whole) <= 1e-5


def test_conv_pass_options():
    padded_inside = (Layer("conv", 3, features=2), Layer("conv", 3, padding=1, features=2))
    with pytest.raises(ValueError, match="only a first conv layer may pad"):
        tiled_apply(padded_inside)
    with pytest.raises(ValueError, match="rows_per_tile"):
        tiled_apply(REFERENCE_LAYERS, rows_per_tile=0)
    images = jnp.asarray(np.random.default_rng(9).standard_normal((1, 12, 12, 3)), jnp.float32)
    variables = random_variables(ConvStack(padded_inside), images, seed=10)
    expected = ConvStack(padded_inside).apply(variables, images)
    whole = conv_pass(padded_inside, rows_per_tile=None, eigen_dots=False)(variables, images)
    assert relative_error(whole, expected) <= 1e-5
