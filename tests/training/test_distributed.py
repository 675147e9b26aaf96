"""Several processes (jax.distributed over gloo, one CPU device each) train the same steps and
evaluate to the same numbers as one process with as many devices."""

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # several train.py processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_PROCESSES = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
    )


def _args(workdir):
    # 33 test canvases in eval batches of 16: the last global batch holds one canvas, so one
    # process evaluates an empty last batch while the other evaluates that canvas.
    return [
        sys.executable, "train.py", "--config", "configs/sliding_window.py:smoke",
        "--workdir", str(workdir),
        "--config.train.num_steps=4", "--config.train.log_every=1",
        "--config.train.eval_every=0", "--config.train.checkpoint_every=2",
        "--config.data.num_test=33",
    ]  # fmt: skip


def _results(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    final = json.loads((workdir / "eval_metrics.json").read_text())
    return [r["loss"] for r in rows if "loss" in r], final


def test_two_processes_match_one_process_with_two_devices(tmp_path):
    one = tmp_path / "one"
    result = subprocess.run(
        _args(one), cwd=ROOT, env=_env(NUM_PROCESSES), capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    many = tmp_path / "many"
    address = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            [
                *_args(many),
                f"--coordinator_address={address}",
                f"--num_processes={NUM_PROCESSES}",
                f"--process_id={i}",
            ],
            cwd=ROOT,
            env=_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(NUM_PROCESSES)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]

    losses_one, final_one = _results(one)
    losses_many, final_many = _results(many)
    assert len(losses_one) == 4 and final_one["num_examples"] == 33
    assert losses_many == pytest.approx(losses_one, rel=1e-5, abs=1e-5)
    assert final_many.keys() == final_one.keys()
    for key, value in final_one.items():
        assert final_many[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert sorted(os.listdir(many / "checkpoints")) == sorted(os.listdir(one / "checkpoints"))


def test_coordinator_without_process_count_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [*_args(tmp_path), "--coordinator_address=localhost:1"],
        cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --coordinator_address needs")
