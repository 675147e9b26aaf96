"""The one global-index plan of every data builder: which example each process reads, and when.

Global example index `g` (0, 1, 2, ...) is the unit. Global batch `k` holds the indices
`[k * batch_size, (k + 1) * batch_size)`; process `p` of `P` takes the contiguous slice
`[p * B, (p + 1) * B)` of it, `B = batch_size // P`. In training, index `g` shows example
`epoch_permutation(seed, g // N)[g % N]` (a fresh permutation per epoch, N examples), and every
random choice for it is a function of `(seed, g)`; so the batches from step `k` on are those an
uninterrupted run sees from step k. Evaluation walks the examples `0 .. N - 1` once in order,
with a short last batch split evenly over the processes (the training loop pads it). NumPy
only (`plan_dataset` wraps it for tf.data).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from jwsol.errors import ConfigError

_SALT = 0x5EED  # separates the permutation stream from other uses of the seed


def local_batch_size(batch_size: int, process_count: int) -> int:
    """B = batch_size // process_count, or ConfigError when it does not divide."""
    if batch_size % process_count:
        raise ConfigError(f"batch size {batch_size} is not divisible by {process_count} processes.")
    return batch_size // process_count


def epoch_permutation(seed: int, epoch: int, num_examples: int, shuffle: bool = True) -> np.ndarray:
    """int64 [N]: the order of the examples in training epoch `epoch` (pure in seed and epoch)."""
    if not shuffle:
        return np.arange(num_examples, dtype=np.int64)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, _SALT, epoch])
    return rng.permutation(num_examples).astype(np.int64)


def global_indices(
    step: int, batch_size: int, process_index: int = 0, process_count: int = 1
) -> np.ndarray:
    """int64 [B]: this process's global example indices of global batch `step`."""
    local = local_batch_size(batch_size, process_count)
    return step * batch_size + process_index * local + np.arange(local, dtype=np.int64)


def train_plan(
    num_examples: int,
    *,
    seed: int,
    batch_size: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless (global indices int64 [B], example indices int64 [B]), one pair per step."""
    if not 0 <= process_index < process_count:
        raise ConfigError(f"process_index {process_index} outside 0..{process_count - 1}.")
    cached_epoch, order = -1, np.empty(0, np.int64)
    step = start_step
    while True:
        g = global_indices(step, batch_size, process_index, process_count)
        examples = np.empty_like(g)
        epochs = g // num_examples
        for epoch in np.unique(epochs):
            if epoch != cached_epoch:
                cached_epoch = int(epoch)
                order = epoch_permutation(seed, cached_epoch, num_examples, shuffle)
            here = epochs == epoch
            examples[here] = order[g[here] % num_examples]
        yield g, examples
        step += 1


def eval_plan(
    num_examples: int, *, batch_size: int, process_index: int = 0, process_count: int = 1
) -> Iterator[np.ndarray]:
    """This process's example indices (= global indices) int64 of each global batch, in order.

    Full batches give each process its contiguous B; the short last one is split as evenly
    (so every process has as many batches, unless it holds fewer examples than processes).
    """
    if not 0 <= process_index < process_count:
        raise ConfigError(f"process_index {process_index} outside 0..{process_count - 1}.")
    local_batch_size(batch_size, process_count)
    for start in range(0, num_examples, batch_size):
        size = min(batch_size, num_examples - start)
        lo = start + process_index * size // process_count
        hi = start + (process_index + 1) * size // process_count
        yield np.arange(lo, hi, dtype=np.int64)


def plan_dataset(
    num_examples: int,
    *,
    train: bool,
    batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
):
    """The plan as a `tf.data.Dataset` of (global index, example index) int64 scalars, one per
    example of this process, in batch order: `train_plan` (endless) or `eval_plan` (g = example).
    """
    import tensorflow as tf  # only here: the plan itself is NumPy

    where = {"batch_size": batch_size, "process_index": process_index}
    where["process_count"] = process_count

    def pairs():
        if train:
            yield from train_plan(num_examples, seed=seed, start_step=start_step, **where)
        else:
            yield from ((g, g) for g in eval_plan(num_examples, **where))

    spec = tf.TensorSpec([None], tf.int64)
    return tf.data.Dataset.from_generator(pairs, output_signature=(spec, spec)).unbatch()
