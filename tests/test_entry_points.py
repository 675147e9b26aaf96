"""The console scripts of pyproject.toml: each resolves to a callable the way an installed
entry point loads, and the wheel's metadata lists them."""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED = {
    "jwsol-train": "jwsol.train:main",
    "jwsol-predict": "jwsol.predict:main",
    "jwsol-proposals": "jwsol.proposals:main",
    "jwsol-anchors": "jwsol.anchors:main",
    "jwsol-port-weights": "jwsol.weights.torchvision:main",
}


def _scripts() -> dict[str, str]:
    """[project.scripts] of pyproject.toml (read as text: tomllib needs Python 3.11)."""
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        section = f.read().split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([\w.:]+)"$', section, flags=re.MULTILINE))


def test_pyproject_declares_the_scripts():
    assert _scripts() == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entry_point_loads(name):
    value = _scripts()[name]
    module = value.split(":")[0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not in this checkout (another branch builds it)")
    entry = importlib.metadata.EntryPoint(name=name, value=value, group="console_scripts")
    assert callable(entry.load())


@pytest.mark.slow
def test_wheel_metadata_lists_them(tmp_path):
    source = tmp_path / "source"  # a copy: setuptools writes build/ and egg-info beside the code
    shutil.copytree(
        os.path.join(REPO, "jwsol"), source / "jwsol", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=False, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = glob.glob(str(tmp_path / "jwsol-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(name).decode()
    for script, value in EXPECTED.items():
        assert f"{script} = {value}" in text


@pytest.mark.slow
def test_module_forms_still_run():
    env = {**os.environ, "PYTHONPATH": REPO}
    for args in (["train.py"], ["-m", "jwsol.train"]):
        done = subprocess.run(
            [sys.executable, *args, "--config", "configs/nosuch.py", "--workdir", "/tmp/x"],
            check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "cannot load config file 'configs/nosuch.py'" in done.stderr
    for module in ("jwsol.proposals", "jwsol.anchors", "jwsol.weights.torchvision"):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
