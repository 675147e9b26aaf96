import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jwsol.models import localizer
from jwsol.models.alexnet import AlexNet
from jwsol.models.localizer import LocalizerAlexNet, global_pool
from jwsol.ops import windows


def _numpy_pool(s, pooling, r):
    flat = s.reshape(s.shape[0], -1, s.shape[-1]).astype(np.float64)
    if pooling == "max":
        return flat.max(1)
    if pooling == "avg":
        return flat.mean(1)
    return np.log(np.mean(np.exp(r * flat), axis=1)) / r


@pytest.mark.parametrize("pooling", ["max", "avg", "lse"])
def test_global_pool_matches_numpy(pooling):
    s = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    got = global_pool(jnp.asarray(s), pooling, lse_r=3.0)
    np.testing.assert_allclose(got, _numpy_pool(s, pooling, 3.0), rtol=1e-5, atol=1e-6)


def test_lse_goes_from_avg_to_max():
    s = jnp.asarray(np.random.default_rng(1).normal(size=(1, 4, 4, 2)), jnp.float32)
    # Small r: LSE ~ mean + r * var / 2 (float32 cancellation rules out much smaller r).
    np.testing.assert_allclose(global_pool(s, "lse", 1e-2), global_pool(s, "avg"), atol=2e-2)
    # Large r: max - log(cells) / r <= LSE <= max; here r = 1000 and 16 cells.
    np.testing.assert_allclose(global_pool(s, "lse", 1e3), global_pool(s, "max"), atol=3e-3)


def test_bad_pooling_is_a_value_error():
    with pytest.raises(ValueError, match="pooling='mean'"):
        LocalizerAlexNet(pooling="mean").init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
    with pytest.raises(ValueError, match="lse_r"):
        global_pool(jnp.zeros((1, 2, 2, 1)), "lse", lse_r=0.0)


@pytest.fixture(scope="module")
def variables():
    # Parameters do not depend on the input size or the pooling: one init serves every test.
    model = LocalizerAlexNet(num_classes=20)
    return jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 128, 128, 3)))


def test_score_map_is_29x29_at_512(variables):
    model = LocalizerAlexNet(num_classes=20)
    x = jnp.asarray(np.random.default_rng(2).random((1, 512, 512, 3)), jnp.float32)
    out = jax.jit(model.apply)(variables, x)
    assert out["score_map"].shape == (1, 29, 29, 20)
    assert out["logits"].shape == (1, 20)
    np.testing.assert_allclose(out["logits"], np.asarray(out["score_map"]).max(axis=(1, 2)))


@pytest.mark.parametrize("pooling", ["avg", "lse"])
def test_logits_pool_the_score_map(variables, pooling):
    model = LocalizerAlexNet(num_classes=20, pooling=pooling, lse_r=5.0)
    x = jnp.asarray(np.random.default_rng(3).random((2, 128, 128, 3)), jnp.float32)
    out = jax.jit(model.apply)(variables, x)
    assert out["score_map"].shape == (2, 5, 5, 20)  # conv5 is 7x7 at 128, conv6 unpadded
    want = _numpy_pool(np.asarray(out["score_map"]), pooling, 5.0)
    np.testing.assert_allclose(out["logits"], want, rtol=1e-5, atol=1e-6)


def test_new_layers_are_glorot_uniform_with_zero_bias(variables):
    params = variables["params"]
    for name, (k, cin, cout) in {
        "conv6": (3, 256, 256),
        "conv7": (1, 256, 256),
        "score": (1, 256, 20),
    }.items():
        kernel = np.asarray(params[name]["kernel"])
        assert kernel.shape == (k, k, cin, cout)
        np.testing.assert_array_equal(params[name]["bias"], 0)
        bound = np.sqrt(6 / (k * k * cin + k * k * cout))  # Glorot & Bengio 2010, uniform
        assert np.abs(kernel).max() <= bound
        # U(-b, b) has std b / sqrt(3); 5120+ samples put the estimate well within 5%.
        np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.05)


def test_backbone_subtree_matches_alexnet_features():
    # The pretrained AlexNet's params/features must drop straight into the localizer.
    loc = jax.eval_shape(LocalizerAlexNet().init, jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
    alex = jax.eval_shape(AlexNet().init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    shapes = lambda tree: {k: v.shape for k, v in traverse_util.flatten_dict(tree).items()}
    assert shapes(loc["params"]["features"]) == shapes(alex["params"]["features"])
    assert sorted(loc["params"]) == ["conv6", "conv7", "features", "score"]


@pytest.mark.parametrize("size", [96, 192, 512])
def test_layer_table_predicts_the_model_map(size):
    model = LocalizerAlexNet(num_classes=3, width=0.125)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    out = jax.eval_shape(model.apply, variables, x)
    cells = windows.output_size(localizer.LAYERS, size)
    assert out["score_map"].shape == (1, cells, cells, 3)
    assert size != 512 or cells == 29


def test_receptive_field_centres_by_hand():
    # conv1 cell i spans input [4i - 2, 4i + 9); pool1 cell j: conv1 2j..2j+2 -> centre 8j + 7.5;
    # pool2 cell k: centre 16k + 15.5; conv6 (3x3, unpadded) cell m: pool2 m + 1 -> 16m + 31.5.
    assert localizer.score_map_geometry() == (31.5, 16.0)
