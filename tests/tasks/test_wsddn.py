"""The WSDDN job: detections by hand, the evaluator's coordinates and metrics, and a smoke run
of configs/wsddn.py:smoke through the shared loop (train, figures, eval mode)."""

import json
import os

import numpy as np
import pytest

from jwsol import tasks
from jwsol.errors import ConfigError
from jwsol.training import config as config_lib
from jwsol.training import loop


def read_json(path):
    with open(path) as f:
        return json.load(f)


def smoke_config(idx_folder, cache_dir, **overrides):
    return config_lib.load(
        "configs/wsddn.py:smoke",
        {"data.cache_dir": cache_dir, **overrides},
    )


def _fake_batch(num_classes=3):
    """Two images, resized x2 from 50x60 originals; image 1 is flipped. R = 3, G = 2."""
    original_gt = np.array([[[4, 6, 20, 30], [30, 10, 50, 40]], [[10, 10, 40, 40], [0, 0, 0, 0]]])
    original_props = np.array(
        [
            [[4, 6, 20, 30], [30, 10, 50, 40], [0, 0, 60, 50]],
            [[10, 10, 40, 40], [12, 8, 38, 44], [0, 0, 0, 0]],
        ],
        np.float32,
    )

    def to_batch(boxes, flipped):
        out = boxes * 2.0
        w = 120.0
        flip = out.copy()
        flip[..., 0], flip[..., 2] = w - out[..., 2], w - out[..., 0]
        return np.where(flipped[:, None, None], flip, out).astype(np.float32)

    flipped = np.array([False, True])
    return {
        "image": np.zeros((2, 128, 128, 3), np.float32),
        "labels": np.array([[1, 1, 0], [0, 0, 1]], np.float32),
        "label_weights": np.ones((2, num_classes), np.float32),
        "proposals": to_batch(original_props, flipped),
        "proposal_mask": np.array([[True, True, True], [True, True, False]]),
        "gt_boxes": to_batch(original_gt.astype(np.float32), flipped),
        "gt_classes": np.array([[0, 1], [2, -1]], np.int32),
        "gt_difficult": np.zeros((2, 2), bool),
        "gt_mask": np.array([[True, True], [True, False]]),
        "image_size": np.array([[100, 120], [100, 120]], np.int32),
        "scale_xy": np.full((2, 2), 2.0, np.float32),
        "flipped": flipped,
        "image_id": np.array([b"test_00000", b"test_00001"]),
        "orig_size": np.array([[50, 60], [50, 60]], np.int32),
    }, original_props


@pytest.fixture(scope="module")
def task(idx_folder, tmp_path_factory):
    from jwsol.tasks.wsddn import WSDDNTask

    return WSDDNTask(smoke_config(idx_folder, str(tmp_path_factory.mktemp("cache"))))


def test_evaluator_scores_in_original_coordinates(task):
    from jwsol.tasks.wsddn_eval import WSDDNEvaluator

    task.class_names, task.num_classes = ("a", "b", "c"), 3
    batch, original_props = _fake_batch()
    # Image 0: proposal 0 is class a's, proposal 1 class b's, the whole image scores low.
    # Image 1: proposal 0 is class c's box; proposal 1 (IoU 0.75 with it) scores lower.
    region_scores = np.zeros((2, 3, 3), np.float32)
    region_scores[0, 0, 0], region_scores[0, 1, 1], region_scores[0, 2] = 0.9, 0.8, 0.05
    region_scores[1, 0, 2], region_scores[1, 1, 2] = 0.7, 0.2
    region_scores[1, 2] = 0.99  # padded proposal: must be ignored
    valid = batch["proposal_mask"][:, :, None]
    outputs = {"region_scores": region_scores, "image_scores": (region_scores * valid).sum(1)}
    evaluator = WSDDNEvaluator(task, first=True)
    evaluator.add(batch, outputs)
    # Boxes come back in the original image's pixels, the flip undone.
    np.testing.assert_allclose(evaluator.proposals[1], original_props[1, :2], atol=1e-5)
    np.testing.assert_allclose(evaluator.truth[1].boxes, [[10, 10, 40, 40]], atol=1e-5)
    assert np.all(evaluator.detections[1].labels == 2)
    metrics, figures = evaluator.result()
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["corloc"] == pytest.approx(1.0)
    assert metrics["proposal_recall"] == pytest.approx(1.0)
    assert metrics["cls_map"] == pytest.approx(1.0)
    assert metrics["ap/a"] == metrics["ap/b"] == metrics["ap/c"] == pytest.approx(1.0)
    assert set(figures) == {"detections", "ap_per_class", "detections_first"}
    for image in figures.values():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3

    # Swapping the two classes' boxes in image 0 makes both wrong: AP and CorLoc drop to
    # the remaining class c, whose AP stays 1; a and b have a detection only at IoU 0.
    swapped = region_scores.copy()
    swapped[0, 0, 0], swapped[0, 1, 0] = 0.0, 0.9
    swapped[0, 0, 1], swapped[0, 1, 1] = 0.8, 0.0
    swapped[0, 2] = 0.0
    second = WSDDNEvaluator(task, first=False)
    second.add(batch, {"region_scores": swapped, "image_scores": swapped.sum(1)})
    metrics, figures = second.result()
    assert metrics["ap/a"] == metrics["ap/b"] == 0.0
    assert metrics["map"] == pytest.approx(1 / 3)
    assert metrics["corloc"] == pytest.approx(1 / 3)
    assert "detections_first" not in figures


def test_evaluator_documents_are_coco_results_and_ground_truth(task):
    from jwsol.tasks.wsddn_eval import WSDDNEvaluator

    task.class_names, task.num_classes = ("a", "b", "c"), 3
    batch, _ = _fake_batch()
    region_scores = np.zeros((2, 3, 3), np.float32)
    region_scores[0, 0, 0], region_scores[1, 0, 2] = 0.9, 0.7
    evaluator = WSDDNEvaluator(task, first=False)
    evaluator.add(batch, {"region_scores": region_scores, "image_scores": region_scores.sum(1)})
    docs = evaluator.documents()
    found, truth = docs["detections_coco.json"], docs["ground_truth_coco.json"]
    # Original pixels, [x, y, w, h], category = class + 1, image i + 1 the i-th eval image.
    assert [(d["image_id"], d["category_id"], d["bbox"]) for d in found] == [
        (1, 1, [4.0, 6.0, 16.0, 24.0]),
        (2, 3, [10.0, 10.0, 30.0, 30.0]),
    ]
    assert [(i["id"], i["file_name"], i["height"], i["width"]) for i in truth["images"]] == [
        (1, "test_00000", 50, 60),
        (2, "test_00001", 50, 60),
    ]
    assert [a["bbox"] for a in truth["annotations"]] == [
        [4.0, 6.0, 16.0, 24.0], [30.0, 10.0, 20.0, 30.0], [10.0, 10.0, 30.0, 30.0]
    ]  # fmt: skip


def test_grad_histograms_are_conv1_conv2_fc7(task):
    shapes = {
        "features": {"conv1": {"kernel": np.zeros((11, 11, 3, 8))},
                     "conv2": {"kernel": np.zeros((5, 5, 8, 24))}},
        "fc67": {"fc7": {"kernel": np.zeros((16, 16))}},
    }  # fmt: skip
    hists = task.grad_histograms(shapes)
    assert {k: v.shape for k, v in hists.items()} == {
        "conv1": (11, 11, 3, 8),
        "conv2": (5, 5, 8, 24),
        "fc7": (16, 16),
    }


@pytest.fixture(scope="module")
def smoke_run(idx_folder, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("wsddn_run"))
    cache = str(tmp_path_factory.mktemp("wsddn_cache"))
    metrics = loop.run(tasks.build(smoke_config(idx_folder, cache)), workdir)
    return workdir, cache, metrics


@pytest.mark.slow
def test_smoke_run_writes_detection_metrics_and_figures(smoke_run):
    workdir, _, metrics = smoke_run
    final = read_json(os.path.join(workdir, "eval_metrics.json"))
    for key in ("map", "corloc", "cls_map", "proposal_recall"):
        assert key in final and final[key] == pytest.approx(metrics[key], nan_ok=True)
    assert {f"ap/{k}" for k in range(10)} <= set(final)  # made-up IDX data: classes "0".."9"
    assert final["num_images"] == 8
    assert 0.0 <= final["proposal_recall"] <= 1.0
    for name in ("detections", "detections_first", "ap_per_class"):
        assert os.path.exists(os.path.join(workdir, "figures", f"{name}.png")), name
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert [r["step"] for r in rows if "eval/map" in r] == [2, 4]


@pytest.mark.slow
def test_eval_mode_reproduces_eval_metrics(idx_folder, smoke_run):
    workdir, cache, _ = smoke_run
    before = read_json(os.path.join(workdir, "eval_metrics.json"))
    os.remove(os.path.join(workdir, "eval_metrics.json"))
    loop.run(tasks.build(smoke_config(idx_folder, cache)), workdir, mode="eval")
    after = read_json(os.path.join(workdir, "eval_metrics.json"))
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), key


def test_variants_load_with_the_papers_and_the_courses_settings():
    from jwsol.tasks.wsddn import WSDDNTask

    course = config_lib.load("configs/wsddn.py")
    assert course.data.source == "voc_folder" and course.data.proposals.method == "mat"
    assert course.data.max_proposals == course.data.proposals.top_k == 300
    assert course.data.image_size == 512 and course.train.batch_size == 1
    o = course.optimizer
    assert (o.name, o.learning_rate, o.momentum, o.weight_decay) == ("sgd", 1e-4, 0.9, 5e-4)
    assert not course.pretrained.from_scratch and course.pretrained.path
    paper = config_lib.load("configs/wsddn.py:paper")
    assert paper.data.scales == (480, 576, 688, 864, 1200) and paper.data.flip
    assert paper.optimizer.learning_rate == 1e-5 and paper.optimizer.decay_epochs == 10
    assert paper.train.num_epochs == 20 and paper.model.det_temperature == 2.0
    assert paper.model.box_score_scale == 10.0 and paper.loss.spatial_weight == 1e-4
    for config in (course, paper):
        task = WSDDNTask(config)
        assert task.num_classes == 20 and task.model.fc_features == 4096
    scenes = config_lib.load("configs/wsddn.py:scenes")
    assert scenes.data.source == "scenes" and not scenes.pretrained.from_scratch
    assert scenes.pretrained.make == "fashion_mnist"  # tests/weights/test_pretrain.py
    with pytest.raises(ValueError, match="unknown variant"):
        config_lib.load("configs/wsddn.py:nope")


def test_batch_norm_with_pretrained_weights_is_a_config_error(idx_folder, tmp_path):
    from jwsol.tasks.wsddn import WSDDNTask

    config = smoke_config(
        idx_folder, str(tmp_path), **{"model.batch_norm": True, "pretrained.path": str(tmp_path)}
    )
    with pytest.raises(ConfigError, match="batch_norm"):
        WSDDNTask(config)


@pytest.mark.parametrize("field, value", [("model.init", "uniform"), ("model.pooling", "avg")])
def test_bad_model_choices_are_config_errors_naming_the_field(idx_folder, tmp_path, field, value):
    from jwsol.tasks.wsddn import WSDDNTask

    with pytest.raises(ConfigError, match=f"{field}='{value}'"):
        WSDDNTask(smoke_config(idx_folder, str(tmp_path), **{field: value}))


# OICR: refinement streams, test-time augmentation, CorLoc on the training split ---------------


def oicr_config(cache_dir, variant="smoke", **overrides):
    return config_lib.load(f"configs/oicr.py:{variant}", {"data.cache_dir": cache_dir, **overrides})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss.refine_weights": (1.0,)}, "one weight per refinement stream"),
        ({"model.num_refinements": 0, "loss.refine_weights": ()}, "needs refinement streams"),
        ({"eval.score_source": "best"}, "eval.score_source='best'"),
        ({"loss.regression_weight": -1.0}, "loss.regression_weight=-1.0"),
    ],
)
def test_oicr_config_errors_name_the_field(tmp_path, overrides, message):
    from jwsol.tasks.wsddn import WSDDNTask

    with pytest.raises(ConfigError, match=message):
        WSDDNTask(oicr_config(str(tmp_path), **overrides))


def _predict_batch(size=64, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size - 24, (2, 6, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 24, (2, 6, 2))], -1).astype(np.float32)
    return {
        "image": rng.normal(size=(2, size, size, 3)).astype(np.float32),
        "proposals": boxes,
        "proposal_mask": np.arange(6)[None] < np.array([[6], [4]]),
        "proposal_scores": np.zeros((2, 6), np.float32),
    }


def test_oicr_predict_averages_refinement_streams_and_flipped_views(tmp_path):
    import jax

    from jwsol.tasks.wsddn import WSDDNTask

    plain = WSDDNTask(oicr_config(str(tmp_path), "smoke,k=2"))
    batch = _predict_batch()
    variables = plain.init_variables(jax.random.key(0), batch)
    out = {k: np.asarray(v) for k, v in plain.predict(variables, batch).items()}
    assert out["stream_scores"].shape == (2, 3, 6, plain.num_classes)
    np.testing.assert_allclose(out["region_scores"], out["stream_scores"][:, 1:].mean(1), rtol=1e-6)
    # The MIL stream is WSDDN's region score.
    wsddn = plain.model.apply(variables, batch["image"], batch["proposals"], batch["proposal_mask"])
    np.testing.assert_allclose(out["stream_scores"][:, 0], wsddn["region_scores"], rtol=1e-5)

    # With eval.flip the scores are the mean of this view and the mirrored one (made by hand).
    flip = WSDDNTask(oicr_config(str(tmp_path), "smoke,k=2", **{"eval.flip": True}))
    mirrored = dict(batch, image=batch["image"][:, :, ::-1].copy())
    x1, y1, x2, y2 = np.moveaxis(batch["proposals"], -1, 0)
    mirrored["proposals"] = np.stack([64 - x2, y1, 64 - x1, y2], -1)
    other = plain.predict(variables, mirrored)
    both = flip.predict(variables, batch)
    for key in ("region_scores", "image_scores", "stream_scores"):
        np.testing.assert_allclose(both[key], (out[key] + np.asarray(other[key])) / 2, rtol=1e-5)
    # eval.views_final_only: the evaluations during training see one view, the final one both.
    late = WSDDNTask(
        oicr_config(
            str(tmp_path), "smoke,k=2", **{"eval.flip": True, "eval.views_final_only": True}
        )
    )
    np.testing.assert_allclose(
        late.predict(variables, batch)["region_scores"], out["region_scores"]
    )
    final = late.final_predict(variables, batch)["region_scores"]
    np.testing.assert_allclose(final, both["region_scores"], rtol=1e-6)


def test_box_regression_moves_each_views_boxes_back_into_the_batch(tmp_path):
    import jax

    from jwsol.tasks.wsddn import WSDDNTask

    overrides = {"model.box_regression": True, "eval.flip": True}
    flip = WSDDNTask(oicr_config(str(tmp_path), "smoke,k=1", **overrides))
    plain = WSDDNTask(oicr_config(str(tmp_path), "smoke,k=1", **{"model.box_regression": True}))
    batch = _predict_batch()
    batch["proposals"] = batch["proposals"] * 0.8 + 4  # room to move inside the 64 px canvas
    batch["image_size"] = np.array([[64, 64], [64, 64]], np.int32)
    variables = plain.init_variables(jax.random.key(0), batch)
    # Every class's deltas are dx = 1: each box moves right by a tenth of its width (STDS).
    head = variables["params"]["bbox_pred"]
    head["kernel"] = np.zeros_like(head["kernel"])
    head["bias"] = np.tile(np.array([1.0, 0, 0, 0], np.float32), plain.num_classes)
    boxes = np.asarray(plain.predict(variables, batch)["boxes"])
    assert boxes.shape == (2, 6, plain.num_classes, 4)
    p = batch["proposals"]
    shift = np.stack([0.1 * (p[..., 2] - p[..., 0]), 0 * p[..., 0]] * 2, -1)
    np.testing.assert_allclose(
        boxes, np.repeat((p + shift)[:, :, None], plain.num_classes, 2), atol=1e-4
    )
    # Mirrored, "right" is left in the batch: the two views' boxes average to the proposals.
    both = np.asarray(flip.predict(variables, batch)["boxes"])
    np.testing.assert_allclose(both, np.repeat(p[:, :, None], plain.num_classes, 2), atol=1e-4)


def test_evaluator_scores_regressed_boxes_and_keeps_the_proposals_corloc(task):
    from jwsol.tasks.wsddn_eval import WSDDNEvaluator

    task.class_names, task.num_classes = ("a", "b", "c"), 3
    task.stream_names = ("mil",)
    batch, _ = _fake_batch()
    scores = np.zeros((2, 3, 3), np.float32)
    scores[0, 0, 0], scores[0, 1, 1], scores[1, 0, 2] = 0.9, 0.8, 0.7
    boxes = np.repeat(batch["proposals"][:, :, None], 3, axis=2).copy()
    boxes[0, 0, 0] = boxes[0, 2, 0]  # class a's top proposal regressed onto another place
    evaluator = WSDDNEvaluator(task, first=False)
    streams = scores[:, None]  # the MIL stream alone
    evaluator.add(
        batch,
        {"region_scores": scores, "image_scores": scores.sum(1), "boxes": boxes,
         "stream_scores": streams},
    )  # fmt: skip
    metrics, figures = evaluator.result()
    assert metrics["corloc_proposals"] == pytest.approx(1.0)
    assert metrics["corloc"] == pytest.approx(2 / 3)
    # The streams picture adds a 'regressed' panel per image, showing the moved box.
    assert [e["title"] for e in evaluator.stream_shown] == ["mil", "regressed"] * 2
    np.testing.assert_array_equal(evaluator.stream_shown[1]["boxes"][0], boxes[0, 2, 0])
    assert figures["streams"].dtype == np.uint8


def test_oicr_evaluator_scores_every_stream_and_the_training_split(task):
    from jwsol.tasks.wsddn_eval import WSDDNEvaluator

    task.class_names, task.num_classes = ("a", "b", "c"), 3
    task.stream_names = ("mil", "refine1")
    batch, _ = _fake_batch()
    right = np.zeros((2, 3, 3), np.float32)
    right[0, 0, 0], right[0, 1, 1], right[1, 0, 2] = 0.9, 0.8, 0.7
    wrong = right.copy()
    wrong[0, :2, :2] = right[0, :2, :2][::-1]  # a and b on each other's box
    streams = np.stack([wrong, right], axis=1)  # MIL wrong on a, b; refine1 right everywhere
    evaluator = WSDDNEvaluator(task, first=False)
    evaluator.add(
        batch, {"region_scores": right, "image_scores": right.sum(1), "stream_scores": streams}
    )
    evaluator.add_train_batch(batch, {"region_scores": wrong, "image_scores": wrong.sum(1)})
    metrics, figures = evaluator.result()
    assert metrics["stream_corloc/mil"] == pytest.approx(1 / 3)
    assert metrics["stream_corloc/refine1"] == pytest.approx(1.0)
    assert metrics["corloc"] == pytest.approx(1.0)
    assert metrics["corloc_train"] == pytest.approx(1 / 3) and metrics["num_train_images"] == 2
    assert figures["streams"].dtype == np.uint8


@pytest.mark.slow
def test_oicr_smoke_run_reports_streams_tta_and_training_corloc(tmp_path):
    workdir = str(tmp_path / "run")
    config = oicr_config(str(tmp_path / "cache"), "smoke,tta,k=2,reg")
    loop.run(tasks.build(config), workdir)
    final = read_json(os.path.join(workdir, "eval_metrics.json"))
    for key in ("map", "corloc", "corloc_train", "stream_corloc/mil", "stream_corloc/refine2"):
        assert key in final and np.isfinite(final[key]), key
    assert final["num_train_images"] == config.data.scenes.num_train
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        train = json.loads(f.readline())
    assert train["refine1"] > 0 and train["refine2"] > 0  # the streams' training losses
    assert train["box_regression"] >= 0 and np.isfinite(final["corloc_proposals"])
    assert any(name.startswith("streams") for name in os.listdir(os.path.join(workdir, "figures")))
