import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from jwsol.models.resnet import ResNet


def _shapes(model, size, **kwargs):
    x = jnp.zeros((2, size, size, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    fn = lambda v, x: model.apply(v, x, return_activations=True, **kwargs)
    logits, acts = jax.eval_shape(fn, variables, x)
    return variables, logits.shape, {k: v.shape for k, v in acts.items()}


@pytest.mark.parametrize("depth, expansion", [(18, 1), (34, 1), (50, 4)])
def test_stage_shapes(depth, expansion):
    _, logits, acts = _shapes(ResNet(depth=depth, num_classes=10), 224)
    assert logits == (2, 10)
    assert acts == {
        "stem": (2, 56, 56, 64),
        "layer1": (2, 56, 56, 64 * expansion),
        "layer2": (2, 28, 28, 128 * expansion),
        "layer3": (2, 14, 14, 256 * expansion),
        "layer4": (2, 7, 7, 512 * expansion),
    }


def test_small_input_stem_keeps_resolution():
    variables, logits, acts = _shapes(ResNet(depth=18, num_classes=200, small_input=True), 64)
    assert logits == (2, 200)
    assert acts["stem"] == (2, 64, 64, 64)
    assert acts["layer4"] == (2, 8, 8, 512)
    assert variables["params"]["conv1"]["kernel"].shape == (3, 3, 3, 64)


@pytest.mark.parametrize(
    # torchvision's documented parameter counts (BatchNorm running stats not included).
    "depth, count",
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)],
)
@pytest.mark.slow
def test_param_count_matches_torchvision(depth, count):
    variables, _, _ = _shapes(ResNet(depth=depth), 64)
    leaves = traverse_util.flatten_dict(variables["params"]).values()
    assert sum(int(np.prod(s.shape)) for s in leaves) == count


def test_bad_depth_is_a_config_error():
    with pytest.raises(ValueError, match="depth=101"):
        ResNet(depth=101).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _random_variables(shapes, seed):
    """NumPy-drawn variables for a shape tree: compiling `init` costs ~20 s on 2 loaded cores."""
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = path[-1].key
        if name in ("var", "scale"):
            return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
        if name == "kernel":
            fan_in = int(np.prod(s.shape[:-1]))
            return rng.uniform(-1, 1, s.shape).astype(np.float32) * np.sqrt(3 / fan_in)
        return rng.uniform(-0.1, 0.1, s.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def resnet18():
    model = ResNet(depth=18, num_classes=5)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 32, 32, 3)), jnp.float32)
    variables = _random_variables(jax.eval_shape(model.init, jax.random.key(0), x), 1)
    return model, variables, x


@pytest.mark.slow
def test_features_head_split_matches_call_and_gives_layer4_gradients(resnet18):
    model, variables, x = resnet18
    logits = model.apply(variables, x)
    acts = model.apply(variables, x, method=ResNet.features)
    np.testing.assert_allclose(model.apply(variables, acts["layer4"], method=ResNet.head), logits)

    def class_score(layer4):
        return model.apply(variables, layer4, method=ResNet.head)[:, 2].sum()

    grad = jax.grad(class_score)(acts["layer4"])
    # The head is mean-pool then fc, so d score / d layer4[n, i, j, c] = fc_kernel[c, 2] / (h*w).
    h, w = acts["layer4"].shape[1:3]
    want = np.broadcast_to(
        np.asarray(variables["params"]["fc"]["kernel"][:, 2]) / (h * w), grad.shape
    )
    np.testing.assert_allclose(grad, want, rtol=1e-6)


@pytest.mark.slow
def test_eval_mode_uses_running_stats(resnet18):
    # With running statistics each image's output is independent of the rest of the batch.
    model, variables, x = resnet18
    np.testing.assert_allclose(
        model.apply(variables, x[:1]), model.apply(variables, x)[:1], atol=1e-5
    )


def test_no_classifier_returns_pooled_features():
    model = ResNet(depth=18, num_classes=None)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert "fc" not in variables["params"]
    assert jax.eval_shape(model.apply, variables, jnp.zeros((1, 64, 64, 3))).shape == (1, 512)


def test_train_mode_batch_norm_matches_torch(resnet18):
    """Stem in train mode vs torch conv1 + BatchNorm2d(momentum=0.1) + max pool."""
    model, variables, x = resnet18
    (_, acts), updates = model.apply(
        variables, x, train=True, return_activations=True, mutable=["batch_stats"]
    )
    params, stats = variables["params"], variables["batch_stats"]["bn1"]
    conv = torch.nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    bn = torch.nn.BatchNorm2d(64, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(params["conv1"]["kernel"].transpose(3, 2, 0, 1)))  # HWIO
        bn.weight.copy_(torch.tensor(params["bn1"]["scale"]))
        bn.bias.copy_(torch.tensor(params["bn1"]["bias"]))
        bn.running_mean.copy_(torch.tensor(stats["mean"]))
        bn.running_var.copy_(torch.tensor(stats["var"]))
        bn.train()
        y = bn(conv(torch.tensor(np.asarray(x)).permute(0, 3, 1, 2)))
        stem = torch.nn.functional.max_pool2d(torch.relu(y), 3, 2, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(acts["stem"], stem, rtol=1e-4, atol=1e-4 * np.abs(stem).max())

    new = updates["batch_stats"]["bn1"]
    np.testing.assert_allclose(new["mean"], bn.running_mean.numpy(), rtol=1e-4, atol=1e-6)
    # NOTE: torch folds the unbiased batch variance into running_var, Flax the biased one.
    n = x.shape[0] * 16 * 16  # conv1 output cells per channel
    unbiased = (bn.running_var.numpy() - 0.9 * stats["var"]) / 0.1
    np.testing.assert_allclose(
        new["var"], 0.9 * stats["var"] + 0.1 * unbiased * (n - 1) / n, rtol=1e-4
    )


@pytest.mark.parametrize("depth", [18, 50])
def test_conv_batch_chunks_give_the_same_variables_outputs_and_gradients(depth):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 32, 32, 3)), jnp.float32)
    whole = ResNet(depth, 5, small_input=True)
    chunked = ResNet(depth, 5, small_input=True, conv_batch_chunk=2)
    variables = jax.jit(whole.init)(jax.random.key(0), x[:1])
    assert jax.tree.structure(jax.eval_shape(chunked.init, jax.random.key(0), x[:1])) == (
        jax.tree.structure(variables)
    )

    def loss(model, params):
        out, _ = model.apply({**variables, "params": params}, x, train=True,
                             mutable=["batch_stats"])  # fmt: skip
        return jnp.sum(out**2), out

    (_, ours), g_ours = jax.value_and_grad(lambda p: loss(chunked, p), has_aux=True)(
        variables["params"]
    )
    (_, ref), g_ref = jax.value_and_grad(lambda p: loss(whole, p), has_aux=True)(
        variables["params"]
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(ref))))
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * float(jnp.max(jnp.abs(b))) + 1e-7)
