"""VGG16 in Flax: shapes and tree against torchvision's vgg16, fc6/fc7 against torch, the init.

Parity of the whole ported network with torch lives in tests/weights/test_torchvision_port.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from jwsol.models.vgg import (
    STAGES,
    VGG16,
    VGGFC67,
    VGG16Features,
    conv_kernel_init,
    dense_kernel_init,
)
from jwsol.weights.torchvision import _fc6_permute


def _shapes(model, x, **kwargs):
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    return variables, jax.eval_shape(lambda v, x: model.apply(v, x, **kwargs), variables, x)


def test_features_shapes_and_activations():
    _, (out, acts) = _shapes(VGG16Features(), jnp.zeros((1, 224, 224, 3)), return_activations=True)
    # torchvision vgg16 at 224: stage s convs at 224 / 2**(s-1), pools halve.
    want = {}
    for s, stage in enumerate(STAGES, start=1):
        side = 224 >> (s - 1)
        want.update({f"conv{s}_{i}": (1, side, side, c) for i, c in enumerate(stage, start=1)})
        want[f"pool{s}"] = (1, side // 2, side // 2, stage[-1])
    assert {k: v.shape for k, v in acts.items()} == want
    assert out.shape == (1, 7, 7, 512)
    _, no_pool = _shapes(VGG16Features(include_last_pool=False), jnp.zeros((1, 224, 224, 3)))
    assert no_pool.shape == (1, 14, 14, 512)


def _torch_features_without_last_pool() -> torch.nn.Sequential:
    """torchvision's vgg16 features[:-1] layout (3x3 pad-1 convs, 2x2/2 pools), 1 channel."""
    layers = []
    for s, stage in enumerate(STAGES, start=1):
        layers += [torch.nn.Conv2d(1, 1, 3, padding=1) for _ in stage]
        layers += [torch.nn.MaxPool2d(2, 2)] if s < len(STAGES) else []
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("height, width", [(224, 224), (100, 100), (161, 250), (600, 1000)])
def test_conv5_3_is_stride_16_as_torch_features_without_last_pool(height, width):
    # NOTE: torch's floor-mode pools give H // 16 (Caffe's Fast R-CNN rounds up: 100 -> 7, not 6).
    with torch.no_grad():
        ref = _torch_features_without_last_pool()(torch.zeros(1, 1, height, width))
    model = VGG16Features(include_last_pool=False, width=1 / 64)
    _, out = _shapes(model, jnp.zeros((1, height, width, 3)))
    assert out.shape[1:3] == tuple(ref.shape[2:]) == (height // 16, width // 16)


def test_vgg16_tree_names_and_torchvision_param_count():
    variables, logits = _shapes(VGG16(), jnp.zeros((1, 32, 32, 3)))
    flat = traverse_util.flatten_dict(variables["params"], sep="/")
    convs = [
        f"features/conv{s}_{i}" for s, st in enumerate(STAGES, 1) for i in range(1, len(st) + 1)
    ]
    assert sorted({p.rsplit("/", 1)[0] for p in flat}) == sorted(
        convs + ["fc67/fc6", "fc67/fc7", "fc8"]
    )
    assert flat["features/conv1_1/kernel"].shape == (3, 3, 3, 64)
    assert flat["fc67/fc6/kernel"].shape == (25088, 4096)
    # torchvision documents vgg16 with 138,357,544 parameters.
    assert sum(np.prod(s.shape) for s in flat.values()) == 138_357_544
    assert logits.shape == (1, 1000)


def test_batch_norm_variant_tree():
    variables, _ = _shapes(VGG16Features(width=0.125, batch_norm=True), jnp.zeros((1, 32, 32, 3)))
    params = variables["params"]
    assert "bias" not in params["conv3_2"] and params["bn3_2"]["scale"].shape == (32,)
    assert variables["batch_stats"]["bn5_3"]["mean"].shape == (64,)
    assert len(params) == 26


@pytest.fixture(scope="module")
def narrow_fc67():
    """A torch classifier[:6] of vgg16 with 16-wide fc6/fc7, and the same layers in VGGFC67."""
    torch.manual_seed(0)
    ref = torch.nn.Sequential(
        torch.nn.Linear(512 * 7 * 7, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
    ).eval()  # fmt: skip
    w6, b6, w7, b7 = (p.detach().numpy() for p in ref.parameters())
    params = {
        "fc6": {"kernel": _fc6_permute(w6, channels=512, side=7), "bias": b6},
        "fc7": {"kernel": w7.T, "bias": b7},
    }
    return ref, {"params": params}


def test_fc67_on_roi_features_matches_torch(narrow_fc67):
    ref, variables = narrow_fc67
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 7, 512)).astype(np.float32)  # [N, R, ...]
    got = VGGFC67(features=16).apply(variables, x)
    with torch.no_grad():  # torch flattens each NCHW region
        want = ref(torch.from_numpy(x.reshape(6, 7, 7, 512).transpose(0, 3, 1, 2)).flatten(1))
    assert got.shape == (2, 3, 16)
    np.testing.assert_allclose(got.reshape(6, 16), want.numpy(), rtol=1e-5, atol=1e-5)


def test_fc67_dropout_follows_each_relu(narrow_fc67):
    _, variables = narrow_fc67
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 7, 7, 512)), jnp.float32)
    rngs = {"dropout": jax.random.key(2)}
    out, acts = VGGFC67(features=16).apply(
        variables, x, train=True, rngs=rngs, return_activations=True
    )
    p = variables["params"]
    fc6 = np.maximum(np.asarray(x).reshape(4, -1) @ p["fc6"]["kernel"] + p["fc6"]["bias"], 0)
    # fc6's input is not dropped (AlexNet's FC67 drops it); its output is, before fc7.
    np.testing.assert_allclose(acts["fc6"], fc6, rtol=1e-5, atol=1e-5)
    kept = np.asarray(out) != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(np.asarray(out)[kept], 2 * np.asarray(acts["fc7"])[kept], rtol=1e-6)
    undropped = np.maximum(fc6 @ p["fc7"]["kernel"] + p["fc7"]["bias"], 0)
    assert not np.allclose(acts["fc7"], undropped, atol=1e-4)
    evaluated = VGGFC67(features=16).apply(variables, x)
    np.testing.assert_allclose(evaluated, undropped, rtol=1e-5, atol=1e-5)


def test_init_matches_torchvision_vgg_init():
    # torchvision's VGG: kaiming_normal_(mode='fan_out') convs, N(0, 0.01) linear layers.
    torch.manual_seed(0)
    torch_w = torch.empty(128, 128, 3, 3)
    torch.nn.init.kaiming_normal_(torch_w, mode="fan_out", nonlinearity="relu")
    ours = np.asarray(conv_kernel_init(jax.random.key(0), (3, 3, 128, 128)))
    assert ours.std() == pytest.approx(np.sqrt(2 / (128 * 9)), rel=0.02)
    assert ours.std() == pytest.approx(float(torch_w.std()), rel=0.02)
    dense = np.asarray(dense_kernel_init(jax.random.key(1), (512, 256)))
    assert dense.std() == pytest.approx(0.01, rel=0.02)
