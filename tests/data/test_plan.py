"""The one global-index plan: epochs, resuming, process slices, the short last eval batch."""

from __future__ import annotations

import numpy as np
import pytest

from jwsol.data import plan
from jwsol.errors import ConfigError


def test_train_plan_epochs_resume_and_processes():
    n, batch = 10, 4
    stream = plan.train_plan(n, seed=3, batch_size=batch)
    steps = [next(stream) for _ in range(10)]  # 40 examples: 4 epochs
    g = np.concatenate([s[0] for s in steps])
    examples = np.concatenate([s[1] for s in steps])
    np.testing.assert_array_equal(g, np.arange(40))
    for epoch in range(4):
        assert sorted(examples[epoch * n : (epoch + 1) * n]) == list(range(n))
        np.testing.assert_array_equal(
            examples[epoch * n : (epoch + 1) * n], plan.epoch_permutation(3, epoch, n)
        )
    assert examples[:n].tolist() != examples[n : 2 * n].tolist()  # a new order each epoch
    resumed = plan.train_plan(n, seed=3, batch_size=batch, start_step=6)
    for k in range(6, 10):
        np.testing.assert_array_equal(next(resumed)[1], steps[k][1])
    halves = [
        next(plan.train_plan(n, seed=3, batch_size=batch, start_step=7, process_index=p,
                             process_count=2))
        for p in range(2)
    ]  # fmt: skip
    np.testing.assert_array_equal(np.concatenate([h[1] for h in halves]), steps[7][1])
    ordered = plan.train_plan(n, seed=3, batch_size=batch, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([next(ordered)[1] for _ in range(5)]),
                                  np.arange(20) % n)  # fmt: skip


def test_the_permutation_is_a_pure_function_of_seed_and_epoch():
    a = plan.epoch_permutation(7, 2, 50)
    np.testing.assert_array_equal(a, plan.epoch_permutation(7, 2, 50))
    assert a.dtype == np.int64 and sorted(a) == list(range(50))
    assert a.tolist() != plan.epoch_permutation(8, 2, 50).tolist()
    assert a.tolist() != plan.epoch_permutation(7, 3, 50).tolist()


def test_eval_plan_covers_each_example_once_with_a_short_last_batch_split_evenly():
    assert [b.tolist() for b in plan.eval_plan(10, batch_size=4)] == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]
    ]  # fmt: skip
    parts = [
        [b.tolist() for b in plan.eval_plan(10, batch_size=4, process_index=p, process_count=2)]
        for p in range(2)
    ]
    assert parts == [[[0, 1], [4, 5], [8]], [[2, 3], [6, 7], [9]]]  # as many batches each
    assert list(plan.eval_plan(0, batch_size=4)) == []


def test_plan_errors():
    with pytest.raises(ConfigError, match="not divisible by 3 processes"):
        plan.local_batch_size(4, 3)
    with pytest.raises(ConfigError, match="process_index 2 outside 0..1"):
        next(plan.train_plan(10, seed=0, batch_size=4, process_index=2, process_count=2))
    with pytest.raises(ConfigError, match="process_index 2 outside 0..1"):
        next(plan.eval_plan(10, batch_size=4, process_index=2, process_count=2))
