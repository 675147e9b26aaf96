"""The show command line: draws a job config's data, and refuses to run without a config."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # the CLI in subprocesses


def run_show(*args):
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "jwsol.viz.show", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180, env=env)


def test_show_draws_the_data_of_a_job_config(tmp_path):
    out = str(tmp_path / "scene.png")
    result = run_show(
        "--config=configs/wsddn.py:smoke",
        f"--config.data.cache_dir={tmp_path}",
        "--split=test",
        "--index=2",
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote {out}" in result.stdout
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_show_needs_a_config(tmp_path):
    result = run_show(f"--out={tmp_path / 'x.png'}")
    assert result.returncode != 0 and "--config" in result.stderr
    assert not os.path.exists(tmp_path / "x.png")
