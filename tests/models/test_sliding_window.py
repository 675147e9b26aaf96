"""The sliding-window nets: the layer spec, every output cell is the net on its window, and
ConvStack / WindowNet against torch nets built here, with the conv <-> dense weight converter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jwsol.models.sliding_window import (
    NUM_OUTPUTS,
    REFERENCE_LAYERS,
    ConvStack,
    SlidingWindowNet,
    WindowNet,
    conv_params_to_dense,
    dense_params_to_conv,
    parse_layers,
    reference_layers,
)
from jwsol.ops.windows import Layer, min_input_size, receptive_field
from jwsol.training import config as config_lib


def test_parse_layers_with_and_without_strides():
    assert parse_layers("c5x16, p2,c4s2x32,c1x8") == (
        Layer("conv", 5, 1, features=16),
        Layer("pool", 2, 2),
        Layer("conv", 4, 2, features=32),
        Layer("conv", 1, 1, features=8),
    )


@pytest.mark.parametrize("bad", ["c5", "x16", "c5s0x8", "p", "q3", "c3x32,,p2"])
def test_bad_layer_spec_names_the_item(bad):
    with pytest.raises(ValueError, match="bad layer"):
        parse_layers(bad)


@pytest.mark.parametrize(
    "spec",
    [
        config_lib.load("configs/sliding_window.py").model.layers,
        "c4s2x8,c3x8,p2,c3x8,c3x8",
    ],
)
@pytest.mark.slow
def test_each_output_cell_is_the_net_on_its_window(spec):
    model = SlidingWindowNet(parse_layers(spec), batch_norm=True)
    geom = model.window_geometry(64)
    images = np.random.default_rng(0).random((2, 64, 64, 1)).astype(np.float32)
    variables = model.init(jax.random.key(0), images)
    # Non-trivial BatchNorm statistics: one training pass updates them.
    _, state = model.apply(variables, images, train=True, mutable=["batch_stats"])
    variables = {**variables, **state}
    full = np.asarray(model.apply(variables, images))
    assert full.shape == (2, geom.count, geom.count, NUM_OUTPUTS)
    for i, j in [(0, 0), (geom.count - 1, 1), (geom.count // 2, geom.count - 1)]:
        (r0, r1), (c0, c1) = geom.span(i), geom.span(j)
        alone = np.asarray(model.apply(variables, images[:, r0:r1, c0:c1]))
        assert alone.shape == (2, 1, 1, NUM_OUTPUTS)
        np.testing.assert_allclose(alone[:, 0, 0], full[:, i, j], rtol=1e-4, atol=1e-5)


# ConvStack and WindowNet ----------------------------------------------------------------------


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


@pytest.mark.parametrize("shape", [(2, 16, 16), (2, 28, 28), (1, 20, 31)])
def test_reference_net_matches_torch(shape):
    rng = np.random.default_rng(sum(shape))
    images = rng.standard_normal((*shape, 3)).astype(np.float32)
    model = ConvStack(REFERENCE_LAYERS)
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


@pytest.mark.parametrize("seed", range(4))
def test_random_stacks_match_torch(seed):
    rng = np.random.default_rng(seed)
    layers = random_padded_stack(rng)
    low = min_input_size(layers)
    images = rng.standard_normal((2, low + int(rng.integers(0, 7)), low + 3, 2)).astype(np.float32)
    model = ConvStack(layers)
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
    with pytest.raises(ValueError, match="at least one conv"):
        ConvStack((Layer("pool", 2, 2),)).init(jax.random.key(0), images)
