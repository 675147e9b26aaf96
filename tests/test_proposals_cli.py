"""`python -m jwsol.proposals`: a folder's proposals, resumed where a run stopped, and convert."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jwsol import proposals as cli
from jwsol.data.proposals import formats, search
from jwsol.errors import DataError

GRID = search.SearchSettings(method="grid", grid_sizes=(8, 16), grid_ratios=(1.0,))
SIZES = {"a": (24, 32), "b": (20, 20), "sub/c": (16, 40)}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for image_id, (height, width) in SIZES.items():
        pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{image_id}.png")
    (root / "notes.txt").write_text("not an image")
    return str(root)


def _grid(image_id: str) -> np.ndarray:
    height, width = SIZES[image_id]
    return search.grid_boxes(height, width, GRID.grid_sizes, GRID.grid_ratios, GRID.grid_stride)


def test_list_images_ids_are_relative_paths(folder):
    assert [i for i, _ in cli.list_images(folder)] == ["a", "b", "sub/c"]
    Image.new("RGB", (4, 4)).save(os.path.join(folder, "a.jpg"))
    with pytest.raises(DataError, match="two images with id 'a'"):
        cli.list_images(folder)


@pytest.mark.parametrize("name", ["out.npz", "out.pkl", "out.mat"])
def test_precompute_every_image(folder, tmp_path, name):
    out = str(tmp_path / name)
    counts = cli.precompute(folder, out, GRID, workers=1)
    assert counts == {"images": 3, "computed": 3, "resumed": 0, "unreadable": 0}
    got = formats.read(out)
    assert got.ids == ["a", "b", "sub/c"]
    for image_id, boxes in zip(got.ids, got.boxes, strict=True):
        np.testing.assert_array_equal(boxes, _grid(image_id))
    if name == "out.npz":
        assert got.sizes == SIZES
    assert not os.path.exists(out + ".partial.npz")
    again = cli.precompute(folder, out, GRID, workers=1)
    assert again == {"images": 3, "computed": 0, "resumed": 3, "unreadable": 0}


def test_resumes_from_the_partial_file_and_skips_unreadable(folder, tmp_path, capsys):
    out = str(tmp_path / "out.npz")
    marker = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)  # not a grid box: proves "not redone"
    search.save_boxes(out + ".partial.npz", ["b"], [marker], None, {"b": (20, 20)}, GRID.key())
    with open(os.path.join(folder, "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8 truncated")
    counts = cli.precompute(folder, out, GRID, workers=1)
    assert counts == {"images": 4, "computed": 2, "resumed": 1, "unreadable": 1}
    assert "broken.jpg" in capsys.readouterr().err
    got = formats.read(out)
    assert got.ids == ["a", "b", "sub/c"]
    np.testing.assert_array_equal(got.boxes[1], marker)
    np.testing.assert_array_equal(got.boxes[2], _grid("sub/c"))


def test_an_interrupted_run_leaves_its_partial_results(folder, tmp_path, monkeypatch):
    out = str(tmp_path / "out.pkl")
    real, calls = search.propose, []

    def stop_at_second(image, settings):
        calls.append(image.shape)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(image, settings)

    monkeypatch.setattr(search, "propose", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        cli.precompute(folder, out, GRID, workers=1)
    assert not os.path.exists(out)
    partial = search.load_proposal_npz(out + ".partial.npz")
    assert partial["ids"] == ["a"] and partial["settings"] == GRID.key()
    monkeypatch.setattr(search, "propose", real)
    counts = cli.precompute(folder, out, GRID, workers=1)
    assert counts["resumed"] == 1 and counts["computed"] == 2


def test_partial_file_of_other_settings_is_an_error(folder, tmp_path):
    out = str(tmp_path / "out.npz")
    search.save_boxes(out + ".partial.npz", ["a"], [np.zeros([0, 4])], None, None, "other")
    with pytest.raises(DataError, match="out.npz.partial.npz was made with other proposal"):
        cli.precompute(folder, out, GRID, workers=1)


def test_convert_checks_boxes_against_the_images(folder, tmp_path):
    source = str(tmp_path / "in.pkl")
    wide = np.array([[0, 0, 40, 10]], np.float32)  # 40 > a.png's width 32
    formats.write(source, formats.ProposalSet(["a"], [wide], None))
    with pytest.raises(DataError, match="in.pkl: image 'a', box 0 .*outside its 32 x 24 image"):
        cli.convert(source, str(tmp_path / "out.mat"), images=folder)
    cli.convert(source, str(tmp_path / "out.mat"), images=folder, clip=True)
    np.testing.assert_array_equal(
        formats.read(str(tmp_path / "out.mat")).boxes[0], [[0, 0, 32, 10]]
    )


def _run(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run(
        [sys.executable, "-m", "jwsol.proposals", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


@pytest.mark.slow
def test_command_line_selective_search_in_two_processes(folder, tmp_path):
    out = str(tmp_path / "ss.pkl")
    done = _run("--images", folder, "--out", out, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "3 computed, 0 resumed, 0 unreadable of 3 images" in done.stdout
    got = formats.read(out)
    image = np.asarray(Image.open(os.path.join(folder, "a.png")).convert("RGB"))
    np.testing.assert_array_equal(got.boxes[0], search.selective_search(image))
    converted = _run("convert", out, str(tmp_path / "ss.mat"), "--images", folder)
    assert converted.returncode == 0, converted.stderr
    bad = _run("convert", out, str(tmp_path / "ss.txt"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    assert "ss.txt: unknown proposal file type" in bad.stderr
