"""ConvStack / WindowNet against torch nets built here, and the conv <-> dense weight converter."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jwsol.models.conv_stack import (
    REFERENCE_LAYERS,
    ConvStack,
    WindowNet,
    conv_params_to_dense,
    conv_pass,
    cpu_compiler_options,
    dense_params_to_conv,
    reference_layers,
    tiled_apply,
)
from jwsol.ops.windows import Layer, min_input_size, receptive_field


def random_variables(model, inputs: jax.Array, seed: int, scale: float = 0.3):
    """Variables of `model` with every entry (biases too) from U(-scale, scale), via NumPy."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), inputs)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: jnp.asarray(rng.uniform(-scale, scale, x.shape).astype(np.float32)), shapes
    )


def torch_conv_stack(layers, variables, in_channels: int) -> torch.nn.Sequential:
    """The same net in torch (NCHW, OIHW), weights copied from `ConvStack` variables."""
    params = variables["params"]
    last = max(i for i, layer in enumerate(layers) if layer.kind == "conv")
    modules, channels = [], in_channels
    for index, layer in enumerate(layers):
        if layer.kind == "pool":
            modules.append(torch.nn.MaxPool2d(layer.kernel, layer.stride, layer.padding))
            continue
        conv = torch.nn.Conv2d(channels, layer.features, layer.kernel, layer.stride, layer.padding)
        kernel = np.asarray(params[f"conv{index}"]["kernel"]).transpose(3, 2, 0, 1)  # HWIO->OIHW
        conv.weight.data = torch.from_numpy(kernel.copy())
        conv.bias.data = torch.from_numpy(np.asarray(params[f"conv{index}"]["bias"]).copy())
        modules.append(conv)
        if index != last:
            modules.append(torch.nn.ReLU())
        channels = layer.features
    return torch.nn.Sequential(*modules)


def torch_forward(net: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """images [N, H, W, C] -> net output, back to NHWC if it is a map ([N, C] stays)."""
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).numpy()
    return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("impl", ["xla", "im2col"])
@pytest.mark.parametrize("shape", [(2, 16, 16), (2, 28, 28), (1, 20, 31)])
def test_reference_net_matches_torch(impl, shape):
    rng = np.random.default_rng(sum(shape))
    images = rng.standard_normal((*shape, 3)).astype(np.float32)
    model = ConvStack(REFERENCE_LAYERS, impl=impl)
    variables = random_variables(model, jnp.asarray(images), seed=1, scale=0.1)
    out = jax.jit(model.apply)(variables, jnp.asarray(images))
    expected = torch_forward(torch_conv_stack(REFERENCE_LAYERS, variables, 3), images)
    assert out.shape == expected.shape
    assert relative_error(out, expected) <= 1e-5


def random_padded_stack(rng: np.random.Generator) -> tuple[Layer, ...]:
    """2-4 conv/pool layers, any of which may pad (torch allows pool padding <= kernel / 2)."""
    layers = []
    for index in range(rng.integers(2, 5)):
        kind = "conv" if index == 0 or rng.random() < 0.6 else "pool"
        kernel = int(rng.integers(1, 5) if kind == "conv" else rng.integers(2, 4))
        stride = int(rng.integers(1, 3))
        padding = int(rng.integers(0, kernel // 2 + 1))
        features = int(rng.integers(1, 6)) if kind == "conv" else None
        layers.append(Layer(kind, kernel, stride, padding, features))
    if layers[-1].kind == "pool":
        layers.append(Layer("conv", 1, features=3))
    return tuple(layers)


@pytest.mark.parametrize("impl", ["xla", "im2col"])
@pytest.mark.parametrize("seed", range(4))
def test_random_stacks_match_torch(impl, seed):
    rng = np.random.default_rng(seed)
    layers = random_padded_stack(rng)
    low = min_input_size(layers)
    images = rng.standard_normal((2, low + int(rng.integers(0, 7)), low + 3, 2)).astype(np.float32)
    model = ConvStack(layers, impl=impl)
    variables = random_variables(model, jnp.asarray(images), seed)
    out = jax.jit(model.apply)(variables, jnp.asarray(images))
    expected = torch_forward(torch_conv_stack(layers, variables, 2), images)
    assert out.shape == expected.shape, layers
    assert relative_error(out, expected) <= 1e-5, layers


def torch_window_net(layers, dense_variables, in_channels: int) -> torch.nn.Sequential:
    """The "fully connected" form in torch from `WindowNet` variables: convs, NHWC flatten, Linear."""
    params = dense_variables["params"]
    last = max(i for i, layer in enumerate(layers) if layer.kind == "conv")
    modules, channels, flattened = [], in_channels, False
    for index, layer in enumerate(layers):
        name = f"dense{index}" if f"dense{index}" in params else f"conv{index}"
        if layer.kind == "pool":
            modules.append(torch.nn.MaxPool2d(layer.kernel, layer.stride))
            continue
        kernel = np.asarray(params[name]["kernel"])
        if name.startswith("dense"):
            if not flattened:
                # torch flattens NCHW as (c, h, w); the Dense rows are (h, w, c).
                modules += [torch.nn.Flatten(2), _Transpose(), torch.nn.Flatten(1)]
                flattened = True
            module = torch.nn.Linear(kernel.shape[0], kernel.shape[1])
            module.weight.data = torch.from_numpy(kernel.T.copy())
        else:
            module = torch.nn.Conv2d(channels, layer.features, layer.kernel, layer.stride)
            module.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        module.bias.data = torch.from_numpy(np.asarray(params[name]["bias"]).copy())
        modules.append(module)
        if index != last:
            modules.append(torch.nn.ReLU())
        channels = layer.features
    return torch.nn.Sequential(*modules)


class _Transpose(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H*W] -> [B, H*W, C]
        return x.transpose(1, 2)


@pytest.mark.parametrize("extra", [None, "conv", "pool"])
def test_window_net_is_the_fully_connected_form(extra):
    """WindowNet on single windows == torch's Flatten + Linear net == ConvStack on the window."""
    layers = reference_layers(extra)
    size = receptive_field(layers)[0]
    windows = np.random.default_rng(3).standard_normal((6, size, size, 3)).astype(np.float32)
    conv_model = ConvStack(layers)
    variables = random_variables(conv_model, jnp.asarray(windows), seed=4, scale=0.1)
    dense_variables = conv_params_to_dense(variables, layers)
    window_net = WindowNet(layers)
    expected_tree = jax.tree.map(
        jnp.shape, jax.eval_shape(window_net.init, jax.random.key(0), windows)
    )
    assert jax.tree.map(jnp.shape, dense_variables) == expected_tree

    out = jax.jit(window_net.apply)(dense_variables, jnp.asarray(windows))  # [6, 4]
    torch_out = torch_forward(torch_window_net(layers, dense_variables, 3), windows)
    assert torch_out.shape == out.shape == (6, 4)
    assert relative_error(out, torch_out) <= 1e-5
    conv_out = jax.jit(conv_model.apply)(variables, jnp.asarray(windows))
    assert conv_out.shape == (6, 1, 1, 4)
    assert relative_error(out, conv_out[:, 0, 0]) <= 1e-5


def test_converter_round_trip_is_exact():
    layers = reference_layers("pool")
    variables = random_variables(ConvStack(layers), jnp.zeros((1, 24, 24, 3)), seed=5)
    dense = conv_params_to_dense(variables, layers)
    assert sorted(dense["params"]) == ["conv0", "dense3", "dense4", "dense5"]
    assert dense["params"]["dense3"]["kernel"].shape == (5 * 5 * 16, 400)
    back = dense_params_to_conv(dense, layers)
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


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
    assert cpu_compiler_options() == {"xla_cpu_experimental_ynn_fusion_type": ""}  # CPU here
    padded_inside = (Layer("conv", 3, features=2), Layer("conv", 3, padding=1, features=2))
    with pytest.raises(ValueError, match="only a first conv layer may pad"):
        tiled_apply(padded_inside)
    with pytest.raises(ValueError, match="rows_per_tile"):
        tiled_apply(REFERENCE_LAYERS, rows_per_tile=0)
    images = jnp.asarray(np.random.default_rng(9).standard_normal((1, 12, 12, 3)), jnp.float32)
    variables = random_variables(ConvStack(padded_inside), images, seed=10)
    expected = torch_forward(torch_conv_stack(padded_inside, variables, 3), np.asarray(images))
    whole = conv_pass(padded_inside, rows_per_tile=None, eigen_dots=False)(variables, images)
    assert relative_error(whole, expected) <= 1e-5


def test_bad_specs_are_clear_errors():
    images = jnp.zeros((1, 16, 16, 3))
    with pytest.raises(ValueError, match="extra must be"):
        reference_layers("dense")
    with pytest.raises(ValueError, match="needs features"):
        ConvStack((Layer("conv", 3),)).init(jax.random.key(0), images)
    with pytest.raises(ValueError, match="kind 'avg'"):
        ConvStack((Layer("avg", 2, 2), Layer("conv", 1, features=2))).init(
            jax.random.key(0), images
        )
    with pytest.raises(ValueError, match="impl must be"):
        ConvStack(REFERENCE_LAYERS, impl="fft").init(jax.random.key(0), images)
    with pytest.raises(ValueError, match="at least one conv"):
        ConvStack((Layer("pool", 2, 2),)).init(jax.random.key(0), images)
