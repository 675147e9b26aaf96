import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from jwsol.models.alexnet import (
    FC67,
    AlexNet,
    AlexNetFeatures,
    adaptive_avg_pool,
    he_init,
    init_alexnet,
    torch_default_kernel_init,
)
from jwsol.models.localizer import LocalizerAlexNet


@pytest.mark.parametrize(
    "hw, out",
    [
        ((13, 13), (6, 6)),  # AlexNet at 227-ish inputs: overlapping bins
        ((6, 6), (6, 6)),  # identity
        ((4, 3), (6, 6)),  # smaller than the output: rows repeat
        ((1, 1), (6, 6)),
        ((15, 9), (6, 4)),  # rectangular, non-divisible
        ((12, 12), (3, 3)),  # divisible
    ],
)
def test_adaptive_avg_pool_matches_torch(hw, out):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *hw, 5)).astype(np.float32)
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), out)
    got = adaptive_avg_pool(jnp.asarray(x), out)
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6)


def test_adaptive_avg_pool_keeps_leading_axes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 7, 8, 4)).astype(np.float32)
    got = adaptive_avg_pool(jnp.asarray(x), 6)
    want = np.stack([np.asarray(adaptive_avg_pool(jnp.asarray(x[:, r]), 6)) for r in range(3)], 1)
    assert got.shape == (2, 3, 6, 6, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_features_shapes_and_activations():
    x = jnp.zeros((1, 224, 224, 3))
    model = AlexNetFeatures()
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    out, acts = jax.eval_shape(
        lambda v, x: model.apply(v, x, return_activations=True), variables, x
    )
    # torchvision AlexNet at 224: conv1 55, pool1 27, conv2 27, pool2 13, conv3-5 13, pool5 6.
    sides = {"conv1": 55, "pool1": 27, "conv2": 27, "pool2": 13, "conv3": 13, "conv4": 13}
    sides.update(conv5=13, pool5=6)
    channels = {"conv1": 64, "pool1": 64, "conv2": 192, "pool2": 192, "conv3": 384}
    assert sorted(acts) == sorted(sides)
    for name, side in sides.items():
        assert acts[name].shape == (1, side, side, channels.get(name, 256)), name
    assert out.shape == (1, 6, 6, 256)
    no_pool = AlexNetFeatures(include_last_pool=False)
    assert jax.eval_shape(no_pool.apply, variables, x).shape == (1, 13, 13, 256)


def test_alexnet_tree_names_and_torchvision_param_count():
    variables = jax.eval_shape(AlexNet().init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    flat = traverse_util.flatten_dict(variables["params"], sep="/")
    modules = sorted({path.rsplit("/", 1)[0] for path in flat})
    assert modules == [
        "fc67/fc6",
        "fc67/fc7",
        "fc8",
        "features/conv1",
        "features/conv2",
        "features/conv3",
        "features/conv4",
        "features/conv5",
    ]
    assert flat["features/conv1/kernel"].shape == (11, 11, 3, 64)
    assert flat["fc67/fc6/kernel"].shape == (9216, 4096)
    # torchvision documents AlexNet with 61,100,840 parameters.
    assert sum(np.prod(s.shape) for s in flat.values()) == 61_100_840


@pytest.fixture(scope="module")
def fc67_variables():
    """Random FC67 variables from NumPy, on device once (the Flax initialisers are slower here)."""
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(FC67().init, jax.random.key(0), jnp.zeros((1, 6, 6, 256)))
    numpy_tree = jax.tree.map(
        lambda s: (rng.random(s.shape, dtype=np.float32) - 0.5) / np.sqrt(s.shape[0]), shapes
    )
    return numpy_tree, jax.device_put(numpy_tree)


@pytest.mark.slow
def test_fc67_flattens_nhwc_and_matches_numpy(fc67_variables):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 6, 6, 256)).astype(np.float32)  # [N, R, 6, 6, 256] pooled RoIs
    numpy_tree, variables = fc67_variables
    got = FC67().apply(variables, x)
    p = numpy_tree["params"]
    h = np.maximum(x.reshape(2, 3, 9216) @ p["fc6"]["kernel"] + p["fc6"]["bias"], 0)
    want = np.maximum(h @ p["fc7"]["kernel"] + p["fc7"]["bias"], 0)
    assert got.shape == (2, 3, 4096)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_fc67_dropout_only_in_training(fc67_variables):
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 6, 256)), jnp.float32)
    variables = fc67_variables[1]
    evaluated = FC67().apply(variables, x)
    no_drop = FC67(dropout_rate=0.0).apply(variables, x, train=True)
    np.testing.assert_array_equal(evaluated, no_drop)
    rngs = {"dropout": jax.random.key(1)}
    dropped = FC67().apply(variables, x, train=True, rngs=rngs)
    assert not np.allclose(dropped, evaluated)
    np.testing.assert_array_equal(dropped, FC67().apply(variables, x, train=True, rngs=rngs))


def test_kernel_init_matches_torch_default():
    # torch Conv2d(64, 192, 5) draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)); compare spread and bound.
    torch.manual_seed(0)
    torch_w = torch.nn.Conv2d(64, 192, 5).weight.detach().numpy()
    ours = np.asarray(torch_default_kernel_init(jax.random.key(0), (5, 5, 64, 192)))
    bound = 1 / np.sqrt(5 * 5 * 64)
    assert np.abs(ours).max() <= bound
    np.testing.assert_allclose(ours.std(), torch_w.std(), rtol=0.02)


def test_he_init_redraws_the_trunk_kernels_only():
    rng = np.random.default_rng(0)
    params = {
        "features": {"conv1": {"kernel": np.zeros((11, 11, 3, 64)), "bias": np.ones(64)}},
        "fc67": {"fc6": {"kernel": np.zeros((2304, 512)), "bias": np.ones(512)}},
        "det_head": {"kernel": rng.normal(size=(512, 10)), "bias": np.zeros(10)},
    }
    out = he_init(params, jax.random.key(0))
    for path, fan_in in ((("features", "conv1"), 11 * 11 * 3), (("fc67", "fc6"), 2304)):
        kernel = np.asarray(out[path[0]][path[1]]["kernel"])
        assert kernel.std() == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.02)
        assert abs(kernel.mean()) < 0.05 * kernel.std()
        np.testing.assert_array_equal(out[path[0]][path[1]]["bias"], 1.0)
    np.testing.assert_array_equal(out["det_head"]["kernel"], params["det_head"]["kernel"])


@pytest.mark.slow
def test_init_alexnet_schemes_differ_only_in_the_trunk_kernels():
    model = LocalizerAlexNet(num_classes=3, width=0.125)
    image = jnp.zeros((1, 96, 96, 3))
    key = jax.random.key(0)
    torch_init, he = (
        traverse_util.flatten_dict(
            init_alexnet(lambda k: model.init(k, image), key, scheme)["params"], sep="/"
        )
        for scheme in ("torch", "he")
    )
    plain = traverse_util.flatten_dict(
        model.init(jax.random.split(key)[0], image)["params"], sep="/"
    )
    for name, value in torch_init.items():
        np.testing.assert_array_equal(value, plain[name])  # 'torch': the model's own init
        redrawn = name.startswith("features/") and name.endswith("kernel")
        assert np.array_equal(he[name], value) != redrawn, name
    with pytest.raises(ValueError, match="'uniform'"):
        init_alexnet(lambda k: model.init(k, image), key, "uniform")
