"""The detection pipeline: hand-computed boxes after resize and flip, pixels under the boxes,
static shapes, determinism and resuming, process slices, evaluation padding, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jwsol.data import augment, detection, fake, voc
from jwsol.data import records as records_lib
from jwsol.data.proposals import search as proposal_search
from jwsol.errors import ConfigError, DataError

DOG = np.array([10, 20, 60, 80], np.float32)  # image 000001 (120 x 90), edge convention
PERSON = np.array([60, 10, 110, 50], np.float32)


@pytest.fixture
def voc_config(voc_root, voc_mat_template, tmp_path, data_tools):
    def make(**overrides):
        return data_tools.voc_data_config(
            voc_root, voc_mat_template, str(tmp_path / "cache"), **overrides
        )

    return make


def _batches(ds, count):
    it = ds.as_numpy_iterator()
    return [next(it) for _ in range(count)]


def _examples(batches):
    """Per-example dicts from a list of batches."""
    out = []
    for b in batches:
        for i in range(len(b["image_index"])):
            out.append({k: v[i] for k, v in b.items()})
    return out


def test_static_shapes_and_types(voc_config):
    ds = detection.build(voc_config(), "trainval", train=True, seed=0, batch_size=2)
    spec = ds.element_spec
    for key, s in spec.items():
        assert s.shape.is_fully_defined(), key
    assert spec["image"].shape == (2, 60, 60, 3)
    assert spec["labels"].shape == (2, 20) and spec["proposals"].shape == (2, 8, 4)
    assert spec["gt_boxes"].shape == (2, 4, 4) and spec["gt_mask"].shape == (2, 4)
    assert spec["gt_classes"].dtype.name == "int32" and spec["proposal_mask"].dtype.name == "bool"


def test_boxes_after_fixed_resize_and_flip_by_hand(voc_config):
    ds = detection.build(voc_config(), "trainval", train=True, seed=1, batch_size=2)
    seen = {}
    for ex in _examples(_batches(ds, 16)):
        if ex["image_id"] == b"000001":
            seen[bool(ex["flipped"])] = ex
    assert set(seen) == {False, True}, "32 draws should show image 000001 both ways"
    sx, sy = 60 / 120, 60 / 90
    for flipped, ex in seen.items():
        np.testing.assert_allclose(ex["scale_xy"], [sx, sy], rtol=1e-6)
        np.testing.assert_array_equal(ex["orig_size"], [90, 120])
        np.testing.assert_array_equal(ex["image_size"], [60, 60])
        dog = [5, 20 * sy, 30, 80 * sy]  # (10, 20, 60, 80) * (0.5, 2/3)
        person = [30, 10 * sy, 55, 50 * sy]
        if flipped:  # x -> 60 - x, ends swapped
            dog = [60 - 30, dog[1], 60 - 5, dog[3]]
            person = [60 - 55, person[1], 60 - 30, person[3]]
        np.testing.assert_allclose(ex["gt_boxes"][:2], [dog, person], atol=1e-4)
        np.testing.assert_array_equal(ex["gt_mask"], [True, True, False, False])
        np.testing.assert_array_equal(ex["gt_classes"], [11, 14, -1, -1])
        np.testing.assert_array_equal(ex["gt_difficult"], [False, True, False, False])
        # Proposals, cleaned by hand: the 1-pixel box is dropped, the duplicate dog keeps its
        # first occurrence (score 0.1), the border box is clipped to (110, 80, 120, 90); then
        # sorted by score: border 0.9, dog+2 0.42, person 0.26, dog 0.1.
        by_hand = np.array([[110, 80, 120, 90], DOG + 2, PERSON, DOG], np.float32)
        by_hand = by_hand * [sx, sy, sx, sy]
        if flipped:
            by_hand = np.stack(
                [60 - by_hand[:, 2], by_hand[:, 1], 60 - by_hand[:, 0], by_hand[:, 3]], 1
            )
        np.testing.assert_allclose(ex["proposals"][:4], by_hand, atol=1e-4)
        np.testing.assert_allclose(ex["proposal_scores"][:4], [0.9, 0.42, 0.26, 0.1], atol=1e-6)
        np.testing.assert_array_equal(ex["proposal_mask"], [True] * 4 + [False] * 4)
        assert np.all(ex["proposals"][4:] == 0)
        # include policy: dog and person (difficult) are both positive.
        assert set(np.flatnonzero(ex["labels"])) == {11, 14}
        # The pixels: the dog box sits on red and the person box on blue (2-pixel margin for
        # JPEG and resampling at the edges).
        pixels = augment.denormalize(ex["image"]).astype(float)
        for box, colour in ((ex["gt_boxes"][0], (220, 30, 30)), (ex["gt_boxes"][1], (30, 30, 220))):
            x1, y1, x2, y2 = np.round(box).astype(int)
            inside = pixels[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].reshape(-1, 3).mean(0)
            np.testing.assert_allclose(inside, colour, atol=12)
        # Mapping back gives the original boxes.
        back = augment.boxes_to_original(
            ex["gt_boxes"][None, :2],
            ex["scale_xy"][None],
            ex["image_size"][None],
            ex["flipped"][None],
        )
        np.testing.assert_allclose(back[0], [DOG, PERSON], atol=1e-4)


@pytest.mark.parametrize(
    "size, antialias",
    [((20, 32), True), ((40, 50), True), ((80, 128), True), ((40, 128), True), ((80, 128), False)],
)
def test_resize_moves_pixel_mass_with_the_box(size, antialias):
    """Edge-convention geometry: the centroid of a block's pixel mass lands on the scaled box
    centre, for shrinking (area), growing (bilinear) and mixed resizes. (Plain bilinear
    shrinking samples rather than averages, so it is only checked growing.)"""
    image = np.zeros([50, 80, 1], np.float32)
    image[10:30, 20:45] = 200.0  # box (20, 10, 45, 30)
    resized, scale_xy = augment.resize_image(image, size[0], size[1], antialias=antialias)
    resized = resized.numpy()[:, :, 0]
    sx, sy = scale_xy.numpy()
    np.testing.assert_allclose([sx, sy], [size[1] / 80, size[0] / 50], rtol=1e-6)
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]] + 0.5  # pixel centres in edge coordinates
    mass = resized.sum()
    centre = [(xs * resized).sum() / mass, (ys * resized).sum() / mass]
    np.testing.assert_allclose(centre, [32.5 * sx, 20.0 * sy], atol=0.02)
    if antialias:  # area averaging keeps the total intensity per unit area
        np.testing.assert_allclose(mass / (sx * sy), 200.0 * 25 * 20, rtol=0.02)


def _eval_examples(config, split="test"):
    ds = detection.build(config, split, train=False, seed=0, batch_size=4)
    return {ex["image_id"].decode(): ex for ex in _examples(list(ds.as_numpy_iterator()))}


def test_shorter_side_mode_by_hand(voc_config):
    config = voc_config(resize_mode="shorter_side", image_size=64, eval_scale=45)
    examples = _eval_examples(config)
    a = examples["000001"]  # 120 x 90: shorter side 90 -> 45, scale 0.5
    np.testing.assert_array_equal(a["image_size"], [45, 60])
    np.testing.assert_allclose(a["gt_boxes"][0], DOG * 0.5, atol=1e-5)
    assert a["image"].shape == (64, 64, 3)
    assert np.all(a["image"][45:] == 0) and np.all(a["image"][:, 60:] == 0)  # padding
    b = examples["000002"]  # 100 x 140: 45 / 100 = 0.45 (64 / 140 = 0.457 does not bind)
    np.testing.assert_array_equal(b["image_size"], [63, 45])
    np.testing.assert_allclose(b["scale_xy"], [0.45, 0.45], rtol=1e-6)
    np.testing.assert_allclose(
        b["gt_boxes"][1], [9, 36, 31.5, 58.5], atol=1e-4
    )  # cat (20, 80, 70, 130)
    assert not a["flipped"] and not b["flipped"]


def test_longer_side_mode_by_hand(voc_config):
    examples = _eval_examples(voc_config(resize_mode="longer_side", image_size=64, eval_scale=64))
    a = examples["000001"]  # 120 x 90 -> 64 x 48
    np.testing.assert_array_equal(a["image_size"], [48, 64])
    np.testing.assert_allclose(a["gt_boxes"][0], DOG * (64 / 120), atol=1e-4)
    d = examples["000004"]  # 64 x 64 stays; chair (9, 9, 50, 50)
    np.testing.assert_array_equal(d["image_size"], [64, 64])
    np.testing.assert_allclose(d["gt_boxes"][0], [9, 9, 50, 50], atol=1e-5)


def test_multi_scale_training_picks_from_the_list(voc_config):
    config = voc_config(resize_mode="shorter_side", image_size=64, scales=(40, 50), flip=False)
    ds = detection.build(config, "trainval", train=True, seed=0, batch_size=4)
    sizes = set()
    for ex in _examples(_batches(ds, 8)):
        if ex["image_id"] != b"000001":
            continue
        h, w = ex["image_size"]
        sizes.add((h, w))
        # 40: 90 -> 40, 120 -> 53; 50: 120 * 50/90 = 66.7 > 64, so the longer side caps at 64.
        assert (h, w) in {(40, 53), (48, 64)}
        np.testing.assert_allclose(
            ex["gt_boxes"][0], DOG * [w / 120, h / 90, w / 120, h / 90], atol=1e-4
        )
    assert sizes == {(40, 53), (48, 64)}


@pytest.mark.slow
def test_resume_gives_the_uninterrupted_batches(voc_config):
    config = voc_config()
    full = _batches(detection.build(config, "trainval", train=True, seed=5, batch_size=2), 7)
    resumed = _batches(
        detection.build(config, "trainval", train=True, seed=5, batch_size=2, start_index=6), 4
    )
    for a, b in zip(full[3:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # Each epoch (2 batches of 2 over 4 images) shows every image once.
    for epoch in range(3):
        ids = np.concatenate([full[2 * epoch]["image_index"], full[2 * epoch + 1]["image_index"]])
        assert sorted(ids) == [0, 1, 2, 3]
    other = _batches(detection.build(config, "trainval", train=True, seed=6, batch_size=2), 7)
    order = np.concatenate([b["image_index"] for b in full])
    assert not np.array_equal(order, np.concatenate([b["image_index"] for b in other])) or not all(
        np.array_equal(a["flipped"], b["flipped"]) for a, b in zip(full, other, strict=True)
    )


@pytest.mark.slow
def test_processes_read_their_slice(voc_config):
    config = voc_config()
    whole = _batches(detection.build(config, "trainval", train=True, seed=2, batch_size=4), 3)
    parts = [
        _batches(
            detection.build(
                config,
                "trainval",
                train=True,
                seed=2,
                batch_size=4,
                process_index=p,
                process_count=2,
            ),
            3,
        )
        for p in range(2)
    ]
    for k in range(3):
        for key in whole[k]:
            joined = np.concatenate([parts[0][k][key], parts[1][k][key]])
            np.testing.assert_array_equal(whole[k][key], joined, err_msg=key)


def test_eval_covers_each_image_once_with_a_short_last_batch(voc_config):
    config = voc_config()
    batches = list(
        detection.build(config, "test", train=False, seed=0, batch_size=3).as_numpy_iterator()
    )
    assert [len(b["image_id"]) for b in batches] == [3, 1] and "example_mask" not in batches[0]
    ids = np.concatenate([b["image_id"] for b in batches])
    assert list(ids) == [b"000001", b"000002", b"000003", b"000004"]
    assert not np.any(np.concatenate([b["flipped"] for b in batches]))
    halves = [
        list(
            detection.build(
                config, "test", train=False, seed=0, batch_size=4, process_index=p, process_count=2
            ).as_numpy_iterator()
        )
        for p in range(2)
    ]
    assert [len(h) for h in halves] == [1, 1]
    assert list(halves[0][0]["image_id"]) == [b"000001", b"000002"]
    assert list(halves[1][0]["image_id"]) == [b"000003", b"000004"]


def test_plan_and_config_errors(voc_config):
    plan = detection.example_plan(10, train=True, seed=0, batch_size=4)
    first = [next(plan) for _ in range(30)]
    for epoch in range(3):
        assert sorted(i for g, i in first if epoch * 10 <= g < epoch * 10 + 10) == list(range(10))
    with pytest.raises(ConfigError, match="not divisible"):
        next(detection.example_plan(10, train=True, seed=0, batch_size=4, process_count=3))
    with pytest.raises(ConfigError, match="multiple of batch size"):
        next(detection.example_plan(10, train=True, seed=0, batch_size=4, start_index=6))
    with pytest.raises(ConfigError, match="data.source"):
        records_lib.check_config(voc_config(source="coco"))
    with pytest.raises(ConfigError, match="exceed data.image_size"):
        records_lib.check_config(voc_config(resize_mode="longer_side", scales=(80,)))
    with pytest.raises(ConfigError, match="mat_file is empty"):
        records_lib.check_config(voc_config(**{"proposals.mat_file": ""}))


def test_normalisation_is_exact_on_scenes(idx_folder, tmp_path, data_tools):
    config = data_tools.scenes_data_config(idx_folder, str(tmp_path))
    records = records_lib.load_records(config, "test")
    assert records.image_kind == "raw" and len(records) == 6
    assert len(records_lib.class_names(config)) == 10 == records.labels.shape[1]
    batches = list(
        detection.build(config, "test", train=False, seed=0, batch_size=2).as_numpy_iterator()
    )
    ex = _examples(batches)[1]
    canvas = records.images[1].astype(np.float32)[:, :, None] / 255.0
    expected = (canvas - np.array(augment.IMAGENET_MEAN)) / np.array(augment.IMAGENET_STD)
    np.testing.assert_allclose(ex["image"], expected, atol=1e-5)
    k = len(records.gt_boxes[1])
    np.testing.assert_array_equal(ex["gt_boxes"][:k], records.gt_boxes[1])
    n = len(records.proposals[1])
    np.testing.assert_array_equal(ex["proposals"][:n], records.proposals[1])
    assert ex["proposal_mask"].sum() == n and n > 0


def test_corrupt_jpeg_and_missing_xml_are_counted_skips(
    voc_copy, voc_mat_template, tmp_path, data_tools
):
    jpeg = os.path.join(voc_copy, "VOC2007", "JPEGImages", "000003.jpg")
    with open(jpeg, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    xml = os.path.join(voc_copy, "VOC2007", "Annotations", "000004.xml")
    os.remove(xml)
    damaged = os.path.join(voc_copy, "VOC2007", "JPEGImages", "000001.jpg")
    with open(damaged, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2 : len(data) // 2 + 40] = b"\xff" * 40  # only a full decode notices
    with open(damaged, "wb") as f:
        f.write(bytes(data))
    config = data_tools.voc_data_config(voc_copy, voc_mat_template, str(tmp_path))
    records = records_lib.load_records(config, "test")
    assert records.image_ids == ["000002"]
    assert [path for path, _ in records.skipped] == [jpeg, xml, damaged]
    assert "cannot be decoded" in records.skipped[2][1]
    batches = list(
        detection.build(config, "test", train=False, seed=0, batch_size=2).as_numpy_iterator()
    )
    assert len(batches) == 1 and batches[0]["image_id"].tolist() == [b"000002"]
    config.strict = True
    with pytest.raises(DataError, match="000003.jpg"):
        records_lib.load_records(config, "test")


def test_missing_ids_and_empty_proposals_are_counted_skips(voc_root, tmp_path, data_tools):
    boxes, scores = [], []
    for image_id in ("000002", "000003", "000004"):
        b, s = fake.voc_proposals(image_id)
        if image_id == "000003":  # only a 1-pixel box: nothing survives min_size
            tiny = (b[:, 2] - b[:, 0]) == 1
            b, s = b[tiny], s[tiny]
        boxes.append(np.array([fake.yxyx_1based(r) for r in b]))
        scores.append(s)
    mat = str(tmp_path / "partial_test.mat")
    fake.write_mat(mat, ["000002", "000003", "000004"], boxes, scores)
    config = data_tools.voc_data_config(
        voc_root, str(tmp_path / "partial_{split}.mat"), str(tmp_path)
    )
    records = records_lib.load_records(config, "test")
    assert records.image_ids == ["000002", "000004"]
    assert records.skipped[0] == (
        mat,
        "image id '000001' has no proposals in this file; image skipped",
    )
    assert records.skipped[1] == ("000003", "no valid proposal left after cleaning; image skipped")
    config.strict = True
    with pytest.raises(DataError, match="partial_test.mat: image id '000001'"):
        records_lib.load_records(config, "test")


def test_bad_true_boxes_are_dropped_and_counted(voc_copy, voc_mat_template, tmp_path, data_tools):
    spec = fake.VOC_IMAGES["000002"]
    objects = spec["objects"] + [
        {"name": "bus", "box": (50, 10, 30, 40)},  # x2 < x1
        {"name": "cow", "box": (150, 150, 200, 200)},  # outside the 100 x 140 image
        {"name": "sheep", "box": (90, 120, 130, 160)},  # crosses the border: clipped, kept
    ]
    xml = os.path.join(voc_copy, "VOC2007", "Annotations", "000002.xml")
    fake.write_xml(xml, "000002", spec["size"], objects)
    assert len(voc.parse_annotation(xml)["boxes"]) == 5
    config = data_tools.voc_data_config(voc_copy, voc_mat_template, str(tmp_path))
    records = records_lib.load_records(config, "train")
    k = records.image_ids.index("000002")
    np.testing.assert_array_equal(
        records.gt_boxes[k], [[0, 0, 100, 70], [20, 80, 70, 130], [89, 119, 100, 140]]
    )
    assert [voc.VOC_CLASSES[c] for c in records.gt_classes[k]] == ["car", "cat", "sheep"]
    assert len(records.skipped) == 2 and all(item == "000002" for item, _ in records.skipped)
    assert "[49.0, 9.0, 30.0, 40.0]" in records.skipped[0][1]
    assert not records.labels[k][voc.VOC_CLASSES.index("bus")]
    config.strict = True
    with pytest.raises(DataError, match="000002: true box"):
        records_lib.load_records(config, "train")


@pytest.mark.slow
def test_tfds_and_folder_give_the_same_batches(voc_root, voc_config, data_tools):
    folder = voc_config()
    with tfds.testing.mock_data(as_dataset_fn=data_tools.mock_as_dataset(voc_root)):
        config = voc_config(source="tfds")
        records = records_lib.load_records(config, "train")
    assert records.image_kind == "bytes" and records.image_ids == ["000001", "000002"]
    a = next(detection.build(folder, "train", train=True, seed=3, batch_size=2).as_numpy_iterator())
    b = next(detection.build(config, "train", train=True, seed=3, batch_size=2).as_numpy_iterator())
    for key in a:
        if a[key].dtype.kind == "f":
            np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_grid_proposals_on_scenes(idx_folder, tmp_path, data_tools):

    config = data_tools.scenes_data_config(
        idx_folder,
        str(tmp_path),
        **{"proposals.method": "grid", "proposals.grid_sizes": (24, 32), "max_proposals": 300},
    )
    records = records_lib.load_records(config, "train")
    expected = proposal_search.grid_boxes(64, 64, (24, 32), (0.5, 1.0, 2.0), 0.25)
    assert len(expected) <= 300
    for boxes in records.proposals:
        np.testing.assert_array_equal(boxes, expected)
    batch = next(
        detection.build(config, "train", train=False, seed=0, batch_size=2).as_numpy_iterator()
    )
    assert batch["proposal_mask"].sum(axis=1).tolist() == [len(expected)] * 2
    assert not os.path.exists(os.path.join(str(tmp_path), "proposals"))  # the grid is not cached


def test_no_proposals_method_keeps_every_image_and_emits_no_proposal_keys(idx_folder, tmp_path,
                                                                          data_tools):  # fmt: skip
    config = data_tools.scenes_data_config(
        idx_folder, str(tmp_path), **{"proposals.method": "none"}
    )
    records = records_lib.load_records(config, "test")
    assert len(records) == 6 and all(p.shape == (0, 4) for p in records.proposals)
    batch = next(
        detection.build(config, "test", train=True, seed=0, batch_size=2).as_numpy_iterator()
    )
    assert not {"proposals", "proposal_scores", "proposal_mask"} & set(batch)
    assert batch["image"].shape == (2, 64, 64, 3) and batch["gt_mask"].any()
    assert not os.path.exists(os.path.join(str(tmp_path), "proposals"))  # nothing searched


# Every field of the detection data config, by whether it shapes the records of a split.
SHAPES_RECORDS = {
    "source": "voc_folder", "cache_dir": "/elsewhere", "strict": True, "verify_images": False,
    "max_gt_boxes": 7, "difficult_policy": "exclude", "mnist.source": "fake",
    "mnist.folder": "/idx", "mnist.tfds_name": "mnist", "mnist.tfds_data_dir": "/tfds",
    "scenes.canvas_size": 96, "scenes.min_objects": 2, "scenes.max_objects": 3,
    "scenes.min_object_size": 30, "scenes.max_object_size": 40, "scenes.max_overlap": 0.1,
    "scenes.pixel_threshold": 10, "scenes.num_train": 9, "scenes.num_test": 9, "scenes.seed": 1,
    "proposals.method": "grid", "proposals.mode": "quality", "proposals.resize": 64,
    "proposals.max_boxes": 10, "proposals.grid_sizes": (8,), "proposals.grid_ratios": (1.0,),
    "proposals.grid_stride": 0.5, "proposals.min_size": 2, "proposals.top_k": 5,
    "proposals.also_resize": (64,),
}  # fmt: skip
LEAVES_RECORDS_ALONE = {
    "train_split": "x", "eval_split": "x", "image_size": 9, "resize_mode": "shorter_side",
    "scales": (9,), "eval_scale": 9, "antialias": False, "flip": False, "shuffle": False,
    "max_proposals": 3, "proposals.num_workers": 3,
    # Read by other sources or methods only:
    "voc_root": "/voc", "tfds_name": "x", "tfds_data_dir": "/x", "proposals.mat_file": "x",
    "proposals.mat_order": "xyxy", "folder.images": "/img", "folder.labels": "x.csv",
    "folder.classes": ("a",),
}  # fmt: skip


def _flat_keys(c, prefix=""):
    for key, value in c.items():
        if hasattr(value, "items"):
            yield from _flat_keys(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def test_every_data_field_is_classified_for_the_records_key():
    from configs import common

    assert set(_flat_keys(common.detection_data())) == set(SHAPES_RECORDS) | set(
        LEAVES_RECORDS_ALONE
    )


@pytest.mark.parametrize("key", sorted(SHAPES_RECORDS) + sorted(LEAVES_RECORDS_ALONE))
def test_records_key_changes_exactly_with_what_shapes_the_records(key):
    from configs import common

    base = common.detection_data()
    changed = common.detection_data()
    changed.update_from_flattened_dict({key: (SHAPES_RECORDS | LEAVES_RECORDS_ALONE)[key]})
    a, b = records_lib.records_spec(base), records_lib.records_spec(changed)
    assert (a != b) == (key in SHAPES_RECORDS)
    assert (hash(a) != hash(b)) == (key in SHAPES_RECORDS)


def test_records_key_of_other_sources_and_methods():
    from configs import common

    voc, mat = common.voc_data(), common.voc_data()
    mat.voc_root, mat.proposals.mat_order = "/voc", "xyxy"
    assert records_lib.records_spec(voc) != records_lib.records_spec(mat)
    voc2 = common.voc_data()
    voc2.scenes.num_train, voc2.mnist.source, voc2.proposals.resize = 9, "fake", 64
    assert records_lib.records_spec(voc) == records_lib.records_spec(
        voc2
    )  # scenes and search unread
    tfds = common.voc_data()
    tfds.source = "tfds"
    other = common.voc_data()
    other.source, other.tfds_data_dir = "tfds", "/x"
    assert records_lib.records_spec(tfds) != records_lib.records_spec(other)


def test_records_key_of_a_folder():
    from configs import common

    base = common.detection_data()
    base.source, base.folder.labels = "folder", "/own/{split}.csv"
    spec = records_lib.records_spec(base)
    for key, value in {
        "folder.images": "/img", "folder.labels": "/x.csv", "folder.classes": ("a",),
        "train_split": "x",  # names the classes
    }.items():  # fmt: skip
        changed = common.detection_data()
        changed.update_from_flattened_dict(
            {"source": "folder", "folder.labels": "/own/{split}.csv", key: value}
        )
        assert records_lib.records_spec(changed) != spec, key
