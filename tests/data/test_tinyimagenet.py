"""TinyImageNet folder reading (made-up folder, malformed ones) and its splits."""

import os
import shutil

import pytest

from jwsol.data import tinyimagenet as tin
from jwsol.errors import ConfigError, DataError


@pytest.fixture
def folder(tin_folder):
    return tin_folder


@pytest.fixture
def broken(folder, tmp_path):
    """A private copy to damage."""
    return shutil.copytree(folder, os.path.join(str(tmp_path), tin.FOLDER_NAME))


def read_lines(path):
    with open(path) as f:
        return f.read().splitlines()


# ------------------------------------------------------------------------------ folder


def test_load_indexes_every_labelled_image(folder):
    data = tin.load(folder)
    wnids = read_lines(os.path.join(folder, "wnids.txt"))
    assert data.wnids == tuple(wnids)
    assert data.names == ("class0", "class1", "class2")  # first synonym, 'entity' not listed
    assert len(data.train_paths) == 12 and len(data.val_paths) == 6
    for path, label in zip(data.train_paths, data.train_labels):
        assert os.path.isfile(path)
        assert os.path.basename(os.path.dirname(os.path.dirname(path))) == wnids[label]
    annotated = dict(
        line.split("\t")[:2]
        for line in read_lines(os.path.join(folder, "val", "val_annotations.txt"))
    )
    assert len(annotated) == 6
    for path, label in zip(data.val_paths, data.val_labels):
        assert os.path.isfile(path)
        assert annotated[os.path.basename(path)] == wnids[label]


def test_load_accepts_the_parent_folder(folder):
    assert tin.load(os.path.dirname(folder)).folder == folder


def test_splits(folder):
    data = tin.load(folder)
    (tp, tl), (vp, vl) = tin.split(data, "standard")
    assert list(tp) == list(data.train_paths) and list(vl) == list(data.val_labels)
    (ap, al), (bp, bl) = tin.split(data, "shuffled", 0.7, split_seed=3)
    assert len(ap) == round(0.7 * 18) == 13 and len(bp) == 5
    assert sorted(ap.tolist() + bp.tolist()) == sorted(tp.tolist() + vp.tolist())
    label_of = dict(zip(tp.tolist() + vp.tolist(), tl.tolist() + vl.tolist()))
    assert [label_of[p] for p in ap] == al.tolist() and [label_of[p] for p in bp] == bl.tolist()
    again = tin.split(data, "shuffled", 0.7, split_seed=3)
    assert again[0][0].tolist() == ap.tolist()
    assert tin.split(data, "shuffled", 0.7, split_seed=4)[0][0].tolist() != ap.tolist()
    with pytest.raises(ConfigError, match="data.split='bogus'"):
        tin.split(data, "bogus")
    with pytest.raises(ConfigError, match="train_fraction"):
        tin.split(data, "shuffled", 1.0)


def test_missing_folder_names_the_download(tmp_path):
    with pytest.raises(DataError, match="does not exist.*tiny-imagenet-200.zip"):
        tin.load(str(tmp_path / "nowhere"))


def test_missing_wnids(broken):
    os.remove(os.path.join(broken, "wnids.txt"))
    with pytest.raises(DataError, match="wnids.txt is missing"):
        tin.load(broken)


def test_duplicate_wnid(broken):
    path = os.path.join(broken, "wnids.txt")
    wnids = read_lines(path)
    with open(path, "w") as f:
        f.write("\n".join(wnids + wnids[:1]) + "\n")
    with pytest.raises(DataError, match="entry 4 .* is a duplicate"):
        tin.load(broken)


def test_unknown_wnid_in_val_annotations(broken):
    path = os.path.join(broken, "val", "val_annotations.txt")
    lines = read_lines(path)
    fields = lines[1].split("\t")
    lines[1] = "\t".join([fields[0], "n99999999"] + fields[2:])
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(
        DataError, match="val_annotations.txt line 2: wnid 'n99999999'.*not in wnids.txt"
    ):
        tin.load(broken)


def test_malformed_val_annotation_line(broken):
    path = os.path.join(broken, "val", "val_annotations.txt")
    with open(path, "a") as f:
        f.write("just-one-field\n")
    with pytest.raises(DataError, match="line 7: expected 'file<TAB>wnid"):
        tin.load(broken)


def test_annotated_val_image_missing(broken):
    name = read_lines(os.path.join(broken, "val", "val_annotations.txt"))[0].split("\t")[0]
    os.remove(os.path.join(broken, "val", "images", name))
    with pytest.raises(DataError, match=f"line 1: image {name} is not in"):
        tin.load(broken)


def test_missing_val_annotations(broken):
    os.remove(os.path.join(broken, "val", "val_annotations.txt"))
    with pytest.raises(DataError, match="val_annotations.txt is missing"):
        tin.load(broken)


def test_class_folder_missing_or_unlisted(broken):
    wnid = read_lines(os.path.join(broken, "wnids.txt"))[2]
    os.rename(os.path.join(broken, "train", wnid), os.path.join(broken, "train", "n12345678"))
    with pytest.raises(DataError, match="1 class folder.*not in wnids.txt.*'n12345678'"):
        tin.load(broken)
    os.rename(os.path.join(broken, "train", "n12345678"), os.path.join(broken, "moved"))
    with pytest.raises(DataError, match=f"train/{wnid}/images is missing"):
        tin.load(broken)


def test_missing_words_falls_back_to_wnids(broken):
    os.remove(os.path.join(broken, "words.txt"))
    data = tin.load(broken)
    assert data.names == data.wnids
