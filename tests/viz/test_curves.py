"""Curves from metrics.jsonl: series extraction, panel choice, the PNG command and its errors."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from jwsol.errors import DataError
from jwsol.viz import curves

ROWS = [
    {"step": 10, "loss": 2.0, "top1": 0.1, "learning_rate": 0.1},
    {"step": 20, "loss": 1.5, "top1": 0.3, "learning_rate": 0.05},
    {"step": 20, "eval/loss": 1.7, "eval/top1": 0.25, "eval/top5": 0.6},
    {"step": 30, "loss": "nan", "top1": 0.4},  # the writer stores non-finite values as strings
    {"step": 20, "loss": 1.4, "top1": 0.35},  # a resumed run logs step 20 again
    {"step": 40, "eval/loss": 1.2, "eval/top1": 0.5, "eval/top5": 0.8},
]


def write_jsonl(workdir, rows):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_series_keeps_the_last_finite_value_per_step():
    steps, values = curves.series(ROWS, "loss")
    np.testing.assert_array_equal(steps, [10, 20])
    np.testing.assert_array_equal(values, [2.0, 1.4])
    steps, values = curves.series(ROWS, "eval/top1")
    np.testing.assert_array_equal(steps, [20, 40])
    np.testing.assert_array_equal(values, [0.25, 0.5])


def test_default_panels_pair_train_and_eval_names():
    assert curves.default_panels(ROWS) == ["loss", "top1"]
    only_train = [{"step": 1, "loss": 1.0, "grad_norm": 2.0}]
    assert curves.default_panels(only_train) == ["grad_norm", "loss"]
    data = curves.curve_data(ROWS, ["top1", "top5"])
    assert set(data["top1"]) == {"train", "test"} and set(data["top5"]) == {"test"}
    np.testing.assert_array_equal(data["top1"]["train"][1], [0.1, 0.35, 0.4])
    with pytest.raises(DataError, match="no values of 'bogus'"):
        curves.curve_data(ROWS, ["bogus"])


def test_a_star_panel_groups_every_evaluated_series_with_that_prefix():
    rows = [
        {"step": 5, "loss": 1.0},
        {"step": 10, "eval/map": 0.3, "eval/ap/cat": 0.2, "eval/ap/dog": 0.4, "eval/ap/cow": "nan"},
        {"step": 20, "eval/map": 0.5, "eval/ap/cat": 0.4, "eval/ap/dog": 0.6, "eval/ap/cow": "nan"},
    ]
    data = curves.curve_data(rows, ["loss", "ap/*"])
    assert set(data["ap/*"]) == {"cat", "dog"}  # a class without finite AP is left out
    np.testing.assert_array_equal(data["ap/*"]["dog"][1], [0.4, 0.6])
    assert curves.plot_curves(rows, ["loss", "ap/*"]).ndim == 3
    with pytest.raises(DataError, match="no values of 'ar/\\*'"):
        curves.curve_data(rows, ["ar/*"])
    # Logged, but never finite (no true boxes to score): left out, not an error.
    nan_map = [{"step": 5, "loss": 1.0}, {"step": 10, "eval/map": float("nan")}]
    assert set(curves.curve_data(nan_map, ["loss", "map"])) == {"loss"}


def test_command_writes_the_png(tmp_path):
    workdir = str(tmp_path / "run")
    write_jsonl(workdir, ROWS)
    assert curves.main([workdir]) == 0
    image = np.asarray(Image.open(os.path.join(workdir, "figures", "curves.png")))
    assert image.ndim == 3 and image.shape[1] > image.shape[0]  # two panels side by side
    out = str(tmp_path / "elsewhere" / "c.png")
    assert curves.main([workdir, "--keys", "loss,top5,learning_rate", "--out", out]) == 0
    wide = np.asarray(Image.open(out))
    assert wide.shape[1] > image.shape[1]  # three panels


def test_command_errors(tmp_path, capsys):
    assert curves.main([str(tmp_path)]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write('{"step": 1, "loss": 1.0}\nnot json\n')
    assert curves.main([str(tmp_path)]) == 2
    assert "metrics.jsonl line 2: not JSON" in capsys.readouterr().err
