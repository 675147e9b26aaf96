"""train.memory_budget_gib: a step's compiled peak memory, and the refusal of one that won't fit."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import pytest

from jwsol import tasks
from jwsol.errors import ConfigError
from jwsol.training import config as config_lib
from jwsol.training import loop, memory


def test_peak_counts_arguments_outputs_and_donation():
    x = jnp.zeros((1024,), jnp.float32)  # 4 KiB
    plain = jax.jit(lambda v: v * 2.0).lower(x).compile()
    assert memory.peak_bytes(plain) == 2 * 4096  # the argument and a fresh output
    donated = jax.jit(lambda v: v * 2.0, donate_argnums=0).lower(x).compile()
    assert memory.peak_bytes(donated) == 4096  # the output reuses the donated argument


def test_peak_counts_temporaries():
    x = jnp.zeros((256, 256), jnp.float32)  # 256 KiB

    def f(v):  # two matmuls: the first product is a temporary
        return jnp.tanh(v @ v) @ v

    compiled = jax.jit(f).lower(x).compile()
    stats = compiled.memory_analysis()
    assert stats.temp_size_in_bytes >= 256 * 1024  # at least the [256, 256] product
    assert memory.peak_bytes(compiled) == 2 * 256 * 1024 + stats.temp_size_in_bytes


def test_budget_from_config():
    cpu = jax.devices("cpu")[0]
    assert memory.budget_bytes(-1, cpu) is None  # a CPU reports no memory limit: no check
    assert memory.budget_bytes(0, cpu) is None
    assert memory.budget_bytes(1.5, cpu) == 3 * 2**29
    with pytest.raises(ConfigError, match="train.memory_budget_gib=-2"):
        memory.budget_bytes(-2, cpu)


def test_a_step_over_budget_is_refused_before_it_runs(tmp_path):
    config = config_lib.load(
        "configs/sliding_window.py:smoke",
        {"train.progress_bar": False, "train.memory_budget_gib": 1e-4},  # ~105 KB
    )
    workdir = str(tmp_path / "run")
    with pytest.raises(memory.MemoryBudgetError) as error:
        loop.run(tasks.build(config), workdir)
    message = str(error.value)
    assert "\n" not in message
    assert "train step needs an estimated" in message and "budget of 0.0001 GiB" in message
    assert f"lower train.batch_size (now {config.train.batch_size})" in message
    assert "train.dtype='bfloat16'" in message
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "1"))
    metrics = os.path.join(workdir, "metrics.jsonl")
    assert not os.path.exists(metrics) or os.path.getsize(metrics) == 0


@pytest.mark.slow
def test_an_evaluation_over_budget_is_refused_before_it_runs(tmp_path):
    workdir = str(tmp_path / "run")
    name, fields = "configs/sliding_window.py:smoke", {"train.progress_bar": False}
    loop.run(tasks.build(config_lib.load(name, fields)), workdir)
    config = config_lib.load(name, {**fields, "train.memory_budget_gib": 1e-4})
    with pytest.raises(memory.MemoryBudgetError) as error:
        loop.run(tasks.build(config), workdir, mode="eval")
    message = str(error.value)
    assert "\n" not in message and "the evaluation step (predict) needs an estimated" in message
    assert f"eval.batch_size (now {config.eval.batch_size})" in message
