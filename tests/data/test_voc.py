"""VOC annotations, images and the tfds source (mock_data), checked against hand-made files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jwsol.data import fake, voc
from jwsol.errors import DataError


def _xml_path(root, image_id):
    return os.path.join(root, "VOC2007", "Annotations", f"{image_id}.xml")


def _jpeg_path(root, image_id):
    return os.path.join(root, "VOC2007", "JPEGImages", f"{image_id}.jpg")


def test_classes_in_standard_order():
    assert len(voc.VOC_CLASSES) == 20
    assert voc.VOC_CLASSES[0] == "aeroplane" and voc.VOC_CLASSES[-1] == "tvmonitor"
    assert voc.VOC_CLASSES[14] == "person" and voc.VOC_CLASSES.index("dog") == 11


def test_parse_annotation_converts_to_pixel_edges(voc_root):
    ann = voc.parse_annotation(_xml_path(voc_root, "000001"))
    assert ann["image_id"] == "000001"
    assert (ann["width"], ann["height"]) == (120, 90)
    # dog (11, 21, 60, 80) and person (61, 11, 110, 50), 1-based inclusive -> x1-1, y1-1, x2, y2.
    np.testing.assert_array_equal(ann["boxes"], [[10, 20, 60, 80], [60, 10, 110, 50]])
    assert ann["boxes"].dtype == np.float32
    np.testing.assert_array_equal(ann["classes"], [11, 14])
    assert ann["classes"].dtype == np.int32
    np.testing.assert_array_equal(ann["difficult"], [False, True])
    np.testing.assert_array_equal(ann["truncated"], [False, False])
    truncated = voc.parse_annotation(_xml_path(voc_root, "000002"))["truncated"]
    np.testing.assert_array_equal(truncated, [True, False])


def test_box_width_matches_devkit_and_round_trips(voc_root):
    ann = voc.parse_annotation(_xml_path(voc_root, "000001"))
    widths = ann["boxes"][:, 2] - ann["boxes"][:, 0]
    np.testing.assert_array_equal(widths, [60 - 11 + 1, 110 - 61 + 1])  # devkit's xmax-xmin+1
    np.testing.assert_array_equal(
        voc.to_voc_inclusive(ann["boxes"]), [[11, 21, 60, 80], [61, 11, 110, 50]]
    )


def test_missing_tags_default_and_bad_files_name_the_file(tmp_path):
    path = str(tmp_path / "x.xml")
    with open(path, "w") as f:
        f.write(
            "<annotation><size><width>10</width><height>8</height></size><object><name>Cat</name>"
            "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>5</xmax><ymax>8</ymax></bndbox>"
            "</object></annotation>"
        )
    ann = voc.parse_annotation(path)
    np.testing.assert_array_equal(ann["boxes"], [[0, 1, 5, 8]])
    assert not ann["difficult"][0] and not ann["truncated"][0] and ann["classes"][0] == 7

    bad = {
        "missing.xml": None,
        "broken.xml": "<annotation><size>",
        "nosize.xml": "<annotation></annotation>",
        "unknown.xml": "<annotation><size><width>4</width><height>4</height></size><object>"
        "<name>unicorn</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax>"
        "</bndbox></object></annotation>",
        "text.xml": "<annotation><size><width>4</width><height>4</height></size><object>"
        "<name>cat</name><bndbox><xmin>one</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax>"
        "</bndbox></object></annotation>",
    }
    for name, text in bad.items():
        path = str(tmp_path / name)
        if text is not None:
            with open(path, "w") as f:
                f.write(text)
        with pytest.raises(DataError, match=name):
            voc.parse_annotation(path)


@pytest.mark.parametrize(
    "policy, labels, weights",
    [
        ("include", {11, 14}, set()),
        ("exclude", {11}, set()),
        ("ignore", {11}, {14}),
    ],
)
def test_difficult_policies(policy, labels, weights):
    # dog (easy), person (difficult only), dog again (difficult: dog stays positive).
    classes = np.array([11, 14, 11], np.int32)
    difficult = np.array([False, True, True])
    got_labels, got_weights = voc.image_labels(classes, difficult, policy)
    assert set(np.flatnonzero(got_labels)) == labels
    assert set(np.flatnonzero(got_weights == 0)) == weights
    with pytest.raises(DataError, match="difficult_policy"):
        voc.image_labels(classes, difficult, "sometimes")


def test_check_jpeg_sizes_and_corruption(voc_copy):
    good = _jpeg_path(voc_copy, "000002")
    assert voc.check_jpeg(good) == (140, 100)
    with open(good, "rb") as f:
        data = f.read()
    truncated = _jpeg_path(voc_copy, "000003")
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataError, match="000003.jpg.*truncated"):
        voc.check_jpeg(truncated)
    garbage = _jpeg_path(voc_copy, "000004")
    with open(garbage, "wb") as f:
        f.write(b"this is not an image" * 10)
    with pytest.raises(DataError, match="000004.jpg.*not a JPEG"):
        voc.check_jpeg(garbage)


def test_load_folder_reads_split(voc_root):
    records = voc.load_folder(voc_root, "train")
    assert [r["image_id"] for r in records] == ["000001", "000002"]
    assert records[0]["image"].endswith("000001.jpg")
    # VOCdevkit/, VOCdevkit/VOC2007 and its parent all work as the root.
    assert len(voc.load_folder(os.path.join(voc_root, "VOC2007"), "val")) == 2
    assert len(voc.load_folder(os.path.dirname(voc_root), "test")) == 4
    with pytest.raises(DataError, match="no VOC2007 folder"):
        voc.load_folder(os.path.join(voc_root, "nowhere"), "train")
    with pytest.raises(DataError, match="unknown VOC split"):
        voc.load_folder(voc_root, "holdout")


def test_load_folder_reports_bad_files(voc_copy):
    os.remove(_xml_path(voc_copy, "000002"))
    with open(_jpeg_path(voc_copy, "000003"), "wb") as f:
        f.write(b"\xff\xd8 broken")
    reported = []
    records = voc.load_folder(
        voc_copy, "test", on_bad=lambda path, why: reported.append((path, why))
    )
    assert [r["image_id"] for r in records] == ["000001", "000004"]
    assert reported[0][0] == _xml_path(voc_copy, "000002") and "not found" in reported[0][1]
    assert reported[1][0] == _jpeg_path(voc_copy, "000003")
    with pytest.raises(DataError, match="000002.xml"):
        voc.load_folder(voc_copy, "test")


def test_load_folder_rejects_size_mismatch(voc_copy):
    fake.write_xml(_xml_path(voc_copy, "000001"), "000001", (90, 120), [])
    with pytest.raises(DataError, match="000001.jpg.*120x90 but its XML says 90x120"):
        voc.load_folder(voc_copy, "train")


def test_tfds_source_matches_folder(voc_root, data_tools):
    with tfds.testing.mock_data(as_dataset_fn=data_tools.mock_as_dataset(voc_root)):
        records = voc.load_tfds("trainval", data_dir=None)
    assert [r["image_id"] for r in records] == ["000001", "000002", "000003"]
    for record in records:
        ann = voc.parse_annotation(_xml_path(voc_root, record["image_id"]))
        assert (record["height"], record["width"]) == (ann["height"], ann["width"])
        np.testing.assert_allclose(record["boxes"], ann["boxes"], atol=1e-4)
        for key in ("classes", "difficult", "truncated"):
            np.testing.assert_array_equal(record[key], ann[key])
        with open(_jpeg_path(voc_root, record["image_id"]), "rb") as f:
            assert record["image"] == f.read()


def test_tfds_inconsistent_example_is_reported(voc_root, data_tools):
    reported = []
    as_dataset = data_tools.mock_as_dataset(voc_root, broken_id="000002")
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        records = voc.load_tfds(
            "train", data_dir=None, on_bad=lambda p, why: reported.append((p, why))
        )
    assert [r["image_id"] for r in records] == ["000001"]
    assert (
        reported[0][0] == "tfds:voc/2007/train:000002.jpg" and "different lengths" in reported[0][1]
    )


def test_tfds_missing_data_set_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="tfds build voc/2007"):
        voc.load_tfds("test", data_dir=str(tmp_path))


# The picture command (the exercise's Q0.3/Q0.4): VOC image N with true boxes and top proposals.


def test_show_draws_voc_and_scenes(voc_root, voc_mat_template, idx_folder, tmp_path, data_tools):
    from jwsol.viz import show

    out = str(tmp_path / "voc.png")
    config = data_tools.voc_data_config(voc_root, voc_mat_template, str(tmp_path / "cache"))
    batch = show.render(config, "test", 1, out)
    assert batch["image_id"][0] == b"000002"
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    scenes_out = str(tmp_path / "scene.png")
    show.render(
        data_tools.scenes_data_config(idx_folder, str(tmp_path / "c")), "test", 0, scenes_out
    )
    assert os.path.getsize(scenes_out) > 1000


def test_damaged_jpeg_is_found_by_a_full_decode(voc_copy):
    path = _jpeg_path(voc_copy, "000002")
    with open(path, "rb") as f:
        data = bytearray(f.read())
    middle = len(data) // 2
    data[middle : middle + 40] = b"\xff" * 40  # bogus markers inside the entropy-coded data
    with open(path, "wb") as f:
        f.write(bytes(data))
    assert voc.check_jpeg(path) == (140, 100)  # header and end marker look fine
    assert [r["image_id"] for r in voc.load_folder(voc_copy, "train")] == ["000001", "000002"]
    reported = []
    records = voc.load_folder(
        voc_copy, "train", verify=True, on_bad=lambda p, why: reported.append((p, why))
    )
    assert [r["image_id"] for r in records] == ["000001"]
    assert reported[0][0] == path and reported[0][1].startswith("JPEG cannot be decoded")
    assert voc.decode_errors([path, bytes(data), _jpeg_path(voc_copy, "000001")])[2] is None
