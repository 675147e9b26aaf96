"""Merging ported weights into new models, and `load_into`: the one `config.pretrained` entry."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from jwsol.errors import ConfigError, DataError
from jwsol.models.alexnet import AlexNet
from jwsol.models.localizer import LocalizerAlexNet
from jwsol.models.resnet import ResNet
from jwsol.weights import merge, store

# ---------------------------------------------------------------- merging into new models


def _zeros_like_init(model, x):
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def ported(arch: str, num_classes: int = 10) -> dict:
    """Random variables with the tree a port of `arch` has (tests/weights/test_torchvision_port.py
    checks that the port fills exactly the model's init tree)."""
    if arch == "alexnet":
        model, x = AlexNet(num_classes=num_classes), jnp.zeros((1, 224, 224, 3))
    else:
        model, x = ResNet(depth=int(arch[6:]), num_classes=num_classes), jnp.zeros((1, 64, 64, 3))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


@pytest.mark.slow
def test_merge_into_localizer():
    init = _zeros_like_init(LocalizerAlexNet(num_classes=20), jnp.zeros((1, 128, 128, 3)))
    pretrained = ported("alexnet")
    merged, report = merge.merge_pretrained(init, pretrained)
    assert report.loaded == ["params/features"]
    assert report.kept_init == ["params/conv6", "params/conv7", "params/score"]
    assert report.unused == ["params/fc67", "params/fc8"]
    assert "from checkpoint (1): params/features" in str(report)
    for name in ("conv1", "conv5"):
        np.testing.assert_array_equal(
            merged["params"]["features"][name]["kernel"],
            pretrained["params"]["features"][name]["kernel"],
        )
    np.testing.assert_array_equal(merged["params"]["conv6"]["kernel"], 0)


def test_merge_rename_into_a_nested_backbone():
    backbone = _zeros_like_init(ResNet(depth=18, num_classes=None), jnp.zeros((1, 64, 64, 3)))
    init = {
        "params": {
            "backbone": backbone["params"],
            "head": {"kernel": np.zeros((512, 3), np.float32)},
        },
        "batch_stats": {"backbone": backbone["batch_stats"]},
    }
    pretrained = ported("resnet18")
    rename = {"params": "params/backbone", "batch_stats": "batch_stats/backbone"}
    merged, report = merge.merge_pretrained(init, pretrained, rename=rename)
    assert report.loaded == ["batch_stats", "params/backbone"]
    assert report.kept_init == ["params/head"]
    assert report.unused == ["params/fc"]
    np.testing.assert_array_equal(
        merged["batch_stats"]["backbone"]["layer4"]["block1"]["bn2"]["var"],
        pretrained["batch_stats"]["layer4"]["block1"]["bn2"]["var"],
    )


@pytest.mark.slow
def test_merge_shape_mismatch_and_exclude():
    init = _zeros_like_init(AlexNet(num_classes=20), jnp.zeros((1, 224, 224, 3)))
    pretrained = ported("alexnet")  # 10 classes
    with pytest.raises(DataError, match=r"params/fc8/(kernel|bias).*exclude"):
        merge.merge_pretrained(init, pretrained)
    merged, report = merge.merge_pretrained(init, pretrained, exclude=["params/fc8"])
    assert report.loaded == ["params/fc67", "params/features"]
    assert report.kept_init == report.unused == ["params/fc8"]
    assert merged["params"]["fc8"]["kernel"].shape == (4096, 20)


def _pretrained(arch: str, path: str = "", **fields) -> ml_collections.ConfigDict:
    fields = {"from_scratch": False, "exclude": (), "rename": "", **fields}
    return ml_collections.ConfigDict({"arch": arch, "path": path, **fields})


def _converted_folder(folder: str, arch: str) -> dict:
    """A folder as the conversion command writes it (classifier dropped); returns its weights."""
    flat = traverse_util.flatten_dict(ported(arch), sep="/")
    weights = traverse_util.unflatten_dict(
        {k: v for k, v in flat.items() if not k.startswith(("params/fc/", "params/fc8/"))}, sep="/"
    )
    store.save_variables(
        weights, folder, {"format": store.FORMAT, "arch": arch, "num_classes": None}
    )
    return weights


@pytest.mark.slow
def test_load_into_fills_all_but_the_excluded_stem_and_the_classifier(tmp_path):
    folder = str(tmp_path / "w")
    weights = traverse_util.flatten_dict(_converted_folder(folder, "resnet18"), sep="/")
    shapes = jax.eval_shape(ResNet(depth=18, num_classes=7, small_input=True).init, jax.random.key(0), np.zeros((1, 16, 16, 3)))  # fmt: skip
    fresh = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), shapes)
    assert merge.load_into(fresh, _pretrained("resnet18", from_scratch=True)) is None
    stem = ("params/conv1",)  # 3x3 here, 7x7 in the checkpoint: a shape error unless excluded
    with pytest.raises(DataError, match="params/conv1/kernel"):
        merge.load_into(fresh, _pretrained("resnet18", folder))
    merged = merge.load_into(
        fresh, _pretrained("resnet18", folder, exclude=("params/fc",)), exclude_extra=stem
    )
    for key, value in traverse_util.flatten_dict(merged, sep="/").items():
        if key.startswith(("params/fc/", "params/conv1/")):
            assert np.all(np.asarray(value) == 7.0), key  # kept their init
        else:
            np.testing.assert_array_equal(value, weights[key], err_msg=key)


def test_missing_weights_are_one_error_naming_the_command(tmp_path):
    with pytest.raises(ConfigError, match="pretrained.path is empty.*from_scratch=True"):
        merge.require(_pretrained("alexnet"))
    missing = str(tmp_path / "none")
    with pytest.raises(DataError, match="does not exist.*alexnet-owt-7be5be79.pth.*--arch alexnet"):
        merge.load_into({}, _pretrained("alexnet", missing))
    assert merge.require(_pretrained("alexnet", str(tmp_path))) == str(tmp_path)


@pytest.mark.slow
def test_load_into_renames_and_rejects_a_rename_that_matches_nothing(tmp_path):
    folder = str(tmp_path / "w")
    weights = _converted_folder(folder, "alexnet")
    conv1 = np.zeros_like(weights["params"]["features"]["conv1"]["kernel"])
    init = {"params": {"trunk": {"conv1": {"kernel": conv1}}}}
    renamed = merge.load_into(
        init, _pretrained("alexnet", folder, rename="params/features=params/trunk")
    )
    np.testing.assert_array_equal(renamed["params"]["trunk"]["conv1"]["kernel"], weights["params"]["features"]["conv1"]["kernel"])  # fmt: skip
    with pytest.raises(ConfigError, match="no weights .* matched"):
        merge.load_into(init, _pretrained("alexnet", folder, rename="params=params/other"))
