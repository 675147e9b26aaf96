"""SlidingWindowTask's data: whole test canvases, training crops, and bad crop sizes."""

import numpy as np
import pytest

from jwsol.errors import ConfigError
from jwsol.tasks.sliding_window import SlidingWindowTask
from jwsol.training import config as config_lib


def smoke_config(idx_folder, **overrides):
    return config_lib.load("configs/sliding_window.py:smoke", overrides)


def test_training_crops_and_whole_test_canvases(idx_folder):
    task = SlidingWindowTask(smoke_config(idx_folder, **{"data.train_crop": 56}))
    train = next(task.train_batches(0, 8, 0, 1))
    test = next(task.eval_batches(8, 0, 1))
    assert train["image"].shape == (8, 56, 56, 1) and test["image"].shape == (8, 64, 64, 1)
    # 48 px windows every 4 px: 3x3 on a crop, 5x5 on a canvas; every crop holds the object.
    assert train["target_y0"].shape == (8, 3, 3) and test["target_y0"].shape == (8, 5, 5)
    assert (train["target_y0"].sum(axis=(1, 2)) >= 1).all()
    assert (train["box"][:, 2:] <= 56).all() and (train["box"][:, :2] >= 0).all()


def test_no_crop_trains_on_whole_canvases(idx_folder):
    task = SlidingWindowTask(smoke_config(idx_folder, **{"data.train_crop": 0}))
    assert next(task.train_batches(0, 4, 0, 1))["image"].shape == (4, 64, 64, 1)


@pytest.mark.parametrize("crop", [44, 58, 72])
def test_bad_crop_size_is_a_config_error(idx_folder, crop):
    # 44 < the 48 px window; 64 - 58 is no multiple of the stride 4; 72 > the canvas.
    with pytest.raises(ConfigError, match="data.train_crop"):
        SlidingWindowTask(smoke_config(idx_folder, **{"data.train_crop": crop}))


def test_crop_seed_does_not_change_the_source_or_the_object(idx_folder):
    whole = next(SlidingWindowTask(smoke_config(idx_folder)).train_batches(0, 8, 0, 1))
    task = SlidingWindowTask(smoke_config(idx_folder, **{"data.train_crop": 56}))
    crops = next(task.train_batches(0, 8, 0, 1))
    np.testing.assert_array_equal(whole["label"], crops["label"])
    sizes = lambda b: b["box"][:, 2:] - b["box"][:, :2]
    np.testing.assert_array_equal(sizes(whole), sizes(crops))
