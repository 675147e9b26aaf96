"""--wandb: the writer mirrors scalars, images and the config to a (fake) wandb module; a
missing package is one clear error; a bare --wandb takes the default project."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import pytest

from jwsol.errors import UserError
from jwsol.train import wandb_argv
from jwsol.training import writer as run_writer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeRun:
    def __init__(self, calls: list):
        self.calls = calls
        self.config = types.SimpleNamespace(
            update=lambda obj, allow_val_change: calls.append(("config", obj))
        )

    def log(self, values: dict, step: int) -> None:
        self.calls.append(("log", step, values))

    def finish(self) -> None:
        self.calls.append(("finish",))


@pytest.fixture
def fake_wandb(monkeypatch):
    calls: list = []
    module = types.ModuleType("wandb")
    module.util = types.SimpleNamespace(generate_id=lambda: f"id{len(calls)}")
    module.Image = lambda array: ("image", array.shape)

    def init(**kwargs):
        calls.append(("init", kwargs))
        return FakeRun(calls)

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def test_writer_mirrors_to_wandb(tmp_path, fake_wandb):
    workdir = str(tmp_path / "run1")
    writer = run_writer.Writer(workdir, wandb_project="proj")
    writer.json("config.json", {"train": {"steps": 3}})
    writer.scalars(2, {"loss": np.float32(1.5), "note": "text", "count": 4})
    writer.images(2, {"fig": np.zeros((4, 5, 3), np.uint8)})
    writer.json("eval_metrics.json", {"map": 0.5})
    writer.close()
    init = fake_wandb[0]
    assert init == (
        "init",
        {"project": "proj", "dir": workdir, "name": "run1", "id": "id0", "resume": "allow"},
    )
    assert fake_wandb[1:] == [
        ("config", {"train": {"steps": 3}}),
        ("log", 2, {"loss": 1.5, "count": 4.0}),
        ("log", 2, {"fig": ("image", (4, 5, 3))}),
        ("finish",),
    ]
    # A resumed run continues the same W&B run.
    run_writer.Writer(workdir, wandb_project="proj").close()
    assert fake_wandb[-2][1]["id"] == "id0"


def test_no_wandb_without_the_flag(tmp_path, fake_wandb):
    writer = run_writer.Writer(str(tmp_path), wandb_project=None)
    writer.scalars(1, {"loss": 1.0})
    writer.close()
    assert fake_wandb == []


def test_missing_wandb_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(UserError, match="--wandb needs the wandb package.*pip install wandb"):
        run_writer.Writer(str(tmp_path), wandb_project="proj")


def test_bare_flag_takes_the_default_project():
    assert wandb_argv(["x", "--wandb"]) == ["x", "--wandb=jwsol"]
    assert wandb_argv(["x", "--wandb", "--mode=eval"]) == ["x", "--wandb=jwsol", "--mode=eval"]
    assert wandb_argv(["x", "--wandb", "mine"]) == ["x", "--wandb", "mine"]
    assert wandb_argv(["x", "--wandb=mine"]) == ["x", "--wandb=mine"]


@pytest.mark.slow
def test_train_without_wandb_installed_fails_before_training(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO}
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('wandb') is not None)"
    if subprocess.run([sys.executable, "-c", probe], check=False, env=env).returncode:
        pytest.skip("wandb is installed in this environment")
    done = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/sliding_window.py:smoke",
         "--workdir", str(tmp_path / "run"), "--wandb"],
        check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: --wandb needs the wandb package")
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.slow
def test_a_smoke_run_mirrors_its_metrics(tmp_path, fake_wandb):
    from jwsol import tasks
    from jwsol.training import config as config_lib
    from jwsol.training import loop

    config = config_lib.load("configs/sliding_window.py:smoke", {"train.progress_bar": False})
    loop.run(tasks.build(config), str(tmp_path / "run"), "train", wandb_project="proj")
    logged = {key for call in fake_wandb if call[0] == "log" for key in call[2]}
    assert "train/loss" in logged or "loss" in logged
    assert any(key.startswith("eval/") for key in logged)
    assert ("finish",) in fake_wandb and fake_wandb[0][1]["project"] == "proj"
    assert any(call[0] == "config" for call in fake_wandb)
