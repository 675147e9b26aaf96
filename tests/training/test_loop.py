"""The shared loop on the sliding-window smoke config: train, resume, eval, NaN guard."""

import json
import os

import jax
import numpy as np
import pytest

from jwsol import tasks
from jwsol.errors import ConfigError
from jwsol.training import config as config_lib
from jwsol.training import loop
from jwsol.training.task import EvalContext

pytestmark = pytest.mark.slow  # smoke training runs through the loop


def read_json(path):
    with open(path) as f:
        return json.load(f)


def smoke(idx_folder, **overrides):
    return config_lib.load(
        "configs/sliding_window.py:smoke",
        {"train.progress_bar": False, **overrides},
    )


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def uninterrupted(idx_folder, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("full"))
    metrics = loop.run(tasks.build(smoke(idx_folder)), workdir)
    return workdir, metrics


def test_smoke_run_writes_every_output(uninterrupted):
    workdir, metrics = uninterrupted
    for name in (
        "config.json",
        "metrics.jsonl",
        "eval_metrics.json",
        "figures/test_predictions.png",
    ):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
    final = read_json(os.path.join(workdir, "eval_metrics.json"))
    assert set(final) >= {"accuracy", "mean_iou", "iou50_accuracy"}
    assert final["accuracy"] == pytest.approx(metrics["accuracy"])
    assert final["num_examples"] == 40
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    train_steps = [r["step"] for r in rows if "loss" in r]
    assert train_steps == [2, 3, 4, 6]  # log_every=2, plus the checkpoint step 3
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert steps == [3, 6]


def test_resume_after_kill_gives_the_same_result(idx_folder, tmp_path, uninterrupted, monkeypatch):
    from jwsol.tasks.sliding_window import SlidingWindowTask

    original = SlidingWindowTask.train_batches

    def dies_after_the_step_3_checkpoint(self, start_step, *args):
        for step, batch in enumerate(original(self, start_step, *args), start_step):
            if step == 4:
                raise KeyboardInterrupt("killed")
            yield batch

    workdir = str(tmp_path)
    monkeypatch.setattr(SlidingWindowTask, "train_batches", dies_after_the_step_3_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        loop.run(tasks.build(smoke(idx_folder)), workdir)
    monkeypatch.setattr(SlidingWindowTask, "train_batches", original)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]
    resumed = loop.run(tasks.build(smoke(idx_folder)), workdir)
    assert resumed == pytest.approx(uninterrupted[1], rel=1e-6, abs=1e-7)
    full = [
        r for r in read_jsonl(os.path.join(uninterrupted[0], "metrics.jsonl")) if r["step"] == 6
    ]
    again = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if r["step"] == 6]
    assert again[0]["loss"] == pytest.approx(full[0]["loss"], rel=1e-6)


def test_eval_mode_reproduces_eval_metrics(idx_folder, uninterrupted, tmp_path):
    workdir = uninterrupted[0]
    before = read_json(os.path.join(workdir, "eval_metrics.json"))
    os.remove(os.path.join(workdir, "eval_metrics.json"))
    metrics = loop.run(tasks.build(smoke(idx_folder)), workdir, mode="eval")
    after = read_json(os.path.join(workdir, "eval_metrics.json"))
    assert after == before
    assert metrics["accuracy"] == before["accuracy"]
    earlier = loop.run(tasks.build(smoke(idx_folder, **{"eval.step": 3})), workdir, mode="eval")
    assert read_json(os.path.join(workdir, "eval_metrics.json"))["step"] == 3
    assert set(earlier) == set(metrics)


def test_the_final_evaluation_runs_final_predict_and_the_others_predict(
    idx_folder, uninterrupted, tmp_path, monkeypatch
):
    from jwsol.tasks.sliding_window import SlidingWindowTask

    traced = []  # which function each jitted predict traced (once per function and shape)
    predict = SlidingWindowTask.predict

    def every(self, variables, batch):
        traced.append("predict")
        return predict(self, variables, batch)

    def final(self, variables, batch):
        traced.append("final_predict")
        return predict(self, variables, batch)

    monkeypatch.setattr(SlidingWindowTask, "predict", every)
    monkeypatch.setattr(SlidingWindowTask, "final_predict", final)
    loop.run(tasks.build(smoke(idx_folder, **{"train.eval_every": 3})), str(tmp_path))
    assert traced == ["predict", "final_predict"]  # step 3, then the final step 6
    traced.clear()
    loop.run(tasks.build(smoke(idx_folder)), uninterrupted[0], mode="eval")
    assert traced == ["final_predict"]


def test_eval_without_checkpoint_is_a_clear_error(idx_folder, tmp_path):
    with pytest.raises(Exception, match="no checkpoint in .*train first"):
        loop.run(tasks.build(smoke(idx_folder)), str(tmp_path), mode="eval")


def test_nan_guard(idx_folder, tmp_path):
    config = smoke(idx_folder, **{"optimizer.learning_rate": 1e38, "train.num_steps": 4})
    with pytest.raises(loop.NonFiniteLossError, match="learning_rate") as info:
        loop.run(tasks.build(config), str(tmp_path))
    # It diverges before the first checkpoint (step 3): no step None in the message.
    assert "there is no checkpoint yet (the first is due at step 3)" in str(info.value)
    assert "None" not in str(info.value)


def test_batch_that_does_not_divide_over_devices(idx_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    with pytest.raises(ConfigError, match="train.batch_size=12 does not divide over 8 devices"):
        loop.run(tasks.build(smoke(idx_folder, **{"train.batch_size": 12})), str(tmp_path))


def test_cpu_kernels_auto_times_both_once_per_workdir(idx_folder, tmp_path, monkeypatch):
    from jwsol.training import cpu

    if cpu.cpu_compiler_options() is None:
        pytest.skip("this XLA has no Eigen option: nothing to choose")
    monkeypatch.setattr(cpu, "AUTO_MIN_STEPS", 1)  # the smoke run is 6 steps
    calls = []
    choose = cpu.choose_kernels
    monkeypatch.setattr(cpu, "choose_kernels", lambda *a, **k: calls.append(1) or choose(*a, **k))
    workdir = str(tmp_path)
    loop.run(tasks.build(smoke(idx_folder)), workdir)
    saved = read_json(os.path.join(workdir, loop.CPU_KERNELS_FILE))
    assert saved["kernels"] in ("ynnpack", "eigen")
    assert set(saved["train_step_ms"]) == {"ynnpack", "eigen"}
    assert len(calls) == 1
    # Resumed for more steps and evaluated: the saved choice, not timed again.
    loop.run(tasks.build(smoke(idx_folder, **{"train.num_steps": 8})), workdir)
    runner = loop.Runner(tasks.build(smoke(idx_folder)), workdir, mode="eval")
    assert runner.compiler_options == cpu.kernel_options(saved["kernels"])
    assert len(calls) == 1


def test_unknown_cpu_kernels_is_a_config_error(idx_folder, tmp_path):
    config = smoke(idx_folder, **{"train.cpu_kernels": "mkl"})
    with pytest.raises(ConfigError, match="train.cpu_kernels='mkl'"):
        loop.run(tasks.build(config), str(tmp_path))


def test_unknown_override_field():
    with pytest.raises(ConfigError, match="train.bogus"):
        config_lib.load("configs/sliding_window.py:smoke", {"train.bogus": 1})


def _train_config(**fields):
    config = config_lib.load("configs/sliding_window.py:smoke").train
    config.unlock()
    config.update(fields)
    return config


def test_durations_in_steps_or_epochs_resolve_in_one_place():
    d = loop.resolve_durations(_train_config(batch_size=16, num_steps=30, eval_every=4), 1000)
    assert (d.total_steps, d.steps_per_epoch, d.eval_every) == (30, 62, 4)
    assert d.eval_schedule == (4, 8, 12, 16, 20, 24, 28, 30)
    assert loop.resolve_durations(_train_config(num_steps=28, eval_every=4), 10).eval_schedule[
        -2:
    ] == (24, 28)
    assert loop.resolve_durations(_train_config(num_steps=30, eval_every=0), 10).eval_schedule == (
        30,
    )
    # Epochs win over steps: 100 examples in batches of 8 are 12 steps an epoch.
    epochs = _train_config(
        batch_size=8, num_epochs=2.5, eval_every=3, eval_every_epochs=1.0,
        log_every_epochs=0.5, checkpoint_every_epochs=2.0,
    )  # fmt: skip
    d = loop.resolve_durations(epochs, 100)
    assert (d.total_steps, d.eval_every, d.log_every, d.checkpoint_every) == (30, 12, 6, 24)
    assert d.eval_schedule == (12, 24, 30)


def test_bad_durations_name_the_field():
    with pytest.raises(ConfigError, match="train.log_every=0"):
        loop.resolve_durations(_train_config(log_every=0), 100)
    with pytest.raises(ConfigError, match="train.eval_every_epochs=-1"):
        loop.resolve_durations(_train_config(eval_every_epochs=-1.0), 100)


def test_eval_context_first_middle_last():
    ctx = EvalContext(step=16, final=False, schedule=(4, 8, 12, 16, 20, 24, 28, 30), epoch=1.0)
    assert ctx.first_middle_last == {4, 16, 30}
    assert EvalContext(5, True, (5,), 0.5).first_middle_last == {5}
