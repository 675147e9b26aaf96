"""train.py as users call it: one-line errors, and the same steps on 1 and 8 devices."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # train.py in subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(*args, devices=1, timeout=300):
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
    )
    return subprocess.run(
        [sys.executable, "train.py", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_line(result):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_wrong_config_path(tmp_path):
    line = error_line(train("--config", "configs/nope.py", "--workdir", str(tmp_path)))
    assert "configs/nope.py" in line and "no such file" in line


def test_unknown_config_field(tmp_path):
    result = train(
        "--config",
        "configs/sliding_window.py:smoke",
        "--workdir",
        str(tmp_path),
        "--config.train.bogus=3",
    )
    assert "unknown config field 'bogus'" in error_line(result)


def test_missing_data(tmp_path):
    result = train(
        "--config",
        "configs/sliding_window.py:smoke",
        "--workdir",
        str(tmp_path),
        "--config.data.mnist.source=idx",
        f"--config.data.mnist.folder={tmp_path}/none",
    )
    line = error_line(result)
    assert f"{tmp_path}/none" in line and "apt-get install dataset-fashion-mnist" in line


def test_batch_size_not_dividing_over_devices(tmp_path, idx_folder):
    result = train(
        "--config",
        "configs/sliding_window.py:smoke",
        "--workdir",
        str(tmp_path),
        "--config.train.batch_size=12",
        devices=8,
    )
    assert "train.batch_size=12 does not divide over 8 devices" in error_line(result)


def test_same_steps_on_1_and_8_devices(tmp_path, idx_folder):
    # What holds whatever the device count: the same weights and batch give the same loss and
    # gradient up to summation order, and one plain SGD step keeps them close. Later steps are
    # not compared: the smoke net's large-learning-rate steps amplify rounding (docs/training.md).
    losses, grad_norms = {}, {}
    for devices in (1, 8):
        workdir = tmp_path / f"d{devices}"
        result = train(
            "--config",
            "configs/sliding_window.py:smoke",
            "--workdir",
            str(workdir),
            "--config.train.num_steps=2",
            "--config.train.log_every=1",
            "--config.train.eval_every=0",
            "--config.optimizer.name=sgd",
            "--config.optimizer.momentum=0.0",
            devices=devices,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        losses[devices] = [r["loss"] for r in rows if "loss" in r]
        grad_norms[devices] = [r["grad_norm"] for r in rows if "grad_norm" in r]
    assert len(losses[1]) == 2
    assert losses[1][0] == pytest.approx(losses[8][0], rel=1e-6)
    assert grad_norms[1][0] == pytest.approx(grad_norms[8][0], rel=1e-4)
    assert losses[1][1] == pytest.approx(losses[8][1], rel=2e-4)
