"""torchvision -> Flax port: parity with torch reference modules that carry torchvision's key names.

torchvision is not installed, so the reference AlexNet, VGG16 and ResNets are rebuilt here with the
same module structure (features.0 ... classifier.6; conv1, bn1, layerK.J.*, downsample.0/1, fc) and
random weights and BatchNorm running statistics. Outputs must agree within float32 rounding:
|ours - torch| <= 1e-4 * |torch| + 1e-4 * max|torch| per tensor (rtol 1e-4, atol relative to the
activation scale). Measured on CPU: at most 2e-6 of the scale. The parity tests pin float32
matmul/conv precision so that they also hold on GPUs that default to TF32.
"""

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as fnn
from flax import traverse_util
from torch import nn

from jwsol.errors import DataError
from jwsol.models.alexnet import AlexNet, adaptive_avg_pool
from jwsol.models.resnet import ResNet
from jwsol.models.vgg import VGG16, VGGFC67, VGG16Features
from jwsol.weights import merge
from jwsol.weights import torchvision as tv

# ---------------------------------------------------------------- torch references (torchvision layout)


class TorchAlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(3, 2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
            nn.Linear(4096, num_classes),
        )  # fmt: skip

    def forward(self, x):
        conv5 = self.features[:12](x)
        pool5 = self.features[12](conv5)
        logits = self.classifier(torch.flatten(self.avgpool(pool5), 1))
        return {"conv5": conv5, "pool5": pool5, "logits": logits}


class TorchVGG16(nn.Module):
    """torchvision vgg16 (cfg "D", no BatchNorm); hidden < 4096 only for the fast parity test."""

    def __init__(self, num_classes: int = 1000, hidden: int = 4096):
        super().__init__()
        layers, channels = [], 3
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M"):  # fmt: skip
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=True)]
                channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )  # fmt: skip

    def forward(self, x):
        conv5_3 = self.features[:30](x)
        pool5 = self.features[30](conv5_3)
        logits = self.classifier(torch.flatten(self.avgpool(pool5), 1))
        return {"conv5_3": conv5_3, "pool5": pool5, "logits": logits}


class TorchBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: stride here
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        acts = {"stem": self.maxpool(torch.relu(self.bn1(self.conv1(x))))}
        x = acts["stem"]
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = acts[name] = getattr(self, name)(x)
        acts["logits"] = self.fc(torch.flatten(self.avgpool(x), 1))
        return acts


TORCH_RESNETS = {
    "resnet18": (TorchBasicBlock, (2, 2, 2, 2)),
    "resnet34": (TorchBasicBlock, (3, 4, 6, 3)),
    "resnet50": (TorchBottleneck, (3, 4, 6, 3)),
}


@functools.cache
def torch_model(arch: str, num_classes: int = 10, hidden: int = 4096) -> nn.Module:
    """Random reference model in eval mode: random biases and BatchNorm affine/running stats.

    hidden: vgg16's fc6/fc7 width (the others ignore it).
    """
    torch.manual_seed(sum(map(ord, arch)) + num_classes)
    if arch == "alexnet":
        model = TorchAlexNet(num_classes)
    elif arch == "vgg16":
        model = TorchVGG16(num_classes, hidden)
    else:
        block, layers = TORCH_RESNETS[arch]
        model = TorchResNet(block, layers, num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and arch != "alexnet":  # as torchvision's ResNet/VGG init
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(1000)
    return model.eval()


@pytest.fixture(scope="module")
def resnet18_pth(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pth") / "resnet18.pth")
    torch.save(torch_model("resnet18").state_dict(), path)
    return path


@functools.cache
def ported(arch: str):
    """Ported from the in-memory state_dict; the .pth route is tested once, with resnet18."""
    return tv.from_torch(torch_model(arch).state_dict(), arch)


def assert_close(ours, ref, name=""):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, name
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=name)


def nhwc_to_nchw(x):
    return torch.tensor(np.asarray(x).transpose(0, 3, 1, 2))


def nchw_to_nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def shape_tree(tree):
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


# ---------------------------------------------------------------- parity


@pytest.mark.slow
@pytest.mark.parametrize("height, width", [(224, 224), (256, 192)])  # 6x6 and 7x5 before the pool
@jax.default_matmul_precision("float32")
def test_alexnet_parity(height, width):
    x = np.random.default_rng(0).normal(size=(2, height, width, 3)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model("alexnet")(nhwc_to_nchw(x))
    apply = jax.jit(AlexNet(num_classes=10).apply, static_argnames="return_activations")
    logits, acts = apply(ported("alexnet"), x, return_activations=True)
    assert_close(acts["conv5"], nchw_to_nhwc(ref["conv5"]), "conv5")
    assert_close(acts["pool5"], nchw_to_nhwc(ref["pool5"]), "pool5")
    assert_close(logits, ref["logits"].numpy(), "logits")


def _vgg_parity(variables, model, x, hidden):
    with torch.no_grad():
        ref = torch_model("vgg16", hidden=hidden)(nhwc_to_nchw(x))
    apply = jax.jit(model.apply, static_argnames="return_activations")
    logits, acts = apply(variables, x, return_activations=True)
    assert_close(acts["conv5_3"], nchw_to_nhwc(ref["conv5_3"]), "conv5_3")
    assert_close(acts["pool5"], nchw_to_nhwc(ref["pool5"]), "pool5")
    assert_close(logits, ref["logits"].numpy(), "logits")


NARROW_FC = 64  # fc6/fc7 width of the fast VGG16 tests (torchvision's is 4096)


@functools.cache
def ported_narrow_vgg16():
    """torch_model('vgg16', hidden=NARROW_FC) through the port table, into VGG16's init shapes."""
    model = VGG16(num_classes=10, fc_features=NARROW_FC)
    expected = traverse_util.flatten_dict(
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3))), sep="/"
    )
    state_dict = torch_model("vgg16", hidden=NARROW_FC).state_dict()
    return tv.port_state_dict(state_dict, tv.VGG16_TABLE, expected, "narrow vgg16")


@pytest.mark.parametrize("height, width", [(32, 32), (64, 80)])  # pool5 1x1 and 2x2 -> 7x7
@jax.default_matmul_precision("float32")
def test_vgg16_parity_small_input_narrow_fc(height, width):
    """The full conv trunk and the port table, with narrow fc6/fc7 so the test stays fast."""
    x = np.random.default_rng(4).normal(size=(2, height, width, 3)).astype(np.float32)
    model = VGG16(num_classes=10, fc_features=NARROW_FC)
    _vgg_parity(ported_narrow_vgg16(), model, x, hidden=NARROW_FC)


class VGGDetectorShaped(fnn.Module):
    """The trunk a Fast R-CNN style detector builds on vgg16 (conv5_3 at stride 16, 7x7 regions,
    fc6/fc7, a new head), with one whole-image region so torch can give the same numbers."""

    @fnn.compact
    def __call__(self, x):
        conv5_3 = VGG16Features(include_last_pool=False, name="features")(x)
        regions = adaptive_avg_pool(conv5_3, 7)[:, None]  # [N, 1, 7, 7, 512]
        fc7 = VGGFC67(features=NARROW_FC, name="fc67")(regions)  # [N, 1, NARROW_FC]
        return conv5_3, fc7, fnn.Dense(3, name="head")(fc7)


@jax.default_matmul_precision("float32")
def test_vgg16_trunk_merges_into_a_detector_without_renaming():
    x = np.random.default_rng(7).normal(size=(2, 48, 64, 3)).astype(np.float32)
    detector = VGGDetectorShaped()
    init = detector.init(jax.random.key(0), x)
    variables, report = merge.merge_pretrained(init, ported_narrow_vgg16())
    assert report.loaded == ["params/fc67", "params/features"]
    assert report.kept_init == ["params/head"] and report.unused == ["params/fc8"]
    conv5_3, fc7, _ = jax.jit(detector.apply)(variables, x)
    reference = torch_model("vgg16", hidden=NARROW_FC)
    with torch.no_grad():
        ref_conv5_3 = reference.features[:30](nhwc_to_nchw(x))  # features[:-1]: no last pool
        pooled = torch.nn.functional.adaptive_avg_pool2d(ref_conv5_3, 7)
        ref_fc7 = reference.classifier[:6](pooled.flatten(1))
    assert conv5_3.shape == (2, 3, 4, 512)  # 48 // 16, 64 // 16
    assert_close(conv5_3, nchw_to_nhwc(ref_conv5_3), "conv5_3")
    assert_close(fc7[:, 0], ref_fc7.numpy(), "fc7")


@pytest.mark.slow
@jax.default_matmul_precision("float32")
def test_vgg16_parity_full_size():
    x = np.random.default_rng(5).normal(size=(2, 224, 224, 3)).astype(np.float32)
    _vgg_parity(ported("vgg16"), VGG16(num_classes=10), x, hidden=4096)


# resnet34 has resnet18's blocks; its table is covered by test_ported_tree_has_the_shapes_of_init.
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@jax.default_matmul_precision("float32")
@pytest.mark.slow
def test_resnet_parity_eval_mode(arch):
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(arch)(nhwc_to_nchw(x))
    model = ResNet(depth=tv.RESNET_DEPTHS[arch], num_classes=10)
    logits, acts = jax.jit(model.apply, static_argnames="return_activations")(
        ported(arch), x, return_activations=True
    )
    for name in ("stem", "layer1", "layer2", "layer3", "layer4"):
        assert_close(acts[name], nchw_to_nhwc(ref[name]), f"{arch} {name}")
    assert_close(logits, ref["logits"].numpy(), f"{arch} logits")


@pytest.mark.slow
@jax.default_matmul_precision("float32")
def test_resnet_gradcam_matches_torch():
    """Gradients of a class score w.r.t. layer4 and the Grad-CAM map, against torch autograd."""
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    target = 3
    ref = torch_model("resnet18")(nhwc_to_nchw(x))
    ref["layer4"].retain_grad()
    ref["logits"][:, target].sum().backward()
    ref_grad = nchw_to_nhwc(ref["layer4"].grad)

    model, variables = ResNet(depth=18, num_classes=10), ported("resnet18")
    features = jax.jit(lambda v, x: model.apply(v, x, method=ResNet.features))
    layer4 = features(variables, x)["layer4"]

    def score(a):
        return model.apply(variables, a, method=ResNet.head)[:, target].sum()

    grad = jax.grad(score)(layer4)
    assert_close(grad, ref_grad, "d score / d layer4")

    def gradcam(act, g):  # [N, h, w, C] -> [N, h, w]
        weights = g.mean(axis=(1, 2), keepdims=True)
        return np.maximum((weights * act).sum(-1), 0)

    ref_act = nchw_to_nhwc(ref["layer4"])
    assert_close(gradcam(np.asarray(layer4), np.asarray(grad)), gradcam(ref_act, ref_grad), "cam")


# ---------------------------------------------------------------- tree and key checks


@pytest.mark.slow
@pytest.mark.parametrize("arch", tv.ARCHS)
def test_ported_tree_has_the_shapes_of_init(arch):
    if arch == "alexnet":
        model, x, table = AlexNet(num_classes=10), jnp.zeros((1, 224, 224, 3)), tv.ALEXNET_TABLE
    elif arch == "vgg16":
        model, x, table = VGG16(num_classes=10), jnp.zeros((1, 224, 224, 3)), tv.VGG16_TABLE
    else:
        depth = tv.RESNET_DEPTHS[arch]
        model, x = ResNet(depth=depth, num_classes=10), jnp.zeros((1, 64, 64, 3))
        table = tv.resnet_table(depth)
    init = jax.eval_shape(model.init, jax.random.key(0), x)
    tree = ported(arch)
    assert shape_tree(tree) == shape_tree(init)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(tree))
    assert sorted(row.torch_key for row in table) == sorted(torch_model(arch).state_dict())


def test_fc6_permutation_is_nhwc_flatten():
    # A one-hot input at (h, w, c) must pick the torch weight column c*36 + h*6 + w.
    w = np.random.default_rng(3).normal(size=(7, 9216)).astype(np.float32)
    kernel = tv._fc6_permute(w)
    for h, wi, c in [(0, 0, 0), (2, 5, 17), (5, 1, 255)]:
        x = np.zeros((6, 6, 256), np.float32)
        x[h, wi, c] = 1
        np.testing.assert_array_equal(x.reshape(-1) @ kernel, w[:, c * 36 + h * 6 + wi])


def test_vgg_fc6_permutation_is_nhwc_flatten():
    # A one-hot input at (h, w, c) of the 7x7x512 pool must pick torch column c*49 + h*7 + w.
    w = np.random.default_rng(6).normal(size=(5, 25088)).astype(np.float32)
    kernel = tv._TRANSFORMS["vgg_fc6"][1](w)
    for h, wi, c in [(0, 0, 0), (3, 6, 100), (6, 2, 511)]:
        x = np.zeros((7, 7, 512), np.float32)
        x[h, wi, c] = 1
        np.testing.assert_array_equal(x.reshape(-1) @ kernel, w[:, c * 49 + h * 7 + wi])


def _resnet18_state_dict():
    return {k: v.numpy() for k, v in torch_model("resnet18").state_dict().items()}


def test_missing_key_is_named():
    sd = _resnet18_state_dict()
    del sd["layer2.0.downsample.1.running_var"]
    with pytest.raises(DataError, match=r"missing keys: layer2\.0\.downsample\.1\.running_var"):
        tv.resnet_from_torch(sd, 18)


def test_unexpected_key_is_named():
    sd = _resnet18_state_dict()
    sd["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(DataError, match=r"unexpected keys: layer5\.0\.conv1\.weight"):
        tv.resnet_from_torch(sd, 18)
    # A resnet50 checkpoint offered as resnet18 fails the same way.
    with pytest.raises(DataError, match="unexpected keys: .*layer1.0.conv3.weight"):
        tv.resnet_from_torch(
            {k: v.numpy() for k, v in torch_model("resnet50").state_dict().items()}, 18
        )


def test_wrong_shape_is_named():
    sd = _resnet18_state_dict()
    sd["layer3.1.conv2.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    with pytest.raises(DataError, match=r"layer3\.1\.conv2\.weight -> params/layer3/block1/conv2"):
        tv.resnet_from_torch(sd, 18)
    sd = _resnet18_state_dict()
    sd["bn1.weight"] = np.zeros((64, 1), np.float32)
    with pytest.raises(DataError, match=r"bn1\.weight has shape \(64, 1\)"):
        tv.resnet_from_torch(sd, 18)


def test_wrong_arch_state_dict_is_named():
    with pytest.raises(DataError, match=r"\(vgg16\).*missing keys: features\.0\.weight"):
        tv.from_torch(_resnet18_state_dict(), "vgg16")
    vgg = {k: v.numpy() for k, v in torch_model("vgg16", hidden=NARROW_FC).state_dict().items()}
    with pytest.raises(DataError, match=r"\(alexnet\).*unexpected keys: classifier\.0\.bias"):
        tv.from_torch(vgg, "alexnet")
    # fc6/fc7 must be torchvision's 4096 wide.
    narrow = r"fc6/kernel has shape \(25088, 64\) after vgg_fc6, the model wants \(25088, 4096\)"
    with pytest.raises(DataError, match=r"classifier\.0\.weight -> params/fc67/" + narrow):
        tv.from_torch(vgg, "vgg16")


def test_old_checkpoints_without_num_batches_tracked_load():
    sd = {k: v for k, v in _resnet18_state_dict().items() if "num_batches_tracked" not in k}
    assert shape_tree(tv.resnet_from_torch(sd, 18)) == shape_tree(
        tv.resnet_from_torch(_resnet18_state_dict(), 18)
    )


def test_drop_classifier():
    sd = _resnet18_state_dict()
    dropped = tv.resnet_from_torch(sd, 18, drop_classifier=True)
    assert "fc" not in dropped["params"]
    without_fc = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    assert shape_tree(tv.resnet_from_torch(without_fc, 18, drop_classifier=True)) == shape_tree(
        dropped
    )
    with pytest.raises(DataError, match="missing keys: fc.weight, fc.bias"):
        tv.resnet_from_torch(without_fc, 18)


# ---------------------------------------------------------------- files and the command


@pytest.mark.slow
def test_command_round_trip_without_torch(resnet18_pth, tmp_path):
    pth, out = resnet18_pth, str(tmp_path / "resnet18")
    cmd = [sys.executable, "-m", "jwsol.weights.torchvision", "--arch", "resnet18", "--pth", pth]
    done = subprocess.run(cmd + ["--out", out], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "num_classes=10" in done.stdout
    assert "Warning" not in done.stderr, done.stderr

    loaded = tv.load_pretrained(out, "resnet18")
    want = traverse_util.flatten_dict(ported("resnet18"), sep="/")
    got = traverse_util.flatten_dict(loaded, sep="/")
    assert sorted(got) == sorted(want)
    for path, value in want.items():
        np.testing.assert_array_equal(got[path], value, err_msg=path)

    # Importing jwsol's models and loading the converted folder must not import torch.
    check = (
        "import sys\n"
        "from jwsol.weights.torchvision import load_pretrained\n"
        "from jwsol.models import alexnet, localizer, resnet, vgg\n"
        f"v = load_pretrained({out!r}, 'resnet18', drop_classifier=True)\n"
        "assert 'fc' not in v['params'] and 'layer4' in v['batch_stats']\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_vgg16_command_round_trip(tmp_path):
    pth, out = str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg16")
    torch.save(torch_model("vgg16").state_dict(), pth)
    cmd = [sys.executable, "-m", "jwsol.weights.torchvision", "--arch", "vgg16", "--pth", pth]
    done = subprocess.run(cmd + ["--out", out], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "vgg16, 32 arrays, 134,301,514 values, num_classes=10" in done.stdout
    got = traverse_util.flatten_dict(tv.load_pretrained(out, "vgg16"), sep="/")
    want = traverse_util.flatten_dict(ported("vgg16"), sep="/")
    assert sorted(got) == sorted(want)
    for path, value in want.items():
        np.testing.assert_array_equal(got[path], value, err_msg=path)
    trunk = tv.load_pretrained(out, "vgg16", drop_classifier=True)["params"]
    assert sorted(trunk) == ["fc67", "features"]
    with pytest.raises(DataError, match="holds arch='vgg16'"):
        tv.load_pretrained(out, "alexnet")


def test_vgg16_command_errors(resnet18_pth, tmp_path, capsys):
    missing = str(tmp_path / "vgg16-397923af.pth")
    assert tv.main(["--arch", "vgg16", "--pth", missing, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in err
    assert "python -m jwsol.weights.torchvision --arch vgg16 --pth vgg16-397923af.pth" in err
    assert tv.main(["--arch", "vgg16", "--pth", resnet18_pth, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{resnet18_pth} (vgg16): state_dict does not match" in err


def test_command_error_exits_2(tmp_path, capsys):
    missing = str(tmp_path / "resnet50-0676ba61.pth")
    assert tv.main(["--arch", "resnet50", "--pth", missing, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in err
    assert "python -m jwsol.weights.torchvision --arch resnet50" in err


def test_load_pretrained_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        tv.load_pretrained(str(tmp_path / "nowhere"), "alexnet")
    message = str(err.value)
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message
    assert (
        "python -m jwsol.weights.torchvision --arch alexnet --pth alexnet-owt-7be5be79.pth"
        in message
    )


def test_load_pretrained_rejects_pth_and_wrong_arch(resnet18_pth, tmp_path):
    with pytest.raises(DataError, match="is a torch checkpoint; convert it first"):
        tv.load_pretrained(resnet18_pth, "resnet18")
    out = str(tmp_path / "r18")
    tv.convert(resnet18_pth, "resnet18", out)
    with pytest.raises(DataError, match="holds arch='resnet18'"):
        tv.load_pretrained(out, "resnet34")
