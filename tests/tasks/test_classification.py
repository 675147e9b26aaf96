"""The classification task: a smoke run through the shared loop on the fake tiny-imagenet source,
--mode=eval, the evaluator's metrics against torch, and the Fashion-MNIST (IDX) source."""

import json
import os

import numpy as np
import pytest
import torch

from jwsol import tasks
from jwsol.data import classification as classification_data
from jwsol.errors import ConfigError, DataError
from jwsol.tasks import classification
from jwsol.training import config as config_lib
from jwsol.training import loop
from jwsol.viz import curves


def smoke(cache_dir, **overrides):
    return config_lib.load(
        "configs/resnet_tinyimagenet.py:smoke",
        {"data.cache_dir": cache_dir, "train.progress_bar": False, **overrides},
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Where the smoke variant writes its fake tiny-imagenet folder."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def smoke_run(cache_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    return workdir, loop.run(tasks.build(smoke(cache_dir)), workdir)


@pytest.mark.slow
def test_smoke_run_writes_metrics_figures_and_curves(smoke_run):
    workdir, metrics = smoke_run
    with open(os.path.join(workdir, "eval_metrics.json")) as f:
        final = json.load(f)
    assert set(final) >= {"top1", "top5", "loss", "num_examples", "step"}
    assert final["num_examples"] == 18 and final["step"] == 4
    assert final["top1"] == pytest.approx(metrics["top1"])
    assert 0.0 <= final["top1"] <= final["top5"] <= 1.0 and np.isfinite(final["loss"])
    assert os.path.exists(os.path.join(workdir, "figures", "gradcam_mistakes.png"))
    rows = curves.read_metrics(os.path.join(workdir, "metrics.jsonl"))
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == [2, 4]
    assert all(0.0 <= r["top1"] <= 1.0 and np.isfinite(r["loss"]) for r in train)
    assert [r["step"] for r in rows if "eval/top1" in r] == [2, 4]
    assert curves.default_panels(rows) == ["loss", "top1"]
    assert curves.main([workdir]) == 0
    assert os.path.exists(os.path.join(workdir, "figures", "curves.png"))


@pytest.mark.slow
def test_eval_mode_reproduces_the_final_metrics(cache_dir, smoke_run):
    workdir, metrics = smoke_run
    again = loop.run(tasks.build(smoke(cache_dir)), workdir, mode="eval")
    assert again == pytest.approx(metrics, rel=1e-6)


def test_evaluator_metrics_against_torch():
    rng = np.random.default_rng(0)
    n, c = 40, 7
    logits = rng.normal(size=(n, c)).astype(np.float32) * 3
    labels = rng.integers(0, c, n)
    logits[0] = 0.0  # all tied: counts as top-1 and top-5 by the "strictly above" rule
    names = tuple(f"c{k}" for k in range(c))
    evaluator = classification.ClassificationEvaluator(names, (0.5,) * 3, (0.2,) * 3, 4)
    for part in np.array_split(np.arange(n), 3):
        images = rng.normal(size=(len(part), 8, 8, 3)).astype(np.float32)
        cams = rng.uniform(size=(len(part), 2, 2)).astype(np.float32)
        evaluator.add({"image": images, "label": labels[part]},
                      {"logits": logits[part], "cam_pred": cams, "cam_true": cams})  # fmt: skip
    metrics, figures = evaluator.result()
    t_logits, t_labels = torch.tensor(logits), torch.tensor(labels)
    ce = torch.nn.functional.cross_entropy(t_logits.double(), t_labels).item()
    top5 = (t_logits[1:].topk(5, dim=1).indices == t_labels[1:, None]).any(dim=1)
    assert metrics["loss"] == pytest.approx(ce, rel=1e-9)
    assert metrics["top5"] == pytest.approx((top5.sum().item() + 1) / n)
    expected_top1 = (np.sum(logits[1:].argmax(1) == labels[1:]) + (labels[0] == 0)) / n
    assert metrics["top1"] == pytest.approx(expected_top1)
    assert metrics["num_examples"] == n
    assert figures["gradcam_mistakes"].dtype == np.uint8
    assert sum(len(m[0]) for m in evaluator.mistakes) == 4


def test_fashion_mnist_source_is_padded_and_named(idx_folder):
    config = config_lib.load(
        "configs/resnet_tinyimagenet.py:fashion_mnist",
        {"data.mnist.folder": idx_folder, "data.num_train": 50},
    )
    (train_x, train_y), (test_x, _), names = classification_data.load_source(config.data)
    assert train_x.shape == (50, 32, 32) and test_x.shape == (64, 32, 32)
    assert train_x.dtype == np.uint8 and len(names) == 10
    assert not train_x[:, :2].any() and not train_x[:, -2:].any()  # 2 px zero border
    task = classification.ClassificationTask(config)
    batch = next(task.train_batches(0, 8, 0, 1))
    assert batch["image"].shape == (8, 32, 32, 3) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["label"], train_y[batch["index"]])


def test_source_errors(tmp_path, idx_folder):
    config = config_lib.load(
        "configs/resnet_tinyimagenet.py:smoke",
        {"data.source": "tinyimagenet", "data.folder": str(tmp_path)},
    )
    with pytest.raises(DataError, match="wnids.txt is missing"):
        classification_data.load_source(config.data)
    with config.unlocked():
        config.data.source = "bogus"
    with pytest.raises(ConfigError, match="data.source='bogus'"):
        classification_data.load_source(config.data)
    small = config_lib.load(
        "configs/resnet_tinyimagenet.py:fashion_mnist",
        {"data.mnist.folder": idx_folder, "data.image_size": 24},
    )
    with pytest.raises(ConfigError, match="data.image_size=24 is smaller than the 28x28"):
        classification_data.load_source(small.data)
    missing = config_lib.load(
        "configs/resnet_tinyimagenet.py:fashion_mnist",
        {"data.mnist.folder": idx_folder, "pretrained.path": str(tmp_path / "none")},
    )
    with pytest.raises(DataError, match="pretrained.path=.* does not exist.*--arch resnet18"):
        classification.ClassificationTask(missing)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.depth": 101}, "model.depth=101"),
        (
            {"pretrained.path": "/", "pretrained.arch": "alexnet"},
            "pretrained.arch='alexnet', but the model takes 'resnet18'",
        ),
    ],
)
def test_bad_model_values_are_config_errors(idx_folder, overrides, message):
    config = config_lib.load(
        "configs/resnet_tinyimagenet.py:fashion_mnist",
        {"data.mnist.folder": idx_folder, **overrides},
    )
    with pytest.raises(ConfigError, match=message):
        classification.ClassificationTask(config)


def test_pretrained_weights_fill_all_but_stem_conv_and_classifier(tmp_path, idx_folder):
    import jax
    from flax import traverse_util

    from jwsol.models.resnet import ResNet
    from jwsol.weights import store

    # A converted resnet18 folder (7x7 stem, no classifier) whose every value is 1.
    shapes = jax.eval_shape(ResNet(depth=18, num_classes=1).init, jax.random.key(0), np.zeros((1, 64, 64, 3)))  # fmt: skip
    flat = traverse_util.flatten_dict(shapes, sep="/")
    weights = {
        k: np.ones(v.shape, v.dtype) for k, v in flat.items() if not k.startswith("params/fc/")
    }
    folder = str(tmp_path / "w")
    meta = {"format": store.FORMAT, "arch": "resnet18", "num_classes": None}
    store.save_variables(traverse_util.unflatten_dict(weights, sep="/"), folder, meta)

    config = config_lib.load(
        "configs/resnet_tinyimagenet.py:fashion_mnist",
        {
            "data.mnist.folder": idx_folder,
            "pretrained.path": folder,
            "pretrained.from_scratch": False,
        },
    )
    task = classification.ClassificationTask(config)  # small_input: a 3x3 stem
    fresh = jax.eval_shape(
        task.init_variables, jax.random.key(0), {"image": np.zeros((1, 32, 32, 3))}
    )
    fresh = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), fresh)
    merged = traverse_util.flatten_dict(task.load_pretrained(fresh), sep="/")
    for key, value in merged.items():
        kept = key.startswith(("params/conv1/", "params/fc/"))
        assert np.all(np.asarray(value) == (7.0 if kept else 1.0)), key
