"""The Fashion-MNIST pretrained trunk: rendering against cv2, the cached folder, and its load into
the scenes jobs through `config.pretrained` (`merge.require` / `load_into`), as ImageNet weights."""

import os

import cv2
import jax
import numpy as np
import pytest
from flax import traverse_util

from configs import common
from jwsol.data import fake
from jwsol.errors import ConfigError
from jwsol.tasks.wsddn import WSDDNTask
from jwsol.training import config as config_lib
from jwsol.weights import merge, pretrain, store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_render_matches_cv2_resize_on_a_black_canvas():
    images, _ = fake.mnist("train")
    images = images[:4].copy()
    images[:, 5:9, 3:20] = np.arange(17, dtype=np.uint8) * 15  # a ramp makes the flip visible
    sides = np.array([40, 57, 80, 100], np.int32)
    offsets = np.array([[3, 5], [10, 0], [0, 20], [28, 0]], np.int32)
    flips = np.array([False, True, False, True])
    out = np.asarray(pretrain.render(images, sides, offsets, flips, 128))
    assert out.shape == (4, 128, 128, 3)
    grey = (out * pretrain.IMAGENET_STD + pretrain.IMAGENET_MEAN) * 255.0
    for k in range(4):
        source = images[k][:, ::-1] if flips[k] else images[k]
        want = np.zeros((128, 128), np.float32)
        (y, x), side = offsets[k], sides[k]
        want[y : y + side, x : x + side] = cv2.resize(source, (side, side), cv2.INTER_LINEAR)
        for c in range(3):  # cv2 rounds to uint8: within one grey level
            np.testing.assert_allclose(grey[k, ..., c], want, atol=1.0)


def test_hide_and_seek_blacks_out_whole_grid_cells():
    images = np.full((3, 28, 28), 200, np.uint8)
    sides, offsets, flips = np.full(3, 64), np.zeros((3, 2), int), np.zeros(3, bool)
    recipe = pretrain.Recipe(hide_prob=0.5, hide_grid=4)
    kept = pretrain.draw_kept_cells(np.random.default_rng(0), 3, recipe)
    assert kept.shape == (3, 4, 4) and 0 < kept.mean() < 1
    full = np.asarray(pretrain.render(images, sides, offsets, flips, 64))
    hidden = np.asarray(pretrain.render(images, sides, offsets, flips, 64, kept))
    black = (0.0 - pretrain.IMAGENET_MEAN) / pretrain.IMAGENET_STD
    mask = np.kron(kept, np.ones((16, 16), bool))[..., None]  # 16 px cells
    np.testing.assert_allclose(hidden, np.where(mask, full, black), atol=1e-6)


def test_placements_stay_inside_the_canvas():
    recipe = pretrain.Recipe(image_size=100, min_object_size=30, max_object_size=100)
    sides, offsets, flips = pretrain.draw_placements(np.random.default_rng(0), 1000, recipe)
    assert sides.min() >= 30 and sides.max() <= 100 and len(np.unique(sides)) > 50
    assert offsets.min() >= 0 and np.all(offsets + sides[:, None] <= 100)
    assert 0.4 < flips.mean() < 0.6


def _smoke_pretrained(path: str, **recipe):
    """configs/wsddn.py:smoke (fake data) with a tiny fashion_mnist recipe writing to `path`."""
    config = config_lib.load(os.path.join(ROOT, "configs/wsddn.py:smoke"))
    with config.unlocked():
        config.pretrained = common.fashion_mnist_pretrained(config, steps=3)
        config.pretrained.path = path
        r = config.pretrained.recipe
        r.mnist.source = "fake"
        r.batch_size, r.holdout, r.warmup_steps = 8, 32, 1
        for key, value in recipe.items():
            r[key] = value
    return config


def _dummy_batch(config, n: int = 2, r: int = 6) -> dict:
    size = config.data.image_size
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, size / 2, (n, r, 2))
    return {
        "image": rng.normal(size=(n, size, size, 3)).astype(np.float32),
        "proposals": np.concatenate([corners, corners + size / 3], -1).astype(np.float32),
        "proposal_mask": np.ones((n, r), bool),
        "proposal_scores": np.zeros((n, r), np.float32),
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A WSDDN smoke config whose pretrained folder `merge.require` has just made."""
    path = str(tmp_path_factory.mktemp("weights") / "trunk")
    config = _smoke_pretrained(path)
    assert not os.path.exists(path)
    assert merge.require(config.pretrained, "alexnet") == path
    return config


def test_the_recipe_writes_the_store_format(made):
    path = made.pretrained.path
    assert sorted(os.listdir(path)) == [store.META_FILE, store.VARIABLES_FILE]
    variables, meta, _ = store.load_variables(path, "alexnet")
    assert meta["recipe"] == "fashion_mnist" and meta["steps"] == 3
    assert meta["settings"] == pretrain.Recipe.from_config(made.pretrained.recipe).settings()
    assert 0.0 <= meta["holdout_accuracy"] <= 1.0
    # The trunk and fc6/fc7 (the smoke model's are 16 wide), with BatchNorm state; the 10-way
    # head stays behind.
    assert set(variables) == {"params", "batch_stats"}
    assert set(variables["params"]) == {"features", "fc67"}
    assert set(variables["batch_stats"]) == {"features"}
    assert variables["params"]["fc67"]["fc7"]["kernel"].shape == (16, 16)
    assert sorted(variables["batch_stats"]["features"]) == [f"bn{k}" for k in range(1, 6)]
    assert variables["params"]["features"]["conv2"]["kernel"].shape == (5, 5, 8, 24)  # width 1/8


def test_wsddn_loads_the_trunk_and_keeps_its_heads(made):
    task = WSDDNTask(made)
    init = jax.device_get(task.init_variables(jax.random.key(1), _dummy_batch(made)))
    merged = task.load_pretrained(init)
    saved, _, _ = store.load_variables(made.pretrained.path, "alexnet")
    saved = traverse_util.flatten_dict(saved, sep="/")
    init, merged = (traverse_util.flatten_dict(v, sep="/") for v in (init, merged))
    assert set(merged) == set(init)
    trunk = [p for p in merged if p.split("/")[1] in ("features", "fc67")]
    # conv kernel, bn scale, bn bias and 2 stats per layer; fc6, fc7 kernel and bias
    assert sorted(trunk) == sorted(saved) and len(trunk) == 5 * 5 + 2 * 2
    for p in trunk:
        np.testing.assert_array_equal(merged[p], saved[p])
        assert not np.array_equal(merged[p], init[p]) or p.endswith(("bias", "mean"))
    heads = [p for p in merged if p not in saved]
    assert {p.split("/")[1] for p in heads} == {"cls_head", "det_head"}
    for p in heads:
        np.testing.assert_array_equal(merged[p], init[p])


def test_a_second_call_reuses_the_folder(made, monkeypatch):
    mtime = os.path.getmtime(os.path.join(made.pretrained.path, store.VARIABLES_FILE))
    monkeypatch.setattr(pretrain, "train", lambda *a, **k: pytest.fail("trained again"))
    assert merge.require(made.pretrained) == made.pretrained.path
    assert os.path.getmtime(os.path.join(made.pretrained.path, store.VARIABLES_FILE)) == mtime


def test_same_recipe_same_weights_and_a_damaged_or_stale_folder_is_remade(made, tmp_path):
    path = str(tmp_path / "trunk")
    config = _smoke_pretrained(path)
    pretrain.ensure(config.pretrained, progress=False)
    first, _, _ = store.load_variables(made.pretrained.path, "alexnet")
    again, _, _ = store.load_variables(path, "alexnet")
    jax.tree.map(np.testing.assert_array_equal, first, again)  # deterministic

    with open(os.path.join(path, store.VARIABLES_FILE), "wb") as f:
        f.write(b"\x00garbage")
    pretrain.ensure(config.pretrained, progress=False)
    again, _, _ = store.load_variables(path, "alexnet")
    jax.tree.map(np.testing.assert_array_equal, first, again)

    with config.unlocked():
        config.pretrained.recipe.steps = 4
        config.pretrained.recipe.fc_features = 0  # the global-average-pool head
    pretrain.ensure(config.pretrained, progress=False)
    assert pretrain.read_meta(path)["steps"] == 4
    again, _, _ = store.load_variables(path, "alexnet")
    assert set(again["params"]) == {"features"}


def test_ported_weights_are_never_overwritten(tmp_path):
    path = str(tmp_path / "alexnet")
    store.save_variables({"params": {}}, path, {"format": store.FORMAT, "arch": "alexnet"})
    config = _smoke_pretrained(path)
    with pytest.raises(ConfigError, match="holds other weights"):
        merge.require(config.pretrained)


def test_recipe_field_errors():
    with pytest.raises(ConfigError, match="unknown fields \\['stpes'\\]"):
        pretrain.Recipe.from_config({"stpes": 3})
    with pytest.raises(ConfigError, match="hide_prob=1.0 must lie in"):
        pretrain.Recipe.from_config({"hide_prob": 1.0})
    with pytest.raises(ConfigError, match="object sizes 80..200 must lie in 4..image_size"):
        pretrain.Recipe.from_config({"min_object_size": 80, "max_object_size": 200})
    section = common.pretrained("alexnet", "/nowhere")
    section.make = "fashion_mnist"
    with pytest.raises(ConfigError, match="needs a pretrained.recipe section"):
        merge.require(section)


def test_scenes_configs_name_their_trunk_and_its_scale():
    wsddn = config_lib.load(os.path.join(ROOT, "configs/wsddn.py:scenes"))
    p, m = wsddn.pretrained, wsddn.model
    assert (p.make, p.arch, p.from_scratch) == ("fashion_mnist", "alexnet", False)
    assert (p.recipe.width, p.recipe.batch_norm) == (m.width, m.batch_norm) == (0.25, True)
    assert p.recipe.fc_features == m.fc_features == 256
    # 32-64 px objects on 128 px canvases, resized to 320: the trunk sees them at 80-160 px.
    assert (p.recipe.min_object_size, p.recipe.max_object_size) == (80, 160)
    assert p.path == "~/.cache/jwsol/weights/fashion_mnist_alexnet_w0.25_bn_fc256_o80-160"
    localizer = config_lib.load(os.path.join(ROOT, "configs/localizer.py:scenes")).pretrained
    assert (localizer.make, localizer.recipe.batch_norm) == ("fashion_mnist", False)
    assert localizer.recipe.fc_features == 0
    assert localizer.path.endswith("_w0.25_o48-96") and localizer.recipe.image_size == 96
    for name in ("wsddn", "localizer"):  # the smoke runs stay seconds long
        smoke = config_lib.load(os.path.join(ROOT, f"configs/{name}.py:smoke")).pretrained
        assert smoke.from_scratch and not smoke.make and not smoke.path


def test_command_errors_are_one_line_with_status_2(capsys):
    assert pretrain.main([]) == 2
    assert "usage: python -m jwsol.weights.pretrain" in capsys.readouterr().err
    assert pretrain.main([os.path.join(ROOT, "configs/wsddn.py:smoke")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pretrained.make is empty" in err
    assert pretrain._typed_override("pretrained.recipe.steps=600") == (
        "pretrained.recipe.steps",
        600,
    )
    assert pretrain._typed_override("pretrained.path=/tmp/w") == ("pretrained.path", "/tmp/w")
