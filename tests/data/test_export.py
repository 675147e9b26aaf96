"""python -m jwsol.data.export: the scenes written as a VOCdevkit folder (and as a labelled
folder) read back through the VOC (and folder) sources give the scenes' own images, boxes,
labels and proposals; the VOC files by hand; the `.mat` writer against the reader."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import common
from jwsol.data import export, voc
from jwsol.data import records as records_lib
from jwsol.training import config as config_lib

SCENES = "configs/oicr.py:smoke"
NUM_TRAIN, NUM_TEST = 6, 4


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    return export.load_scenes(SCENES, NUM_TRAIN, NUM_TEST, cache), cache


@pytest.fixture(scope="module")
def voc_out(scenes, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export"))
    assert export.main(["--format", "voc", "--out", out, "--config", SCENES, "--num-train",
                        str(NUM_TRAIN), "--num-test", str(NUM_TEST), "--cache-dir", scenes[1],
                        "--quality", "100"]) == 0  # fmt: skip
    return out


def voc_config(out: str, cache_dir: str):
    """The VOC data section as configs/ sets it, pointed at the export; the scenes' cleaning."""
    scenes_data = config_lib.load(SCENES).data
    c = common.voc_data()
    c.voc_root = os.path.join(out, "VOCdevkit")
    c.proposals.mat_file = os.path.join(out, "selective_search_data", "voc_2007_{split}.mat")
    c.proposals.min_size = scenes_data.proposals.min_size
    c.cache_dir = cache_dir
    return c


def _by_name(rec, i):
    """Image i's labels and true boxes keyed by class name (the export renames the classes)."""
    names = [export.class_word(n) for n in rec.class_names]
    labels = sorted(names[c] for c in np.flatnonzero(rec.labels[i]))
    return labels, [names[c] for c in rec.gt_classes[i]]


@pytest.mark.parametrize("voc_split, scenes_split", sorted(export.VOC_SPLITS.items()))
def test_voc_export_reads_back_as_the_scenes(scenes, voc_out, tmp_path, voc_split, scenes_split):
    want = scenes[0][scenes_split]
    got = records_lib.load_records(voc_config(voc_out, str(tmp_path)), voc_split)
    assert got.image_ids == want.image_ids and not got.skipped
    assert got.class_names == tuple(sorted(export.class_word(n) for n in want.class_names))
    np.testing.assert_array_equal(got.sizes, want.sizes)
    for i in range(len(want)):
        assert _by_name(got, i) == _by_name(want, i)
        np.testing.assert_array_equal(got.gt_boxes[i], want.gt_boxes[i])
        np.testing.assert_array_equal(got.gt_difficult[i], want.gt_difficult[i])
        # The `.mat` stores float64 1-based boxes; read back in float32.
        np.testing.assert_allclose(got.proposals[i], want.proposals[i], atol=1e-4)
        pixels = np.asarray(Image.open(got.images[i]).convert("L"), np.float32)
        assert np.abs(pixels - want.images[i]).mean() < 1.0  # JPEG at quality 100


def test_voc_image_sets_and_per_class_files(scenes, voc_out):
    train = scenes[0]["train"]
    main = os.path.join(voc_out, "VOCdevkit", "VOC2007", "ImageSets", "Main")
    ids = {s: voc.read_split_ids(os.path.dirname(os.path.dirname(main)), s) for s in voc.SPLITS}
    assert ids["train"] + ids["val"] == ids["trainval"] == train.image_ids
    assert len(ids["train"]) == NUM_TRAIN // 2 and ids["test"] == scenes[0]["test"].image_ids
    word = export.class_word(train.class_names[train.gt_classes[0][0]])
    with open(os.path.join(main, f"{word}_trainval.txt")) as f:
        rows = dict(line.split() for line in f)
    assert rows[train.image_ids[0]] == "1"
    c = train.class_names.index(next(n for n in train.class_names if export.class_word(n) == word))
    assert [rows[i] for i in train.image_ids] == ["1" if row[c] else "-1" for row in train.labels]


def test_voc_xml_by_hand(tmp_path):
    """Edge box (0, 1, 10, 12) is VOC's inclusive (1, 2, 10, 12); the difficult flag survives."""
    boxes = np.array([[0, 1, 10, 12], [5, 5, 20, 30]], np.float32)
    xml = export.voc_xml("img7", (40, 30), boxes, ["ankle_boot", "bag"], [False, True])
    assert "<xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12</ymax>" in xml
    path = str(tmp_path / "img7.xml")
    with open(path, "w") as f:
        f.write(xml)
    ann = voc.parse_annotation(path, ("ankle_boot", "bag"))
    assert (ann["height"], ann["width"]) == (40, 30)
    np.testing.assert_array_equal(ann["boxes"], boxes)
    np.testing.assert_array_equal(ann["classes"], [0, 1])
    np.testing.assert_array_equal(ann["difficult"], [False, True])


def test_class_flags_and_words_by_hand():
    rec = records_lib.Records(
        image_ids=["a"], images=[None], image_kind="raw", sizes=np.array([[9, 9]]),
        labels=np.zeros([1, 4]), label_weights=np.ones([1, 4]),
        gt_boxes=[np.zeros([3, 4])], gt_classes=[np.array([0, 2, 2])],
        gt_difficult=[np.array([True, True, False])], proposals=[], proposal_scores=[],
        has_scores=False, class_names=("a", "b", "c", "d"), skipped=[],
    )  # fmt: skip
    np.testing.assert_array_equal(export.class_flags(rec, 0, 4), [0, -1, 1, -1])
    assert export.class_word("T-shirt/top") == "t_shirt_top"
    assert export.class_word("Ankle boot") == "ankle_boot"


def test_folder_export_reads_back_as_the_scenes(scenes, tmp_path):
    out = str(tmp_path / "own")
    export.write_folder(scenes[0], out, quality=100)
    for split, want in scenes[0].items():
        for labels in (f"{split}.csv", f"{split}.json"):
            c = common.detection_data()
            c.source, c.folder.labels, c.cache_dir = (
                "folder",
                os.path.join(out, labels),
                str(tmp_path),
            )
            c.proposals.method = "mat"
            c.proposals.mat_file = os.path.join(out, f"proposals_{split}.mat")
            c.train_split = split
            got = records_lib.load_records(c, split)
            assert got.image_ids == [f"{split}/{i}" for i in want.image_ids]
            for i in range(len(want)):
                assert _by_name(got, i)[0] == _by_name(want, i)[0]
                np.testing.assert_allclose(got.proposals[i], want.proposals[i], atol=1e-4)
                if labels.endswith(".json"):  # the COCO file carries the true boxes
                    assert _by_name(got, i)[1] == _by_name(want, i)[1]
                    np.testing.assert_array_equal(got.gt_boxes[i], want.gt_boxes[i])


def test_export_errors_are_one_line(capsys, tmp_path):
    assert export.main(["--format", "voc", "--out", str(tmp_path), "--num-train", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --num-train and --num-test must be >= 1."
    args = ["--format", "voc", "--out", str(tmp_path), "--config", "configs/localizer.py"]
    assert export.main(args) == 2
    assert "export needs scenes" in capsys.readouterr().err


# ------------------------------------------------------------ the VOC configs run on the export


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def voc_paths(out: str, cache_dir: str) -> dict:
    return {
        "data.voc_root": os.path.join(out, "VOCdevkit"),
        "data.proposals.mat_file": os.path.join(
            out, "selective_search_data", "voc_2007_{split}.mat"
        ),
        "data.cache_dir": cache_dir,
    }


# Overrides for sizes, steps and the trunk's weights only (each config's VOC setting otherwise).
SMOKE_STEPS = {
    "train.num_steps": 2, "train.num_epochs": 0.0, "train.batch_size": 2, "eval.batch_size": 8,
    "train.log_every": 1, "train.eval_every": 0, "train.checkpoint_every": 2,
    "train.log_every_epochs": 0.0, "train.eval_every_epochs": 0.0,
    "train.checkpoint_every_epochs": 0.0, "train.progress_bar": False,
    "pretrained.path": "", "pretrained.from_scratch": True,
}  # fmt: skip
SMALL_DETECTOR = {
    "data.image_size": 64, "data.scales": (64,), "data.eval_scale": 64, "data.max_proposals": 64,
    "model.width": 0.125, "model.fc_features": 16,
}  # fmt: skip
VOC_RUNS = {
    "configs/wsddn.py": (SMALL_DETECTOR, ("map", "corloc", "cls_map")),
    "configs/oicr.py": (
        {**SMALL_DETECTOR, "data.scales": (48, 64), "eval.scales": (64,)},
        ("map", "corloc", "corloc_train", "stream_corloc/refine3"),
    ),
    "configs/localizer.py": (
        {"data.image_size": 64, "data.scales": (64,), "data.eval_scale": 64, "model.width": 0.125},
        ("map", "corloc", "max_box_acc"),
    ),
    "configs/resnet_voc.py": (
        {"data.image_size": 64, "data.scales": (48,), "data.eval_scale": 48, "crops.size": 32,
         "model.depth": 18},
        ("map",),
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("spec", sorted(VOC_RUNS))
def test_voc_configs_run_end_to_end_on_the_export(spec, scenes, voc_out, tmp_path):
    from jwsol import tasks
    from jwsol.training import loop

    sizes, keys = VOC_RUNS[spec]
    config = config_lib.load(spec, {**voc_paths(voc_out, scenes[1]), **SMOKE_STEPS, **sizes})
    assert config.data.source == "voc_folder"
    task = tasks.build(config)
    assert task.class_names == tuple(
        sorted(export.class_word(n) for n in scenes[0]["train"].class_names)
    )
    workdir = str(tmp_path / "run")
    loop.run(task, workdir)
    final = _read_json(os.path.join(workdir, "eval_metrics.json"))
    for key in keys:
        assert key in final and np.isfinite(final[key]), key


@pytest.mark.slow
def test_a_checkpoint_scores_alike_through_the_scenes_and_the_voc_export(tmp_path):
    """OICR trained on the smoke scenes (selective search, so the numbers are not trivially 0),
    then evaluated again reading their VOC export (JPEG quality 95) and `.mat` proposals: the
    same boxes and proposals, images within JPEG rounding."""
    from jwsol import tasks
    from jwsol.training import loop

    scenes_run = {
        "data.scenes.num_train": 24, "data.scenes.num_test": 8,
        "data.cache_dir": str(tmp_path / "cache"), "data.proposals.method": "selective_search",
        "data.proposals.num_workers": 1, "data.proposals.resize": 128, "data.max_proposals": 128,
        "train.num_steps": 40, "train.eval_every": 40, "train.checkpoint_every": 40,
    }  # fmt: skip
    config = config_lib.load(SCENES, scenes_run)
    out = export.write_voc(
        {split: records_lib.load_records(config.data, split) for split in ("train", "test")},
        str(tmp_path / "export"),
        quality=95,
    )
    workdir = str(tmp_path / "run")
    loop.run(tasks.build(config), workdir)
    via_scenes = _read_json(os.path.join(workdir, "eval_metrics.json"))
    os.remove(os.path.join(workdir, "eval_metrics.json"))
    via_voc = {**scenes_run, **voc_paths(os.path.dirname(out), scenes_run["data.cache_dir"]),
               "data.source": "voc_folder", "data.proposals.method": "mat",
               "data.train_split": "trainval"}  # fmt: skip
    config = config_lib.load(SCENES, via_voc)
    # Made-up objects are named '0'..'9': the VOC folder's sorted names keep the label order.
    assert records_lib.class_names(config.data) == tuple(str(k) for k in range(10))
    loop.run(tasks.build(config), workdir, mode="eval")
    via_export = _read_json(os.path.join(workdir, "eval_metrics.json"))
    assert via_scenes["proposal_recall"] > 0.5 and via_scenes["cls_map"] > 0.2
    for key in ("num_images", "num_train_images", "proposal_recall"):
        assert via_export[key] == via_scenes[key], key
    for key in ("map", "corloc", "corloc_train", "cls_map"):  # measured: within 0.001
        assert via_export[key] == pytest.approx(via_scenes[key], abs=0.02), key


# ---------------------------------------------------------- docs/own_data.md, as written


def doc_commands(section: str = "## Worked example") -> list[list[str]]:
    """The commands of the first bash block after `section` in docs/own_data.md."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "own_data.md")) as f:
        text = f.read()
    block = text[text.index(section) :].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _smoke(args: list[str], tmp: str) -> list[str]:
    """A doc command at smoke size in `tmp`: the smoke scenes, few of them, private caches."""
    swap = {"configs/oicr.py:scenes": "configs/oicr.py:smoke", "200": "8", "50": "4"}
    out = []
    for arg in args:
        arg = swap.get(arg, arg)
        for path in ("data/own", "runs/own"):
            arg = arg.replace(path, os.path.join(tmp, path))
        out.append(arg)
    if args[:3] == ["python", "-m", "jwsol.data.export"]:
        out += ["--cache-dir", os.path.join(tmp, "cache")]
    else:
        out += [f"--config.data.cache_dir={os.path.join(tmp, 'cache')}"]
    return [sys.executable] + out[1:]


@pytest.mark.slow
@pytest.mark.parametrize("labels", ["json", "csv"])
def test_the_worked_example_trains_at_smoke_size(tmp_path, labels):
    export_cmd, train_cmd, predict_cmd = doc_commands()
    assert export_cmd[:6] == ["python", "-m", "jwsol.data.export", "--format", "folder", "--out"]
    assert train_cmd[:2] == ["python", "train.py"] and predict_cmd[0] == "jwsol-predict"
    assert os.path.join("data/own", predict_cmd[-1].split("data/own/", 1)[1]).startswith(
        "data/own/test/"
    )  # the picture predicted on is held out
    tmp = str(tmp_path)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    for cmd in (export_cmd, train_cmd):
        cmd = _smoke(cmd, tmp)
        if labels == "csv":
            cmd = [a.replace("{split}.json", "{split}.csv") for a in cmd]
        done = subprocess.run(
            cmd, check=False, cwd=root, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert os.path.exists(os.path.join(tmp, "data/own", predict_cmd[-1].split("data/own/", 1)[1]))
    final = _read_json(os.path.join(tmp, "runs/own", "eval_metrics.json"))
    assert final["num_images"] == 4 and np.isfinite(final["cls_map"])
    if labels == "json":  # the COCO file's boxes make a detector's evaluation
        assert np.isfinite(final["map"]) and np.isfinite(final["corloc"])
    # The doc's last line: the trained run predicts on the held-out image.
    predict = [sys.executable, "-m", "jwsol.predict"] + [
        a.replace("data/own", os.path.join(tmp, "data/own")).replace(
            "runs/own", os.path.join(tmp, "runs/own")
        )
        for a in predict_cmd[1:]
    ]
    done = subprocess.run(
        predict + ["--out", os.path.join(tmp, "pred")], check=False, cwd=root, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    doc = _read_json(os.path.join(tmp, "pred", "predictions.json"))
    assert [im["file_name"] for im in doc["images"]] == [predict[-1]] and not doc["skipped"]
    names = [c["name"] for c in doc["categories"]]
    assert "t_shirt_top" in names and len(names) == 10  # the folder's own class names
    assert all(1 <= d["category_id"] <= 10 and d["image_id"] == 1 for d in doc["detections"])
    assert os.path.exists(os.path.join(tmp, "pred", "pictures", "test_00000.png"))
