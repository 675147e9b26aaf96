"""The localizer job: loss, heatmap placement, box sweep, evaluator by hand, configs, smoke run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jwsol import tasks
from jwsol.data import fake
from jwsol.errors import ConfigError
from jwsol.models.alexnet import AlexNet
from jwsol.models.localizer import LocalizerAlexNet
from jwsol.tasks import localizer as loc
from jwsol.tasks import localizer_eval as loc_eval
from jwsol.training import config as config_lib
from jwsol.training import loop
from jwsol.training.task import EvalContext


def read_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def smoke(idx_folder, cache_dir, **overrides):
    return config_lib.load(
        "configs/localizer.py:smoke",
        {
            "data.cache_dir": cache_dir,
            "train.progress_bar": False,
            **overrides,
        },
    )


# Heatmap placement -----------------------------------------------------------------------------


# Evaluator by hand -----------------------------------------------------------------------------


def _hand_made_case():
    """Two 32x32 images, score maps at canvas resolution (so 'stretch' places them as given).

    image A: class 0 box (6, 4, 16, 12), its map exactly that block -> a hit for t in (0, 1).
             class 1 box (20, 20, 28, 28); its map: a big wrong block (value 1, 200 px) and a
             weaker block (0.5) exactly on the box -> the largest component always misses, some
             component hits for t in (0, 0.5].
    image B: class 1 box (0, 0, 10, 10); map block (0, 0, 10, 20) -> IoU 0.5 for t in (0, 1).
             a difficult class 0 box, never scored; class 0 is ignored (label weight 0).
    """
    score_map = np.zeros((2, 32, 32, 2), np.float32)
    score_map[0, 4:12, 6:16, 0] = 1.0
    score_map[0, 0:10, 0:20, 1] = 1.0  # 200 px, far from the class 1 box
    score_map[0, 20:28, 20:28, 1] = 0.5
    score_map[1, 0:20, 0:10, 1] = 1.0
    gt_boxes = np.zeros((2, 3, 4), np.float32)
    gt_boxes[0, :2] = [[6, 4, 16, 12], [20, 20, 28, 28]]
    gt_boxes[1, :2] = [[0, 0, 10, 10], [14, 14, 30, 30]]
    batch = {
        "image": np.zeros((2, 32, 32, 3), np.float32),
        "labels": np.array([[1, 1], [1, 1]], np.float32),
        "label_weights": np.array([[1, 1], [0, 1]], np.float32),
        "gt_boxes": gt_boxes,
        "gt_classes": np.array([[0, 1, -1], [1, 0, -1]], np.int32),
        "gt_difficult": np.array([[False, False, False], [False, True, False]]),
        "gt_mask": np.array([[True, True, False], [True, True, False]]),
        "image_size": np.array([[32, 32], [32, 32]], np.int32),
        "image_id": np.array([b"A", b"B"]),
    }
    outputs = {"logits": np.array([[2.0, -1.0], [5.0, 3.0]]), "score_map": score_map}
    return batch, outputs


def _hand_config(**eval_overrides):
    config = config_lib.load("configs/localizer.py:smoke")
    config.unlock()
    config.data.image_size = 32
    config.eval.heatmap_alignment = "stretch"
    config.eval.num_cam_thresholds = 10
    config.eval.cam_threshold = 0.2
    config.eval.box_max_side = 0
    config.eval.update(eval_overrides)
    return config


def test_evaluator_computes_the_hand_made_case():
    batch, outputs = _hand_made_case()
    evaluator = loc_eval.LocalizerEvaluator(_hand_config(), ("a", "b"))
    evaluator.add(batch, outputs)
    metrics, figures = evaluator.result()
    # Classification: class 0 only image A counts (B ignored) -> AP 1; class 1: A scores
    # sigmoid(-1) < sigmoid(3) but both are positives -> AP 1. Recall at 0.5: 1 and 1/2.
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["recall"] == pytest.approx(0.75)
    assert metrics["recall_micro"] == pytest.approx(2 / 3)
    assert metrics["num_examples"] == 2
    # Loss: BCE(z, 1) = log(1 + e^-z) on A0, A1, B1 (B0 weight 0), over N * C = 4 entries.
    assert metrics["loss"] == pytest.approx(sum(np.log1p(np.exp(-z)) for z in (2, -1, 3)) / 4)
    assert metrics["label_accuracy"] == pytest.approx(2 / 3)  # A1's logit -1 says absent
    assert metrics["num_loc_samples"] == 3
    # CorLoc at t = 0.2: class 0 hits 1/1, class 1 hits 1/2 (B only) -> 0.75.
    assert metrics["corloc"] == pytest.approx(0.75)
    # MaxBoxAcc (largest component, IoU 0.5): hits A0 and B1 for t in (0, 1): 2/3 from t = 0.1
    # (t = 0 keeps the whole image: IoU 80/1024, 64/1024... misses).
    assert metrics["max_box_acc"] == pytest.approx(2 / 3)
    assert metrics["max_box_acc_threshold"] == pytest.approx(0.1)
    # V2 (any component): IoU 0.3 and 0.5 -> 3/3 for t in (0, 0.5]; IoU 0.7 -> A0 and A1 (IoU
    # 1), not B1 (IoU 0.5) -> 2/3. Mean 8/9.
    assert metrics["max_box_acc_v2_iou30"] == pytest.approx(1.0)
    assert metrics["max_box_acc_v2_iou50"] == pytest.approx(1.0)
    assert metrics["max_box_acc_v2_iou70"] == pytest.approx(2 / 3)
    assert metrics["max_box_acc_v2"] == pytest.approx(8 / 9)
    # Coverage at t = 0.2: every true box is fully inside its mask. In-box: A0 80/80,
    # A1 64/264, B1 100/200.
    assert metrics["box_coverage"] == pytest.approx(1.0)
    assert metrics["mask_in_box"] == pytest.approx((1 + 64 / 264 + 0.5) / 3)
    # At the best threshold 0.1 the masks are the same as at 0.2.
    assert metrics["box_coverage_at_best"] == pytest.approx(1.0)
    assert metrics["mask_in_box_at_best"] == pytest.approx(metrics["mask_in_box"])
    # In-box >= 0.5 from t = 0.1 (mean (1 + 64/264 + 0.5) / 3 = 0.58); coverage there 1.
    assert metrics["box_coverage_at_in_box50"] == pytest.approx(1.0)
    assert set(figures) == {"heatmaps_eval", "box_curves"}
    assert figures["heatmaps_eval"].dtype == np.uint8 and figures["heatmaps_eval"].ndim == 3


def test_evaluator_writes_coco_documents_in_original_pixels():
    """Image A is a 32 x 32 resize of a 64 x 48 original (scale 0.5 x, 2/3 y); B is unscaled.
    One detection per (image, class): the largest component at cam threshold 0.2, at the
    original resolution, scored by the class's sigmoid."""
    batch, outputs = _hand_made_case()
    batch.update(
        orig_size=np.array([[48, 64], [32, 32]], np.int32),
        scale_xy=np.array([[0.5, 2 / 3], [1.0, 1.0]], np.float32),
        flipped=np.array([False, False]),
    )
    evaluator = loc_eval.LocalizerEvaluator(_hand_config(), ("a", "b"))
    evaluator.add(batch, outputs)
    docs = evaluator.documents()
    found = {(d["image_id"], d["category_id"]): d for d in docs["detections_coco.json"]}
    assert set(found) == {(1, 1), (1, 2), (2, 2)}  # B's class 0 map is all zero: no component
    # A, class 0: the block (columns 6..15, rows 4..11 of the map) upsampled bilinearly with
    # half-pixel centres: output column j samples map column u = (j + 0.5) / 2 - 0.5, row i
    # samples (i + 0.5) / 1.5 - 0.5. Columns 11 (u = 5.25: 0.25 >= 0.2) to 32 (u = 15.75) and rows
    # 6 (u = 3.83: 0.83) to 17 (u = 11.17: 0.83) pass; column 10 and row 5 (0.17) do not.
    assert found[1, 1]["bbox"] == pytest.approx([11, 6, 22, 12])
    assert found[1, 1]["score"] == pytest.approx(1 / (1 + np.exp(-2.0)))
    # A, class 1: the largest component is the wrong 20 x 10 block: columns to 40 (u = 19.75),
    # rows to 14 (u = 9.5).
    assert found[1, 2]["bbox"] == pytest.approx([0, 0, 41, 15])
    assert found[2, 2]["bbox"] == pytest.approx([0, 0, 10, 20])
    truth = docs["ground_truth_coco.json"]
    assert [(im["file_name"], im["height"], im["width"]) for im in truth["images"]] == [
        ("A", 48, 64), ("B", 32, 32),
    ]  # fmt: skip
    a0 = [t for t in truth["annotations"] if t["image_id"] == 1 and t["category_id"] == 1]
    assert a0[0]["bbox"] == pytest.approx([12, 6, 20, 12]) and a0[0]["iscrowd"] == 0
    assert [t["iscrowd"] for t in truth["annotations"] if t["image_id"] == 2] == [0, 1]
    quick = loc_eval.LocalizerEvaluator(_hand_config(), ("a", "b"), boxes=False, figures=False)
    quick.add(batch, outputs)
    assert quick.documents() == {}  # intermediate evaluations keep nothing


def test_evaluator_draws_figure_batches_without_scoring_them_and_skips_boxes_when_asked():
    batch, outputs = _hand_made_case()
    first = {k: v[:1] for k, v in batch.items()}
    first_outputs = {k: v[:1] for k, v in outputs.items()}
    evaluator = loc_eval.LocalizerEvaluator(_hand_config(), ("a", "b"), boxes=True, figures=True)
    evaluator.add(batch, outputs)
    evaluator.add_figure_batch(first, first_outputs)
    metrics, figures = evaluator.result()
    assert metrics["num_examples"] == 2 and metrics["num_loc_samples"] == 3
    assert set(figures) == {"heatmaps_eval", "heatmaps_train", "box_curves"}
    quick = loc_eval.LocalizerEvaluator(_hand_config(), ("a", "b"), boxes=False, figures=False)
    quick.add(batch, outputs)
    quick.add_figure_batch(first, first_outputs)
    metrics, figures = quick.result()
    assert "corloc" not in metrics and figures == {}
    assert metrics["map"] == pytest.approx(1.0)


def test_box_max_side_scales_boxes_with_the_map():
    batch, outputs = _hand_made_case()
    evaluator = loc_eval.LocalizerEvaluator(_hand_config(box_max_side=16), ("a", "b"))
    evaluator.add(batch, outputs)
    metrics, _ = evaluator.result()
    # Every block edge is even: at half resolution the boxes and hits are the same.
    assert metrics["corloc"] == pytest.approx(0.75)
    assert metrics["max_box_acc_v2"] == pytest.approx(8 / 9)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.init": "uniform"}, "model.init='uniform'"),
        ({"model.pooling": "mean"}, "model.pooling='mean'"),
        ({"model.pooling": "lse", "model.lse_r": 0.0}, "model.lse_r=0.0"),
    ],
)
def test_bad_model_values_are_config_errors_naming_the_field(
    idx_folder, tmp_path, overrides, message
):
    with pytest.raises(ConfigError, match=message):
        loc.LocalizerTask(smoke(idx_folder, str(tmp_path), **overrides))


def test_cam_threshold_off_the_grid_is_a_config_error():
    with pytest.raises(ConfigError, match="eval.cam_threshold=0.25"):
        loc_eval.cam_threshold_grid(_hand_config(cam_threshold=0.25))


def test_figures_and_boxes_follow_the_evaluation_context(idx_folder, tmp_path):
    task = loc.LocalizerTask(smoke(idx_folder, str(tmp_path)))
    schedule = (4, 8, 12, 16, 20, 24, 28, 30)
    middle = EvalContext(16, False, schedule, 1.0)
    other = EvalContext(8, False, schedule, 0.5)
    assert task.evaluator(middle).figures and not task.evaluator(middle).boxes
    assert not task.evaluator(other).figures
    assert list(task.figure_batches(other, 8, 0, 1)) == []
    final = task.evaluator(EvalContext(30, True, schedule, 2.0))
    assert final.figures and final.boxes and final.figure_suffix == "_step000030"


# Configs ---------------------------------------------------------------------------------------


def test_variants_compose():
    voc = config_lib.load("configs/localizer.py")
    assert voc.model.pooling == "max" and voc.train.num_epochs == 30
    assert voc.data.source == "voc_folder" and voc.data.image_size == 512
    assert (
        voc.pretrained.arch == "alexnet" and voc.pretrained.path and not voc.pretrained.from_scratch
    )
    assert voc.optimizer.name == "sgd" and voc.optimizer.schedule == "step"
    assert voc.optimizer.decay_epochs == 30 and voc.train.batch_size == 32
    assert voc.train.eval_every_epochs == voc.train.checkpoint_every_epochs == 2.0
    robust = config_lib.load("configs/localizer.py:robust,epochs45")
    assert robust.model.pooling == "avg" and robust.train.num_epochs == 45
    assert config_lib.load("configs/localizer.py:epochs2").train.num_epochs == 2
    a = config_lib.load("configs/localizer.py:scenes_robust")
    b = config_lib.load("configs/localizer.py:scenes,robust")
    assert a.to_dict() == b.to_dict() and a.model.pooling == "avg"
    assert a.pretrained.make == "fashion_mnist" and a.data.source == "scenes"
    with pytest.raises(ValueError, match="variant 'scenes,smoke'"):
        config_lib.load("configs/localizer.py:scenes,smoke")
    with pytest.raises(ValueError, match="variant 'bogus'"):
        config_lib.load("configs/localizer.py:bogus")


def test_voc_config_weights_fit_the_model():
    """The ImageNet AlexNet's conv1-5 have the localizer's feature shapes at width 1."""
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    key = jax.random.key(0)
    alexnet = jax.eval_shape(AlexNet().init, key, x)["params"]["features"]
    localizer = jax.eval_shape(LocalizerAlexNet(num_classes=20).init, key, x)["params"]
    assert jax.tree.map(lambda s: s.shape, localizer["features"]) == jax.tree.map(
        lambda s: s.shape, alexnet
    )


@pytest.mark.slow
def test_voc_config_reads_a_vocdevkit_and_evaluates(tmp_path):
    """The default (VOC) config on a 4-image VOCdevkit: no proposal file, no training needed."""
    root = fake.make_vocdevkit(str(tmp_path))
    config = config_lib.load(
        "configs/localizer.py",
        {
            "data.voc_root": root,
            "data.cache_dir": str(tmp_path / "cache"),
            "data.image_size": 96,
            "data.scales": (96,),
            "data.eval_scale": 96,
            "model.width": 0.125,
            "eval.batch_size": 4,
            "eval.num_figure_images": 2,
        },
    )
    from jwsol.tasks.localizer import LocalizerTask

    task = LocalizerTask(config)
    ctx = EvalContext(step=0, final=True, schedule=(0,), epoch=0.0)
    batches = list(task.eval_batches(4, 0, 1))
    figure_batches = list(task.figure_batches(ctx, 4, 0, 1))
    assert [len(b["image"]) for b in figure_batches] == [2]  # the first two training images
    first = batches[0]
    person, dog = 14, 11  # VOC class indices
    assert first["labels"][0, person] == 0 and first["label_weights"][0, person] == 0  # difficult
    assert first["label_weights"][0, dog] == 1 and "proposals" not in first  # method 'none'
    # 000001 is 120 x 90, resized to 96 x 96: the dog box (10, 20, 60, 80) in edges scales too.
    np.testing.assert_allclose(first["gt_boxes"][0, 0], [8, 20 * 96 / 90, 48, 80 * 96 / 90])
    variables = jax.jit(task.init_variables)(jax.random.key(0), {"image": first["image"][:1]})
    predict = jax.jit(task.predict)
    evaluator = task.evaluator(ctx)  # as in --mode=eval: boxes and figures
    for batch in batches:
        evaluator.add(batch, jax.device_get(predict(variables, {"image": batch["image"]})))
    for batch in figure_batches:
        outputs = jax.device_get(predict(variables, {"image": batch["image"]}))
        evaluator.add_figure_batch(batch, outputs)
    metrics, figures = evaluator.result()
    # Samples: dog (person is difficult), car, cat, bird, chair.
    assert metrics["num_examples"] == 4 and metrics["num_loc_samples"] == 5
    assert 0 <= metrics["corloc"] <= 1 and 0 <= metrics["max_box_acc"] <= 1
    assert set(figures) == {"heatmaps_eval_step000000", "heatmaps_train_step000000",
                            "box_curves_step000000"}  # fmt: skip


# End to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(idx_folder, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    workdir = str(tmp_path_factory.mktemp("run"))
    metrics = loop.run(tasks.build(smoke(idx_folder, cache)), workdir)
    return workdir, cache, metrics


@pytest.mark.slow
def test_smoke_run_writes_metrics_and_figures(smoke_run):
    workdir, _, metrics = smoke_run
    final = read_json(workdir, "eval_metrics.json")
    for key in ("map", "recall", "corloc", "max_box_acc", "max_box_acc_v2", "box_coverage"):
        assert np.isfinite(final[key]), key
        assert final[key] == pytest.approx(metrics[key]), key
    assert final["num_examples"] == 12 and final["step"] == 4
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    evals = [r for r in rows if "eval/map" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert "eval/corloc" not in evals[0] and "eval/corloc" in evals[-1]  # boxes at the end
    figures = set(os.listdir(os.path.join(workdir, "figures")))
    assert figures >= {
        "box_curves_step000004.png",
        "heatmaps_eval_step000002.png",
        "heatmaps_eval_step000004.png",
        "heatmaps_train_step000002.png",
        "heatmaps_train_step000004.png",
    }
    assert not any("step000003" in name for name in figures)
    assert "eval/loss" in evals[0] and np.isfinite(evals[0]["eval/loss"])
    # The final evaluation's boxes as COCO results, one per (image, class) with a component.
    detections = read_json(workdir, "detections_coco.json")
    truth = read_json(workdir, "ground_truth_coco.json")
    assert len(truth["images"]) == 12 and 0 < len(detections) <= 12 * len(truth["categories"])
    assert {d["image_id"] for d in detections} <= {im["id"] for im in truth["images"]}


@pytest.mark.slow
def test_eval_mode_reproduces_the_final_metrics(smoke_run, idx_folder):
    workdir, cache, _ = smoke_run
    before = read_json(workdir, "eval_metrics.json")
    os.remove(os.path.join(workdir, "eval_metrics.json"))
    loop.run(tasks.build(smoke(idx_folder, cache)), workdir, mode="eval")
    after = read_json(workdir, "eval_metrics.json")
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] == pytest.approx(value, nan_ok=True), key
    assert os.path.exists(os.path.join(workdir, "figures", "heatmaps_eval_step000004.png"))


def test_box_convention_is_reported_and_checked():
    batch, outputs = _hand_made_case()
    for convention, flag in (("exact", 0.0), ("wsolevaluation", 1.0)):
        evaluator = loc_eval.LocalizerEvaluator(
            _hand_config(box_convention=convention), ("a", "b"), figures=False
        )
        evaluator.add(batch, outputs)
        assert evaluator.result()[0]["box_convention_wsolevaluation"] == flag
    with pytest.raises(ConfigError, match="eval.box_convention='voc'"):
        loc_eval.LocalizerEvaluator(_hand_config(box_convention="voc"), ("a", "b"))
