"""Sliding-window geometry (ops/windows.py) and the sequential reference (ops/window_apply.py)
against brute force and worked cases."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jwsol.models.sliding_window import (
    REFERENCE_LAYERS,
    ConvStack,
    WindowNet,
    conv_params_to_dense,
    reference_layers,
)
from jwsol.ops.window_apply import extract_windows, sliding_window_apply, sliding_window_batches
from jwsol.ops.windows import (
    Layer,
    conv_kernel_to_dense,
    dense_kernel_to_conv,
    dense_layer_index,
    geometry,
    min_input_size,
    output_size,
    receptive_field,
    require_sliding_equivalence,
    sequential_flops,
    stack_flops,
)


def random_stack(
    rng: np.random.Generator,
    *,
    pad_anywhere: bool = False,
    contiguous: bool = False,
    max_features: int = 5,
) -> tuple[Layer, ...]:
    """1-3 random conv/pool layers, a conv covering what is left of a window, 0-2 1x1 convs.

    pad_anywhere: any layer may pad (geometry only); otherwise only a first conv pads.
    contiguous: strides <= kernels, so a window has no pixels the net skips.
    """
    layers = []
    for index in range(rng.integers(1, 4)):
        kind = "conv" if index == 0 or rng.random() < 0.5 else "pool"
        kernel = int(rng.integers(1, 5) if kind == "conv" else rng.integers(2, 4))
        stride = int(rng.integers(1, (kernel if contiguous else 3) + 1))
        if pad_anywhere:
            padding = int(rng.integers(0, kernel // 2 + 1))
        else:
            padding = int(rng.integers(0, 3)) if index == 0 and kind == "conv" else 0
        features = int(rng.integers(1, max_features + 1)) if kind == "conv" else None
        layers.append(Layer(kind, kernel, stride, padding, features))
    layers.append(Layer("conv", int(rng.integers(1, 4)), features=int(rng.integers(2, 7))))
    for _ in range(rng.integers(0, 3)):
        layers.append(Layer("conv", 1, features=int(rng.integers(1, 6))))
    return tuple(layers)


def random_variables(model, images: jax.Array, seed: int, low: float = -0.5, high: float = 0.5):
    """`model`'s variables with every entry (biases too) drawn from U(low, high), via NumPy.

    NOTE: `jax.eval_shape` gives the shapes without running `init`; eager init and jax.random
    would compile a small program per parameter shape, which dominates these tests' time.
    """
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: jnp.asarray(rng.uniform(low, high, x.shape).astype(np.float32)), shapes
    )


def relative_error(actual: jax.Array, expected: jax.Array) -> float:
    return float(jnp.max(jnp.abs(actual - expected)) / jnp.max(jnp.abs(expected)))


# --- geometry: the exercise's worked cases ---------------------------------------------------


def test_reference_net_windows_are_14x14_stride_2():
    # 14x14 crops: conv5 -> 10, pool2 -> 5, conv5 -> 1; size 1 + 4 + 1 + 4*2 = 14, stride 2.
    assert receptive_field(REFERENCE_LAYERS) == (14, 2, 0)
    at16 = geometry(REFERENCE_LAYERS, 16)
    assert (at16.size, at16.stride, at16.offset, at16.count) == (14, 2, 0, 2)
    assert at16.span2d(0, 0) == ((0, 14), (0, 14))
    assert at16.span2d(1, 0) == ((2, 16), (0, 14))
    assert at16.span2d(1, 1) == ((2, 16), (2, 16))
    at28 = geometry(REFERENCE_LAYERS, 28)
    assert at28.count == 8  # (28 - 14) / 2 + 1
    assert at28.span2d(7, 3) == ((14, 28), (6, 20))
    with pytest.raises(IndexError):
        at28.span2d(8, 0)


def test_extra_conv_keeps_the_stride_extra_pool_doubles_it():
    assert receptive_field(reference_layers("conv")) == (18, 2, 0)  # 14 + (5 - 1) * 1
    assert receptive_field(reference_layers("pool")) == (24, 4, 0)  # 6 + 1*2, then 8 + 4*4
    assert geometry(reference_layers("conv"), 28).count == 6  # (28 - 18) // 2 + 1
    assert geometry(reference_layers("pool"), 28).count == 2  # (28 - 24) // 4 + 1


def test_sizes_that_leave_pixels_uncovered_floor():
    # 17 px: windows at 0 and 2 only; the last column is in no window (floor mode).
    geom = geometry(REFERENCE_LAYERS, 17)
    assert geom.count == 2 and geom.span(geom.count - 1)[1] == 16


def test_window_too_large_is_a_clear_error():
    assert min_input_size(REFERENCE_LAYERS) == 14
    with pytest.raises(ValueError, match=r"13 px is too small.*at least 14 px"):
        geometry(REFERENCE_LAYERS, 13)
    images = jnp.zeros((1, 20, 10, 3))  # wide enough rows, too few columns
    with pytest.raises(ValueError, match=r"10 px is too small"):
        sliding_window_apply(lambda p, w: w[:, 0, 0], None, images, REFERENCE_LAYERS)
    with pytest.raises(ValueError, match="bad layer"):
        geometry([Layer("conv", 0)], 5)


def test_min_input_size_is_the_window_for_valid_stacks():
    rng = np.random.default_rng(0)
    for _ in range(50):
        layers = random_stack(rng)
        layers = [dataclasses.replace(layer, padding=0) for layer in layers]
        assert min_input_size(layers) == receptive_field(layers)[0]


def test_closed_form_count_matches_layer_by_layer():
    # count = floor((n + 2 p0 - size) / stride) + 1 when only the first layer pads.
    rng = np.random.default_rng(1)
    for _ in range(200):
        layers = random_stack(rng)
        size, stride, offset = receptive_field(layers)
        for n in range(min_input_size(layers), min_input_size(layers) + 20):
            assert output_size(layers, n) == (n - 2 * offset - size) // stride + 1


@pytest.mark.parametrize("pad_anywhere", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_geometry_against_brute_force(seed, pad_anywhere):
    """Change one input pixel and see which outputs move: exactly the windows that contain it.

    Positive weights, positive inputs and zero biases keep every ReLU open, and a +1000 bump
    wins every max pool it enters, so the outputs that depend on a pixel all grow by >= 1000 *
    min(weight)^depth; the others do not change. When a deeper layer pads, a border window's
    span also covers pixels that reach it only through padding cells: there the outputs that
    move are a subset of the windows that contain the pixel.
    """
    rng = np.random.default_rng(seed + 10 * pad_anywhere)
    layers = random_stack(rng, pad_anywhere=pad_anywhere, contiguous=True, max_features=2)
    height = min_input_size(layers) + int(rng.integers(0, 6))
    width = min_input_size(layers) + int(rng.integers(0, 6))
    model = ConvStack(layers)
    variables = random_variables(model, jnp.zeros((1, height, width, 2)), seed, 0.5, 1.0)
    variables = jax.tree.map(lambda x: x * (x.ndim > 1), variables)  # zero biases
    base = jnp.asarray(rng.uniform(0.5, 1.0, (height, width, 2)).astype(np.float32))
    bumps = jnp.eye(height * width).reshape(height * width, height, width, 1) * 1000.0
    outputs = jax.jit(model.apply)(variables, base[None] + bumps)  # [H*W, Ho, Wo, C]
    moved = np.asarray(jnp.max(jnp.abs(outputs - model.apply(variables, base[None])), -1) > 1.0)

    geom_h, geom_w = geometry(layers, height), geometry(layers, width)
    assert moved.shape[1:] == (geom_h.count, geom_w.count)
    expected = np.zeros_like(moved)
    for i in range(geom_h.count):
        for j in range(geom_w.count):
            (top, bottom), (left, right) = geom_h.span(i), geom_w.span(j)
            for y in range(max(top, 0), min(bottom, height)):
                for x in range(max(left, 0), min(right, width)):
                    expected[y * width + x, i, j] = True
    if pad_anywhere:
        assert not np.any(moved & ~expected), layers
        assert np.all(moved.any(axis=0)), layers  # every output depends on some pixel
    else:
        np.testing.assert_array_equal(moved, expected, err_msg=str(layers))


# --- window extraction and the sequential reference -------------------------------------------


def test_extract_windows_equals_slicing_the_padded_image():
    layers = (Layer("conv", 3, 1, 2, 4), Layer("pool", 2, 2), Layer("conv", 2, features=3))
    images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 11, 3)), jnp.float32)
    size = receptive_field(layers)[0]
    geom_h, geom_w = geometry(layers, 9), geometry(layers, 11)
    padded = np.pad(np.asarray(images), ((0, 0), (8, 8), (8, 8), (0, 0)))
    expected = [
        padded[n, top + 8 : bottom + 8, left + 8 : right + 8]
        for n in range(2)
        for i in range(geom_h.count)
        for j in range(geom_w.count)
        for (top, bottom), (left, right) in [(geom_h.span(i), geom_w.span(j))]
    ]
    total = len(expected)
    got = extract_windows(images, layers, jnp.arange(total))
    assert got.shape == (total, size, size, 3)
    np.testing.assert_array_equal(np.asarray(got), np.stack(expected))


def test_batches_cover_every_window_once_in_order():
    layers = REFERENCE_LAYERS
    images = jnp.zeros((2, 17, 19, 3))
    spans = [
        (start, stop)
        for start, stop, out in sliding_window_batches(
            lambda p, w: w[:, 0, 0], None, images, layers, windows_per_batch=5
        )
    ]
    total = 2 * 2 * 3
    assert spans == [(s, min(s + 5, total)) for s in range(0, total, 5)]
    with pytest.raises(ValueError, match="windows_per_batch"):
        next(sliding_window_batches(lambda p, w: w, None, images, layers, windows_per_batch=0))


def conv_and_sequential(layers, images, seed, windows_per_batch):
    model = ConvStack(layers)
    variables = random_variables(model, images, seed)
    conv = jax.jit(model.apply)(variables, images)
    window_net = WindowNet(layers)
    sequential = sliding_window_apply(
        window_net.apply,
        conv_params_to_dense(variables, layers),
        images,
        layers,
        windows_per_batch=windows_per_batch,
    )
    return conv, sequential


@pytest.mark.parametrize("size", [16, 28])
def test_reference_net_sequential_equals_convolutional(size):
    images = jnp.asarray(
        np.random.default_rng(size).standard_normal((2, size, size, 3)), jnp.float32
    )
    model = ConvStack(REFERENCE_LAYERS)
    variables = random_variables(model, images, size, -0.2, 0.2)
    conv = jax.jit(model.apply)(variables, images)
    sequential = sliding_window_apply(
        WindowNet(REFERENCE_LAYERS).apply,
        conv_params_to_dense(variables, REFERENCE_LAYERS),
        images,
        REFERENCE_LAYERS,
        windows_per_batch=7,  # batches that do not divide the 2 * 8 * 8 windows at 28
    )
    count = geometry(REFERENCE_LAYERS, size).count
    assert conv.shape == sequential.shape == (2, count, count, 4)
    assert relative_error(sequential, conv) <= 1e-5
    # Window order: output (n, i, j) is the WindowNet on the crop span2d(i, j) of image n.
    (top, bottom), (left, right) = geometry(REFERENCE_LAYERS, size).span2d(count - 1, 0)
    crop = images[1:2, top:bottom, left:right]
    one = WindowNet(REFERENCE_LAYERS).apply(conv_params_to_dense(variables, REFERENCE_LAYERS), crop)
    assert relative_error(sequential[1, count - 1, 0], one[0]) <= 1e-5


@pytest.mark.parametrize("seed", range(8))
def test_random_stacks_sequential_equals_convolutional(seed):
    rng = np.random.default_rng(100 + seed)
    layers = random_stack(rng)
    low = min_input_size(layers)
    height, width = low + int(rng.integers(0, 9)), low + int(rng.integers(0, 9))
    shape = (int(rng.integers(1, 3)), height, width, 3)
    images = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    conv, sequential = conv_and_sequential(layers, images, seed, int(rng.integers(1, 40)))
    assert conv.shape == sequential.shape, layers
    assert relative_error(sequential, conv) <= 1e-5, layers


def test_padding_inside_the_stack_is_rejected():
    layers = (Layer("conv", 3, features=4), Layer("conv", 3, padding=1, features=2))
    with pytest.raises(ValueError, match="only a first conv layer may pad"):
        require_sliding_equivalence(layers)
    with pytest.raises(ValueError, match="only a first conv layer may pad"):
        sliding_window_apply(lambda p, w: w[:, 0, 0], None, jnp.zeros((1, 8, 8, 1)), layers)
    with pytest.raises(ValueError, match="only a first conv layer may pad"):
        require_sliding_equivalence((Layer("pool", 3, 1, 1), Layer("conv", 1, features=1)))


# --- weights and FLOPs ------------------------------------------------------------------------


def test_dense_layer_index():
    assert dense_layer_index(REFERENCE_LAYERS) == 2
    assert dense_layer_index(reference_layers("conv")) == 3
    assert dense_layer_index(reference_layers("pool")) == 3
    ends_with_pool = (Layer("conv", 3, features=2), Layer("pool", 2, 2))
    assert dense_layer_index(ends_with_pool) == 2


def test_dense_kernel_is_the_conv_on_an_nhwc_flattened_window():
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 5, 7)).astype(np.float32)
    window = rng.standard_normal((3, 3, 5)).astype(np.float32)
    conv_value = np.einsum("hwc,hwco->o", window, kernel)
    dense = np.asarray(conv_kernel_to_dense(jnp.asarray(kernel)))
    np.testing.assert_allclose(window.reshape(-1) @ dense, conv_value, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(dense_kernel_to_conv(dense, 3)), kernel)
    with pytest.raises(ValueError, match="not k\\*k\\*C_in"):
        dense_kernel_to_conv(dense[:-1], 3)


def test_flops_by_hand_reference_net_at_16():
    # conv pass: conv0 12x12x16 outputs of 5*5*3 MACs; pool -> 6x6; conv2 2x2x400 of 5*5*16;
    # conv3 2x2x400 of 400; conv4 2x2x4 of 400. Two FLOPs per MAC.
    conv = 2 * (12 * 12 * 16 * 75 + 2 * 2 * 400 * 400 + 2 * 2 * 400 * 400 + 2 * 2 * 4 * 400)
    assert conv == 2_918_400
    assert stack_flops(REFERENCE_LAYERS, 3, 16, 16) == conv
    assert stack_flops(REFERENCE_LAYERS, 3, 16, 16, batch=5) == 5 * conv
    # Sequential: 2x2 windows, each conv0 10x10x16 of 75 MACs + three Dense layers.
    per_window = 2 * (10 * 10 * 16 * 75 + 400 * 400 + 400 * 400 + 400 * 4)
    assert sequential_flops(REFERENCE_LAYERS, 3, 16, 16) == 4 * per_window == 3_532_800
    with pytest.raises(ValueError, match="needs `features`"):
        stack_flops([Layer("conv", 3)], 1, 5, 5)
