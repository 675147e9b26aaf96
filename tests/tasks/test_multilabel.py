"""The multi-label task: a smoke run through the shared loop on made-up scenes (five crops), the
evaluator against scikit-learn and brute force, tail accuracy by hand, crop pooling, errors."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from jwsol import tasks
from jwsol.data import fake
from jwsol.errors import ConfigError, DataError
from jwsol.tasks import multilabel
from jwsol.training import config as config_lib
from jwsol.training import loop
from jwsol.viz import curves


def smoke(idx_folder, cache_dir, **overrides):
    return config_lib.load(
        "configs/resnet_voc.py:smoke",
        {"data.cache_dir": cache_dir,
         "train.progress_bar": False, **overrides},
    )  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(idx_folder, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    cache = str(tmp_path_factory.mktemp("cache"))
    return workdir, loop.run(tasks.build(smoke(idx_folder, cache)), workdir)


@pytest.mark.slow
def test_smoke_run_writes_metrics_and_figures(smoke_run):
    workdir, metrics = smoke_run
    with open(os.path.join(workdir, "eval_metrics.json")) as f:
        final = json.load(f)
    assert set(final) >= {"map", "label_accuracy", "loss", "tail_acc", "num_examples", "step"}
    assert final["num_examples"] == 10 and final["step"] == 4
    assert len([k for k in final if k.startswith("ap/")]) == 10
    assert final["map"] == pytest.approx(metrics["map"])
    assert 0.0 <= final["map"] <= 1.0 and 0.0 <= final["label_accuracy"] <= 1.0
    for name in ("ranked_images", "tail_accuracy"):
        assert os.path.exists(os.path.join(workdir, "figures", f"{name}.png"))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4]
    assert all(np.isfinite(r["loss"]) and "label_accuracy" in r for r in rows if "loss" in r)
    assert curves.default_panels(rows) == ["label_accuracy", "loss"]  # train and test both


def test_evaluator_against_sklearn_and_brute_force():
    rng = np.random.default_rng(0)
    n, c = 37, 4
    scores = rng.uniform(size=(n, c))
    labels = (rng.uniform(size=(n, c)) < 0.4).astype(np.float32)
    weights = np.ones((n, c), np.float32)
    weights[rng.uniform(size=(n, c)) < 0.1] = 0.0
    thumbs = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    logits = np.log(scores / (1 - scores))
    evaluator = multilabel.MultiLabelEvaluator(["a", "b", "c", "d"], num_ranked=3, tail_top=10)
    for part in np.array_split(np.arange(n), 5):
        evaluator.add(
            {"labels": labels[part], "label_weights": weights[part], "thumbnail": thumbs[part]},
            {"scores": scores[part], "logits": logits[part]},
        )
    metrics, figures = evaluator.result()
    aps = []
    for k, name in enumerate("abcd"):
        keep = weights[:, k] > 0
        aps.append(average_precision_score(labels[keep, k], scores[keep, k]))
        assert metrics[f"ap/{name}"] == pytest.approx(aps[-1])
    assert metrics["map"] == pytest.approx(np.mean(aps))
    valid = weights > 0
    accuracy = (((scores >= 0.5) == (labels > 0.5)) & valid).sum() / valid.sum()
    assert metrics["label_accuracy"] == pytest.approx(accuracy)
    assert metrics["num_examples"] == n
    bce = torch.nn.BCEWithLogitsLoss(weight=torch.tensor(weights, dtype=torch.float64))
    reference = bce(torch.tensor(logits), torch.tensor(labels, dtype=torch.float64)).item()
    assert metrics["loss"] == pytest.approx(reference, rel=1e-9)
    # The streamed ranking keeps exactly the thumbnails of the best and worst 3 per class.
    best = np.argsort(-scores, axis=0)[:3]
    worst = np.argsort(scores, axis=0)[:3]
    assert set(evaluator.thumbs) == set(best.ravel()) | set(worst.ravel())
    assert all(evaluator.thumbs[i][0, 0, 0] == i for i in evaluator.thumbs)
    assert figures["ranked_images"].dtype == np.uint8
    assert figures["tail_accuracy"].ndim == 3


def test_views_are_pooled_per_image(idx_folder, tmp_path):
    task = multilabel.MultiLabelTask(smoke(idx_folder, str(tmp_path)))
    # Image b, crop k is filled with 10 * b + k: flattening then pooling must group by image.
    values = 10.0 * np.arange(3)[:, None] + np.arange(5)[None, :]
    crops = np.broadcast_to(values[:, :, None, None, None], (3, 5, 2, 2, 3))
    batch = {"image": crops, "labels": np.zeros((3, 10), np.float32)}
    views = task._images(batch)
    assert views.shape == (15, 2, 2, 3)
    logits = jnp.tile(views.mean(axis=(1, 2, 3))[:, None], (1, 10))
    np.testing.assert_array_equal(task._pool(logits, batch)[:, 0], [4.0, 14.0, 24.0])


def test_config_errors(idx_folder, tmp_path):
    with pytest.raises(ConfigError, match="crops.mode='bogus'"):
        multilabel.MultiLabelTask(smoke(idx_folder, str(tmp_path), **{"crops.mode": "bogus"}))
    with pytest.raises(ConfigError, match="crops.size=64 exceeds data.image_size=48"):
        multilabel.MultiLabelTask(smoke(idx_folder, str(tmp_path), **{"crops.size": 64}))


@pytest.mark.slow
@pytest.mark.parametrize("variant, shape", [("", (2, 5, 224, 224, 3)), ("resize448", (2, 448, 448, 3))])  # fmt: skip
def test_voc_configs_feed_the_task(tmp_path, variant, shape):
    """The VOC configs as users run them, on a made-up VOCdevkit: batches, labels, weights."""
    root = fake.make_vocdevkit(str(tmp_path))
    config = config_lib.load(
        f"configs/resnet_voc.py{':' + variant if variant else ''}",
        {"data.voc_root": root, "data.cache_dir": str(tmp_path / "cache"),
         "pretrained.from_scratch": True, "pretrained.path": ""},
    )  # fmt: skip
    task = multilabel.MultiLabelTask(config)
    assert task.num_train_examples == 4 and task.class_names[0] == "aeroplane"
    batch = next(task.train_batches(0, 2, 0, 1))
    assert batch["image"].shape == shape and batch["thumbnail"].shape == (2, 96, 96, 3)
    (first, second) = list(task.eval_batches(2, 0, 1))
    ids = fake.VOC_SPLITS["test"]
    for b in (first, second):
        for row, index in enumerate(b["image_index"]):
            objects = fake.VOC_IMAGES[ids[index]]["objects"]
            easy = {o["name"] for o in objects if not o.get("difficult")}
            hard = {o["name"] for o in objects if o.get("difficult")} - easy
            names = task.class_names
            assert {names[k] for k in np.flatnonzero(b["labels"][row])} == easy
            assert {names[k] for k in np.flatnonzero(b["label_weights"][row] == 0)} == hard


def test_missing_voc_weights_name_the_command(idx_folder, tmp_path):
    config = config_lib.load(
        "configs/resnet_voc.py:smoke",
        {"data.cache_dir": str(tmp_path),
         "pretrained.from_scratch": False, "pretrained.path": str(tmp_path / "nothing")},
    )  # fmt: skip
    with pytest.raises(DataError, match="does not exist.*python -m jwsol.weights.torchvision"):
        multilabel.MultiLabelTask(config)  # before any data is read
    with config.unlocked():
        config.pretrained.path = ""
    with pytest.raises(ConfigError, match="pretrained.path is empty"):
        multilabel.MultiLabelTask(config)
