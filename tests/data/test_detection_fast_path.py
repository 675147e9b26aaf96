"""The whole-batch path of in-memory scenes gives the per-example path's batches, value for value.

The reference is the per-example path itself, fed the same images as lossless PNG bytes (the
path files and bytes take): training with flips (unchanged size, upsampled, shrunk, padded),
evaluation with a short last batch, resuming, and two processes' slices.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from jwsol.data import detection
from jwsol.data import records as records_lib

CASES = {  # name -> config overrides: the jobs' resize cases at test size (scenes are 64 px)
    "unchanged": {},
    "upsampled": {"image_size": 96},
    "shrunk": {"image_size": 40},
    "padded": {"image_size": 80, "resize_mode": "shorter_side", "scales": (56,), "eval_scale": 48},
    "truncated": {"max_proposals": 5, "max_gt_boxes": 2},
    "no_proposals": {"proposals.method": "none", "antialias": False},
}


@pytest.fixture
def scenes_config(idx_folder, tmp_path_factory, data_tools):
    cache = str(tmp_path_factory.getbasetemp() / "fast_path_cache")  # searched once for all

    def make(**overrides):
        return data_tools.scenes_data_config(idx_folder, cache, **overrides)

    return make


def _as_png(records: records_lib.Records) -> records_lib.Records:
    images = []
    for image in records.images:
        image = image if image.ndim == 3 else image[:, :, None]
        images.append(tf.io.encode_png(image).numpy())
    return dataclasses.replace(records, images=images, image_kind="bytes")


def _as_rgb(records: records_lib.Records) -> records_lib.Records:
    """Colour scenes: three different channels made from each grey one."""
    images = [np.stack([g, 255 - g, g // 2 + 60], axis=-1) for g in records.images]
    return dataclasses.replace(records, images=images)


def _both(monkeypatch, config, split, count, rgb=False, **kwargs):
    """(whole-batch path, per-example reference): their element specs and `count` batches (all
    when None)."""
    records = records_lib.load_records(config, split)
    records = _as_rgb(records) if rgb else records
    assert records.image_kind == "raw" and detection._one_shape(records, config, kwargs["train"])
    png = _as_png(records)
    with monkeypatch.context() as m:
        m.setattr(detection, "load_records", lambda c, s: records)
        fast = detection.build(config, split, **kwargs)
        m.setattr(detection, "load_records", lambda c, s: png)
        reference = detection.build(config, split, **kwargs)
    out = []
    for ds in (fast, reference):
        it = ds.as_numpy_iterator()
        out.append((ds.element_spec, [next(it) for _ in range(count)] if count else list(it)))
    return out


def _assert_same(fast, reference):
    (fast_spec, fast_batches), (ref_spec, ref_batches) = fast, reference
    assert fast_spec == ref_spec
    assert len(fast_batches) == len(ref_batches)
    for a, b in zip(fast_batches, ref_batches, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
@pytest.mark.parametrize("case", list(CASES))
def test_training_batches_equal_the_per_example_path(case, rgb, scenes_config, monkeypatch):
    config = scenes_config(**CASES[case])
    fast, reference = _both(
        monkeypatch, config, "train", 4, rgb=rgb, train=True, seed=3, batch_size=5
    )  # 20 draws over 12 scenes: a second epoch and both flips
    _assert_same(fast, reference)
    batches = fast[1]
    assert {True, False} == set(np.concatenate([b["flipped"] for b in batches]).tolist())
    if "proposals" in batches[0]:
        counts = np.concatenate([b["proposal_mask"].sum(1) for b in batches])
        assert len(set(counts.tolist())) > 1, "proposal counts should vary"


def test_eval_resume_and_process_slices_equal_the_per_example_path(scenes_config, monkeypatch):
    config = scenes_config(image_size=80, resize_mode="shorter_side", eval_scale=72)
    _assert_same(*_both(monkeypatch, config, "test", None, train=False, seed=0, batch_size=4))
    kwargs = {"train": True, "seed": 7, "batch_size": 4}
    _assert_same(*_both(monkeypatch, config, "train", 3, start_index=8, **kwargs))
    for p in range(2):
        where = {"process_index": p, "process_count": 2}
        _assert_same(*_both(monkeypatch, config, "train", 3, **where, **kwargs))
        short = {"train": False, "seed": 0, "batch_size": 4}  # 6 images: the last batch of 2
        _assert_same(*_both(monkeypatch, config, "test", None, **where, **short))


def test_resumed_and_sliced_batches_are_the_uninterrupted_ones(scenes_config):
    config = scenes_config()
    kwargs = {"train": True, "seed": 7, "batch_size": 4}
    full = list(detection.build(config, "train", **kwargs).take(5).as_numpy_iterator())
    resumed = detection.build(config, "train", start_index=8, **kwargs).as_numpy_iterator()
    halves = [
        detection.build(config, "train", process_index=p, process_count=2, **kwargs)
        for p in range(2)
    ]
    halves = [h.as_numpy_iterator() for h in halves]
    for step, whole in enumerate(full):
        parts = [next(h) for h in halves]
        later = next(resumed) if step >= 2 else None
        for key in whole:
            joined = np.concatenate([parts[0][key], parts[1][key]])
            np.testing.assert_array_equal(whole[key], joined, err_msg=key)
            if later is not None:
                np.testing.assert_array_equal(whole[key], later[key], err_msg=key)


def test_mixed_scales_keep_the_per_example_path(scenes_config):
    config = scenes_config(image_size=80, resize_mode="shorter_side", scales=(48, 64))
    records = records_lib.load_records(config, "train")
    assert not detection._one_shape(records, config, train=True)
    assert detection._one_shape(records, config, train=False)  # one eval side
    batch = next(
        detection.build(config, "train", train=True, seed=0, batch_size=12).as_numpy_iterator()
    )
    assert set(batch["image_size"][:, 0].tolist()) == {48, 64}
