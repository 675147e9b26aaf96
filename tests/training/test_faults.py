"""Faults cost nothing (docs/faults.md): damaged and stray checkpoints, a full disk, two writers,
a workdir that is a file, kill -9 anywhere; each row of the table has its test here."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jwsol.errors import UserError
from jwsol.training import checkpoint, lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def state_at(step: int) -> dict:
    """A small train-state-like tree whose values say which step saved it."""
    return {"step": jnp.int32(step), "w": jnp.full((3, 4), float(step)), "b": jnp.arange(5.0)}


ABSTRACT = jax.eval_shape(lambda: state_at(0))


def saved(workdir, steps, keep=5) -> checkpoint.Checkpointer:
    ckpt = checkpoint.Checkpointer(str(workdir), keep)
    for step in steps:
        ckpt.save(step, state_at(step))
    ckpt.close()
    return checkpoint.Checkpointer(str(workdir), keep)


def damage(workdir, step: int) -> None:
    """Overwrites every file of a step's checkpoint with bytes that are not what orbax wrote."""
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", str(step))):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\xff\xfe not a checkpoint \x00\x81")


def folders(workdir) -> list[str]:
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING)
    return lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_damaged_newest_checkpoint_walks_back_with_one_warning_each(tmp_path, warnings):
    saved(tmp_path, [2, 4, 6]).close()
    damage(tmp_path, 6)
    damage(tmp_path, 4)
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=5)
    state = ckpt.restore(ABSTRACT)
    assert int(state["step"]) == 2 and float(state["w"][0, 0]) == 2.0
    skipped = [m for m in warnings() if "does not restore" in m]
    assert len(skipped) == 2  # one each, naming the step, why, where it went and what restored
    for step, message in zip((6, 4), skipped, strict=True):
        assert message.startswith(f"checkpoint step {step} in {tmp_path / 'checkpoints'}")
        assert f"skipped (moved to {tmp_path / 'checkpoints' / str(step)}.damaged)" in message
        assert "using step 2" in message and "Error" in message
    # Set aside, not deleted; the run's next saves of steps 4 and 6 supersede them.
    assert folders(tmp_path) == ["2", "4.damaged", "6.damaged"]
    ckpt.save(4, state_at(4))
    ckpt.save(6, state_at(6))
    ckpt.close()
    again = checkpoint.Checkpointer(str(tmp_path), keep=5)
    assert again.all_steps() == [2, 4, 6]
    assert float(again.restore(ABSTRACT)["w"][0, 0]) == 6.0


def test_evaluation_reads_without_moving_anything(tmp_path, warnings):
    saved(tmp_path, [2, 4]).close()
    damage(tmp_path, 4)
    reader = checkpoint.Checkpointer(str(tmp_path), keep=5, writable=False)
    assert int(reader.restore(ABSTRACT)["step"]) == 2
    assert any("step 4" in m for m in warnings())
    assert folders(tmp_path) == ["2", "4"]


def test_damaged_step_asked_for_is_one_line_naming_it(tmp_path):
    saved(tmp_path, [2, 4]).close()
    damage(tmp_path, 4)
    reader = checkpoint.Checkpointer(str(tmp_path), keep=5, writable=False)
    with pytest.raises(UserError) as info:
        reader.restore(ABSTRACT, step=4)
    message = str(info.value)
    assert "checkpoint step 4" in message and "does not restore" in message
    assert "available: [2]" in message and "\n" not in message
    with pytest.raises(UserError, match="step 3 .* does not exist; available: \\[2, 4\\]"):
        reader.restore(ABSTRACT, step=3)
    assert int(reader.restore(ABSTRACT, step=2)["step"]) == 2


def test_no_checkpoint_that_restores_is_an_error_that_keeps_them_all(tmp_path):
    saved(tmp_path, [2, 4]).close()
    damage(tmp_path, 2)
    damage(tmp_path, 4)
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=5)
    with pytest.raises(UserError, match=r"no checkpoint in .* restores \(step 4: .*; step 2: "):
        ckpt.restore(ABSTRACT)
    assert folders(tmp_path) == ["2", "4"]


def test_a_changed_config_is_not_taken_for_damage(tmp_path):
    saved(tmp_path, [2]).close()
    other = jax.eval_shape(lambda: {**state_at(0), "w": jnp.zeros((3, 5))})
    with pytest.raises(UserError, match="If the config changed since they were written"):
        checkpoint.Checkpointer(str(tmp_path), keep=5).restore(other)
    assert folders(tmp_path) == ["2"]


def test_stray_and_unfinished_step_folders_are_ignored(tmp_path, warnings):
    saved(tmp_path, [2]).close()
    root = tmp_path / "checkpoints"
    (root / "9").mkdir()  # what an interrupted copy leaves
    (root / "7").mkdir()
    (root / "7" / "default").mkdir()  # an orbax item folder without the step's metadata
    (root / "5.orbax-checkpoint-tmp").mkdir()  # a save cut short by kill -9
    reader = checkpoint.Checkpointer(str(tmp_path), keep=5, writable=False)
    assert reader.all_steps() == [2] and reader.latest_step() == 2
    assert int(reader.restore(ABSTRACT)["step"]) == 2
    with pytest.raises(UserError, match="step 9 .* is not a complete checkpoint"):
        reader.restore(ABSTRACT, step=9)
    writer = checkpoint.Checkpointer(str(tmp_path), keep=2)
    assert "7.incomplete" in folders(tmp_path) and "9.incomplete" in folders(tmp_path)
    assert sum("not a complete orbax checkpoint; ignored" in m for m in warnings()) == 2
    for step in (5, 7, 9):
        writer.save(step, state_at(step))
    writer.close()
    # keep=2 counts only real checkpoints: the stray folders neither count nor get deleted.
    assert folders(tmp_path) == ["7", "7.incomplete", "9", "9.incomplete"]


def test_full_disk_while_saving_names_path_and_space_and_keeps_older(tmp_path, monkeypatch):
    ckpt = saved(tmp_path, [2])
    real_save = ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):
        if step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoints"))
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(UserError) as info:
        ckpt.save(4, state_at(4))
    message = str(info.value)
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state_at(4)))
    assert f"cannot write checkpoint step 4 to {tmp_path / 'checkpoints'}" in message
    assert f"needs about {nbytes / 2**20:.1f} MB" in message and "free" in message
    assert "steps [2] are intact: a rerun resumes from step 2" in message
    assert "\n" not in message
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    ckpt.close()
    assert int(checkpoint.Checkpointer(str(tmp_path), 5).restore(ABSTRACT)["step"]) == 2


def _mount_tmpfs(path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        check=False,
        capture_output=True,
    )
    return result.returncode == 0


@pytest.mark.slow  # mounts a filesystem (root only; the patched test above runs everywhere)
def test_full_tmpfs_while_saving(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, "256k"):
        pytest.skip("cannot mount a tmpfs here; the patched-writer test covers the message")
    try:
        ckpt = checkpoint.Checkpointer(str(disk), keep=5)
        ckpt.save(1, state_at(1))
        ckpt.wait()
        big = {**state_at(2), "w": jnp.asarray(np.random.default_rng(0).random((400, 400)))}
        with pytest.raises(UserError, match="cannot write checkpoint step 2 .*No space left"):
            ckpt.save(2, big)
            ckpt.wait()
        assert checkpoint.Checkpointer(str(disk), 5, writable=False).all_steps() == [1]
        reader = checkpoint.Checkpointer(str(disk), 5, writable=False)
        assert int(reader.restore(ABSTRACT)["step"]) == 1
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_second_writer_is_refused_naming_the_first(tmp_path):
    refused = pytest.raises(UserError, match=f"in use by another run \\(pid {os.getpid()} on ")
    with lock.hold(str(tmp_path)), refused, lock.hold(str(tmp_path)):
        pass
    with lock.hold(str(tmp_path)):  # released when the first one ended
        pass


@pytest.mark.slow  # starts a process and kills it
def test_lock_of_a_killed_run_is_free(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from jwsol.training import lock\n"
            "with lock.hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)"
        ), str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {holder.pid} on"), lock.hold(str(tmp_path)):
            pass
    finally:
        holder.kill()
        holder.wait()
    with lock.hold(str(tmp_path)):
        pass


def test_workdir_that_is_a_file_is_one_line(tmp_path):
    path = tmp_path / "run"
    path.write_text("")
    with pytest.raises(UserError, match=f"--workdir {path} is a file, not a folder"):
        lock.prepare_workdir(str(path))
    lock.prepare_workdir(str(tmp_path / "new" / "run"))
    assert (tmp_path / "new" / "run").is_dir()


# Top-level failures: one `error:` line, status 2 for the user's faults and 1 for bugs -----------


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


def test_every_failure_is_one_line_with_the_right_status(capsys):
    from jwsol import errors

    def fails(error):
        def body():
            raise error

        return body

    cases = [
        (errors.DataError("data/x.xml: not XML;\n fix it"), 2, "data/x.xml: not XML; fix it"),
        (OSError(errno.ENOSPC, "No space left on device", "/w/m.jsonl"), 2, "device: /w/m.jsonl"),
        (ZeroDivisionError("division by zero"), 1, "ZeroDivisionError: division by zero (a bug"),
    ]
    for error, status, text in cases:
        assert errors.run_main(fails(error), verbose=False) == status
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and error_lines(err) == [err.strip()], err
        assert text in err and "Traceback" not in err
    assert errors.run_main(fails(ZeroDivisionError("x")), verbose=True) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith(
        "error: ZeroDivisionError: x"
    )
    assert errors.run_main(lambda: None, verbose=False) == 0


@pytest.mark.parametrize(
    "module", ["jwsol.anchors", "jwsol.viz.curves", "jwsol.weights.torchvision"]
)
def test_argparse_clis_fail_in_one_line(module, capsys, monkeypatch):
    import importlib

    cli = importlib.import_module(module)
    with pytest.raises(SystemExit) as info:
        cli.main(["--no-such-flag"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert f"(see python -m {module} --help)" in err


def test_a_bug_in_a_cli_is_status_1_and_its_traceback_behind_verbose(tmp_path, capsys, monkeypatch):
    from jwsol import anchors

    def bug(args):
        raise KeyError("centres")

    monkeypatch.setattr(anchors, "run", bug)
    argv = ["--source", "scenes", "--out", str(tmp_path)]
    assert anchors.main(argv) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()] and "KeyError: 'centres' (a bug" in err
    assert anchors.main([*argv, "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err


# train.py in subprocesses: kill -9 anywhere, two writers, a file as workdir, a bug -------------


def train_py(where: str, n: int, *args: str, **popen) -> subprocess.Popen:
    """Starts tests/training/faulty_train.py (train.py that SIGKILLs itself at `where`)."""
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1"
    )
    cache = os.environ.get("JWSOL_TEST_JAX_CACHE", os.path.expanduser("~/.cache/jwsol/jax_tests"))
    if cache:  # the compiled steps of earlier runs: the runs spend their time running
        env.update(
            JAX_COMPILATION_CACHE_DIR=cache,
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    script = os.path.join(ROOT, "tests", "training", "faulty_train.py")
    return subprocess.Popen(
        [sys.executable, script, where, str(n), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


def finished(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def train_rows(workdir) -> list[dict]:
    """metrics.jsonl without the timings, which no two runs share."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k != "examples_per_sec"} for r in rows]


def final_params(workdir, step: int) -> dict:
    path = os.path.join(workdir, "checkpoints", str(step), "default")
    return jax.tree.map(np.asarray, ocp.StandardCheckpointer().restore(path)["params"])


def assert_same_run(resumed, uninterrupted, last_step: int) -> None:
    def read(workdir):
        with open(os.path.join(workdir, "eval_metrics.json")) as f:
            return json.load(f)

    assert read(resumed) == pytest.approx(read(uninterrupted), rel=1e-6, abs=1e-7, nan_ok=True)
    a, b = train_rows(resumed), train_rows(uninterrupted)
    assert [sorted(r) for r in a] == [sorted(r) for r in b]  # same rows, none twice
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, rel=1e-5, abs=1e-6, nan_ok=True)
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7),
        final_params(resumed, last_step),
        final_params(uninterrupted, last_step),
    )


def killed_several_times(args: list[str], workdir, seconds: float, seed: int) -> list[int]:
    """Kills runs of `args` inside a save, inside an evaluation, inside a save again and at a
    random moment, then lets one finish; the statuses of the runs."""
    statuses = []
    for where in ("save", "eval", "save"):
        statuses.append(finished(train_py(where, 1, *args, "--workdir", str(workdir)))[0])
    process = train_py("none", 0, *args, "--workdir", str(workdir))
    delay = np.random.default_rng(seed).uniform(0.3, 0.9) * seconds
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.kill()
    statuses.append(finished(process)[0])
    status, err = finished(train_py("none", 0, *args, "--workdir", str(workdir)))
    assert status == 0, err[-3000:]
    return statuses


def timed_run(args: list[str], workdir) -> float:
    start = time.time()
    status, err = finished(train_py("none", 0, *args, "--workdir", str(workdir)))
    assert status == 0, err[-3000:]
    return time.time() - start


@pytest.mark.slow  # six train.py runs of the smoke config
def test_kill_9_anywhere_sliding_window(tmp_path):
    args = ["--config", "configs/sliding_window.py:smoke"]
    seconds = timed_run(args, tmp_path / "full")
    statuses = killed_several_times(args, tmp_path / "killed", seconds, seed=0)
    assert statuses[:3] == [-9, -9, -9]  # each run did die inside its save or evaluation
    assert_same_run(tmp_path / "killed", tmp_path / "full", last_step=6)

    # Evaluating a damaged step is one line naming it; the newest that restores is used otherwise.
    damage(tmp_path / "killed", 6)
    eval_args = [*args, "--workdir", str(tmp_path / "killed"), "--mode=eval"]
    status, err = finished(train_py("none", 0, *eval_args, "--config.eval.step=6"))
    assert status == 2 and len(error_lines(err)) == 1, err[-3000:]
    assert "checkpoint step 6 in" in error_lines(err)[0] and "does not restore" in err


@pytest.mark.slow  # six train.py runs of the smoke config
def test_kill_9_anywhere_wsddn(tmp_path):
    args = ["--config", "configs/wsddn.py:smoke", f"--config.data.cache_dir={tmp_path / 'cache'}"]
    seconds = timed_run(args, tmp_path / "full")
    statuses = killed_several_times(args, tmp_path / "killed", seconds, seed=1)
    assert statuses[:3] == [-9, -9, -9]
    assert_same_run(tmp_path / "killed", tmp_path / "full", last_step=4)
    rows = train_rows(tmp_path / "killed")  # the data counts, once, in the first train row
    counts = {f"data/{k}/{s}": 0 for k in ("skipped", "unlabelled") for s in ("train", "test")}
    assert counts.items() <= rows[0].items() and "loss" in rows[0]
    assert not any(counts.keys() & r.keys() for r in rows[1:])


@pytest.mark.slow  # train.py in subprocesses
def test_train_py_user_faults_and_bugs(tmp_path):
    args = ["--config", "configs/sliding_window.py:smoke"]
    (tmp_path / "file").write_text("")
    with lock.hold(str(tmp_path)):
        runs = {
            "file": train_py("none", 0, *args, "--workdir", str(tmp_path / "file")),
            "busy": train_py("none", 0, *args, "--workdir", str(tmp_path)),
            "bug": train_py("bug", 0, *args, "--workdir", str(tmp_path / "bug")),
        }
        results = {name: finished(p) for name, p in runs.items()}
    for name, (status, err) in results.items():
        assert len(error_lines(err)) == 1 and "Traceback" not in err, (name, err[-3000:])
        assert status == (1 if name == "bug" else 2), (name, err[-3000:])
    assert f"--workdir {tmp_path / 'file'} is a file" in results["file"][1]
    assert f"in use by another run (pid {os.getpid()} on" in results["busy"][1]
    assert "ZeroDivisionError: made up for the test (a bug" in results["bug"][1]
    status, err = finished(train_py("bug", 0, *args, "--workdir", str(tmp_path), "--verbose"))
    assert status == 1 and "Traceback" in err and len(error_lines(err)) == 1


def test_data_skips_and_unlabelled_images_are_counted_for_metrics_jsonl(monkeypatch):
    from jwsol import tasks
    from jwsol.data import records
    from jwsol.training import config as config_lib

    def made_up(config_data, split):
        labels = {"train": [[1, 0], [0, 0], [0, 1]], "test": [[0, 0], [0, 0]]}[split]
        skipped = {"train": [("a.jpg", "truncated"), ("b.xml", "not XML")], "test": []}[split]
        return types.SimpleNamespace(labels=np.asarray(labels, np.float32), skipped=skipped)

    task = tasks.build(config_lib.load("configs/wsddn.py:smoke"))
    monkeypatch.setattr(records, "load_records", made_up)
    assert task.data_counts() == {
        "data/skipped/train": 2.0,
        "data/unlabelled/train": 1.0,
        "data/skipped/test": 0.0,
        "data/unlabelled/test": 2.0,
    }


def made_up_voc(tmp_path, **fields):
    """A made-up VOCdevkit folder (jwsol.data.fake, 4 test images) and its data config."""
    sys.path.insert(0, ROOT)
    from configs import common
    from jwsol.data import fake

    config = common.voc_data()
    config.voc_root, config.cache_dir = fake.make_vocdevkit(str(tmp_path)), str(tmp_path)
    config.update_from_flattened_dict(fields)
    return config


def test_proposal_file_of_other_images_is_one_error_naming_it(tmp_path):
    from jwsol.data import fake, records
    from jwsol.errors import DataError

    config = made_up_voc(tmp_path, **{"proposals.mat_file": str(tmp_path / "other_{split}.mat")})
    ids = ["000001", "009002", "009003", "009004"]  # one of the 4 test images, 3 others
    boxes = [np.array([[1.0, 1.0, 20.0, 20.0], [2.0, 3.0, 30.0, 40.0]]) for _ in ids]
    fake.write_mat(str(tmp_path / "other_test.mat"), ids, boxes, [np.ones(2) for _ in ids])
    with pytest.raises(DataError) as info:
        records.load_records(config, "test")
    message = str(info.value)
    assert message.startswith(
        f"{tmp_path / 'other_test.mat'}: 3 of the 4 images of voc_folder/test"
    )
    assert "data.proposals.mat_file" in message and "\n" not in message


def test_a_split_with_every_image_skipped_is_one_error(tmp_path):
    from jwsol.data import records
    from jwsol.errors import DataError

    config = made_up_voc(tmp_path, **{"proposals.method": "none"})
    annotations = os.path.join(config.voc_root, "VOC2007", "Annotations")
    for name in os.listdir(annotations):
        os.remove(os.path.join(annotations, name))
    with pytest.raises(DataError, match=r"^voc_folder/test: no usable image left \(4 skipped\)"):
        records.load_records(config, "test")


def test_truncated_or_foreign_tinyimagenet_image_is_one_error_naming_it(tmp_path):
    from jwsol.data import classification, fake
    from jwsol.errors import DataError
    from jwsol.training import config as config_lib

    folder = fake.write_tinyimagenet_folder(str(tmp_path), num_classes=3, size=24)
    config = config_lib.load("configs/resnet_tinyimagenet.py:smoke").data
    config.unlock()
    config.source, config.folder, config.num_train, config.num_test = "tinyimagenet", folder, 0, 0
    images = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.endswith(".JPEG")
    )
    assert len(classification.load_source(config)[0][0]) > 0  # intact: loads
    with open(images[0], "rb") as f:
        data = f.read()
    with open(images[0], "wb") as f:
        f.write(data[: len(data) // 2])  # a download cut short
    with open(images[5], "wb") as f:
        f.write(b"<html>404</html>")  # a file of another kind
    with pytest.raises(DataError) as info:
        classification.load_source(config)
    message = str(info.value)
    assert message.startswith(images[0] + ": JPEG without its end marker (truncated); 2 of ")
    assert "tiny-imagenet-200.zip" in message and "\n" not in message
    assert classification.tinyimagenet.image_fault(images[5]) == "not a JPEG or PNG file"
