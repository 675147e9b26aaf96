"""Proposal file formats (.mat, pcl.pytorch/wetectron .pkl, our .npz): layouts worked by hand,
round trips, conversion and the box checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io

from jwsol.data.proposals import formats
from jwsol.errors import DataError

# A box on the 0-based pixel columns 2..5 and rows 1..3: edges (2, 1, 6, 4).
EDGE_BOX = [2.0, 1.0, 6.0, 4.0]


def _sample(with_scores: bool = True, sizes: bool = True) -> formats.ProposalSet:
    rng = np.random.default_rng(0)
    ids, boxes, scores = ["000005", "000007", "2008_000001"], [], []
    for count in (5, 1, 0):
        corner = rng.integers(0, 30, size=(count, 2))
        side = rng.integers(1, 20, size=(count, 2))
        boxes.append(np.concatenate([corner, corner + side], axis=1).astype(np.float32))
        scores.append(rng.random(count).astype(np.float32))
    image_sizes = {i: (50, 60) for i in ids} if sizes else {}
    return formats.ProposalSet(ids, boxes, scores if with_scores else None, image_sizes)


def _assert_same(got: formats.ProposalSet, want: formats.ProposalSet, scores: bool) -> None:
    assert got.ids == want.ids
    for a, b in zip(got.boxes, want.boxes, strict=True):
        np.testing.assert_array_equal(a.reshape(-1, 4), b)
    if scores:
        for a, b in zip(got.scores, want.scores, strict=True):
            np.testing.assert_array_equal(a, b)


def test_pkl_layout_is_detectrons(tmp_path):
    path = str(tmp_path / "p.pkl")
    formats.write(path, formats.ProposalSet(["a"], [np.array([EDGE_BOX], np.float32)], None))
    with open(path, "rb") as f:
        content = pickle.load(f)
    assert sorted(content) == ["boxes", "indexes", "scores"]
    np.testing.assert_array_equal(content["boxes"][0], [[2, 1, 5, 3]])  # 0-based inclusive
    assert content["boxes"][0].dtype == np.float32 and content["indexes"] == ["a"]
    np.testing.assert_array_equal(content["scores"][0], [0.0])


def test_mat_layout_is_fast_rcnns(tmp_path):
    path = str(tmp_path / "p.mat")
    boxes = np.array([EDGE_BOX], np.float32)
    formats.write(path, formats.ProposalSet(["000005"], [boxes], [np.array([0.5], np.float32)]))
    content = scipy.io.loadmat(path)
    np.testing.assert_array_equal(content["boxes"][0, 0], [[2, 3, 4, 6]])  # y1, x1, y2, x2 1-based
    assert content["images"][0, 0][0] == "000005"
    np.testing.assert_array_equal(content["boxScores"][0, 0], [[0.5]])


def test_reads_an_old_style_pkl_with_ids_and_int_indexes(tmp_path):
    path = str(tmp_path / "old.pkl")
    content = {"boxes": [np.array([[2, 1, 5, 3]], np.float64)], "scores": [[0.3]], "ids": [5]}
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=2)
    read = formats.read(path)
    assert read.ids == ["5"]
    np.testing.assert_array_equal(read.boxes[0], [EDGE_BOX])
    np.testing.assert_allclose(read.scores[0], [0.3])


@pytest.mark.parametrize("name", ["p.npz", "p.pkl", "p.mat"])
@pytest.mark.parametrize("with_scores", [True, False])
def test_round_trip(tmp_path, name, with_scores):
    want = _sample(with_scores)
    path = str(tmp_path / name)
    formats.write(path, want)
    got = formats.read(path, sizes=want.sizes)
    _assert_same(got, want, with_scores)
    if not with_scores:
        # .pkl always carries scores (its loaders index them): zeros stand for "none".
        assert got.scores is None or all(np.all(s == 0) for s in got.scores)
    if name.endswith(".npz"):
        assert got.sizes == want.sizes


def test_int_ids_for_coco_style_annotations(tmp_path):
    path = str(tmp_path / "p.pkl")
    numeric = _sample()
    numeric.ids[2] = "2008000001"
    formats.write(path, numeric, int_ids=True)
    with open(path, "rb") as f:
        assert pickle.load(f)["indexes"] == [5, 7, 2008000001]
    assert formats.read(path).ids == ["5", "7", "2008000001"]
    with pytest.raises(DataError, match="2008_000001.*not one"):
        formats.write(str(tmp_path / "q.pkl"), _sample(), int_ids=True)


def test_convert_through_every_format(tmp_path):
    from jwsol import proposals as cli

    want = _sample()
    formats.write(str(tmp_path / "a.mat"), want)
    cli.convert(str(tmp_path / "a.mat"), str(tmp_path / "b.pkl"))
    cli.convert(str(tmp_path / "b.pkl"), str(tmp_path / "c.npz"))
    cli.convert(str(tmp_path / "c.npz"), str(tmp_path / "d.mat"))
    _assert_same(formats.read(str(tmp_path / "d.mat")), want, scores=True)


@pytest.mark.parametrize(
    "box, why",
    [
        ([6.0, 1.0, 2.0, 4.0], "out of order"),
        ([2.0, 1.0, 2.0, 4.0], "empty"),
        ([2.0, 1.0, 61.0, 4.0], "outside its 60 x 50 image"),
        ([np.nan, 1.0, 6.0, 4.0], "not finite"),
    ],
)
def test_bad_box_names_file_image_and_box(tmp_path, box, why):
    proposals = _sample()
    proposals.boxes[0][3] = box
    path = str(tmp_path / "bad.npz")
    with pytest.raises(DataError, match=rf"bad.npz: image '000005', box 3 .*{why}"):
        formats.write(path, proposals)


def test_bad_box_in_a_file_read_and_clipped(tmp_path):
    path = str(tmp_path / "bad.pkl")
    content = {"boxes": [np.array([[2, 1, 5, 3], [40, 1, 70, 3], [9, 9, 5, 12]], np.float32)]}
    content.update(scores=[np.array([0.1, 0.2, 0.3], np.float32)], indexes=["img"])
    with open(path, "wb") as f:
        pickle.dump(content, f)
    with pytest.raises(DataError, match="bad.pkl: image 'img', box 2 .*out of order"):
        formats.read(path)
    with pytest.raises(DataError, match="box 1 .*outside its 60 x 50 image"):
        formats.read(path, sizes={"img": (50, 60)}, check=True)
    raw = formats.read(path, sizes={"img": (50, 60)}, check=False)
    clipped = formats.clip(raw)
    np.testing.assert_array_equal(clipped.boxes[0], [EDGE_BOX, [40, 1, 60, 4]])
    np.testing.assert_allclose(clipped.scores[0], [0.1, 0.2])


def test_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="unknown proposal file type '.txt'"):
        formats.read(str(tmp_path / "p.txt"))
    with pytest.raises(DataError, match="p.pkl: proposal file not found"):
        formats.read(str(tmp_path / "p.pkl"))
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="junk.pkl: not a readable pickle"):
        formats.read(str(junk))
    keys = tmp_path / "keys.pkl"
    keys.write_bytes(pickle.dumps({"scores": []}))
    with pytest.raises(DataError, match=r"keys.pkl: missing key\(s\) \['boxes', 'ids'\]"):
        formats.read(str(keys))
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"junk")
    with pytest.raises(DataError, match="bad.npz: unreadable proposal file"):
        formats.read(str(bad_npz))
