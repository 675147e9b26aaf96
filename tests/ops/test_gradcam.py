"""Grad-CAM against torch autograd (the torchvision-layout reference ResNet of the port tests, and a
nonlinear head) and against the closed form of a global-average-pool head."""

import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jwsol.models.resnet import ResNet
from jwsol.ops import gradcam

# The reference torch ResNets (torchvision's module layout) and their ported variables live in
# the port tests; reuse them rather than build a second copy.
_spec = importlib.util.spec_from_file_location(
    "_port_references",
    os.path.join(os.path.dirname(__file__), "..", "weights", "test_torchvision_port.py"),
)
refs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refs)


def torch_gradcam(activation: torch.Tensor, scores: torch.Tensor, classes) -> np.ndarray:
    """Grad-CAM by the paper's recipe with torch autograd: activation [N, K, h, w] (in the
    graph of scores [N, C]) -> maps [N, h, w]."""
    picked = scores[torch.arange(len(classes)), torch.as_tensor(classes)].sum()
    (grad,) = torch.autograd.grad(picked, activation, retain_graph=True)
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * activation).sum(dim=1)).detach().numpy()


CLASSES = np.array([3, 7, 0])


@pytest.fixture(scope="module")
def resnet_case():
    """The reference torch ResNet-18 and ours (ported weights) on 3 images (layer4 3x4)."""
    x = np.random.default_rng(3).normal(size=(3, 96, 128, 3)).astype(np.float32)
    acts = refs.torch_model("resnet18")(refs.nhwc_to_nchw(x))
    model, variables = ResNet(depth=18, num_classes=10), refs.ported("resnet18")
    with jax.default_matmul_precision("float32"):
        run = jax.jit(lambda v, x: (
            gradcam.resnet_gradcam(model, v, x, CLASSES), gradcam.resnet_gradcam(model, v, x)
        ))  # fmt: skip
        given, predicted = run(variables, x)
    return acts, variables, given, predicted


def test_resnet_gradcam_matches_torch_autograd(resnet_case):
    acts, _, given, predicted = resnet_case
    reference = torch_gradcam(acts["layer4"], acts["logits"], CLASSES)
    assert given["maps"].shape == (3, 3, 4)
    refs.assert_close(given["maps"], reference, "Grad-CAM, given classes")
    refs.assert_close(given["logits"], acts["logits"].detach().numpy(), "logits")
    top = acts["logits"].argmax(dim=1).numpy()  # classes=None explains the argmax
    np.testing.assert_array_equal(predicted["classes"], top)
    reference = torch_gradcam(acts["layer4"], acts["logits"], top)
    refs.assert_close(predicted["maps"], reference, "Grad-CAM, predicted classes")


def test_global_average_pool_head_gives_cam_over_hw(resnet_case):
    """Hand-worked: with scores = mean_ij(A) @ W + b, d y_c / d A_ijk = W[k, c] / (h w), so the
    map is ReLU(A @ W[:, c]) / (h w), i.e. CAM scaled. A and W from the torch reference."""
    acts, variables, given, _ = resnet_case
    layer4 = refs.nchw_to_nhwc(acts["layer4"]).astype(np.float64)  # [3, 3, 4, 512]
    kernel = np.asarray(variables["params"]["fc"]["kernel"], np.float64)  # [512, 10]
    cam = np.einsum("nijk,nk->nij", layer4, kernel[:, CLASSES].T)
    refs.assert_close(given["maps"], np.maximum(cam, 0) / (3 * 4), "CAM / hw")
    assert (np.asarray(given["maps"]) > 0).any() and (np.asarray(given["maps"]) == 0).any()


class Head(nn.Module):
    """A head that is not linear in A: 1x1 conv, ReLU, global max and mean pools, dense."""

    @nn.compact
    def __call__(self, a):
        z = nn.relu(nn.Conv(6, (1, 1), name="conv")(a))
        pooled = jnp.concatenate([z.max(axis=(1, 2)), z.mean(axis=(1, 2))], axis=-1)
        return nn.Dense(4, name="fc")(pooled)


class TorchHead(torch.nn.Module):
    def __init__(self, params):
        super().__init__()
        kernel = np.asarray(params["conv"]["kernel"])[0, 0]  # [K, 6]
        self.conv = torch.nn.Conv2d(kernel.shape[0], 6, 1)
        self.fc = torch.nn.Linear(12, 4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(kernel.T[:, :, None, None]))
            self.conv.bias.copy_(torch.tensor(np.asarray(params["conv"]["bias"])))
            self.fc.weight.copy_(torch.tensor(np.asarray(params["fc"]["kernel"]).T))
            self.fc.bias.copy_(torch.tensor(np.asarray(params["fc"]["bias"])))

    def forward(self, a):
        z = torch.relu(self.conv(a))
        return self.fc(torch.cat([z.amax(dim=(2, 3)), z.mean(dim=(2, 3))], dim=1))


@jax.default_matmul_precision("float32")
def test_gradcam_maps_of_a_nonlinear_head_match_torch():
    activation = np.random.default_rng(5).normal(size=(4, 5, 6, 8)).astype(np.float32)
    head = Head()
    params = head.init(jax.random.PRNGKey(1), activation)["params"]
    classes = np.array([0, 3, 2, 3])
    scores, maps = jax.jit(gradcam.gradcam_maps, static_argnums=0)(
        lambda a: head.apply({"params": params}, a), activation, classes
    )
    a_torch = torch.tensor(activation.transpose(0, 3, 1, 2), requires_grad=True)
    torch_scores = TorchHead(params)(a_torch)
    refs.assert_close(scores, torch_scores.detach().numpy(), "scores")
    refs.assert_close(maps, torch_gradcam(a_torch, torch_scores, classes), "maps")
    # Examples are independent: explaining one example alone gives its map from the batch.
    _, alone = gradcam.gradcam_maps(
        lambda a: head.apply({"params": params}, a), activation[1:2], classes[1:2]
    )
    np.testing.assert_allclose(alone[0], maps[1], rtol=1e-5, atol=1e-6)
