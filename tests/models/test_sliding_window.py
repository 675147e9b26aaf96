"""The sliding-window net: its layer spec, and that every output cell is the net on its window."""

import jax
import numpy as np
import pytest

from jwsol.models.sliding_window import NUM_OUTPUTS, SlidingWindowNet, parse_layers
from jwsol.training import config as config_lib


def test_parse_layers_with_and_without_strides():
    assert parse_layers("c5x16, p2,c4s2x32,c1x8") == (
        ("conv", 5, 1, 16),
        ("pool", 2, 2, 0),
        ("conv", 4, 2, 32),
        ("conv", 1, 1, 8),
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
