"""A step's peak device memory from XLA's compiled memory analysis, and the budget it must fit.

`train.memory_budget_gib`: -1 (default) the device's memory where JAX can tell (GPUs and TPUs
report `bytes_limit`; CPUs report nothing: no check), 0 no check, > 0 that many GiB. The loop
compiles the train step ahead of its first call and refuses a step whose estimate exceeds the
budget, so a run stops with one clear line instead of an out-of-memory crash mid-step.
"""

from __future__ import annotations

from typing import Any

import jax

from jwsol.errors import ConfigError, UserError

GIB = 2**30


class MemoryBudgetError(UserError):
    """A compiled step needs more device memory than `train.memory_budget_gib` allows."""


def peak_bytes(compiled: Any) -> int | None:
    """The per-device peak of a compiled step (`jax.jit(f).lower(...).compile()`): its
    arguments, outputs not aliased to donated arguments, and temporaries; None where the
    backend gives no analysis."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
    )


def device_bytes(device: jax.Device) -> int | None:
    """The memory JAX may allocate on `device` (None where the backend does not say, e.g. CPU)."""
    try:
        stats = device.memory_stats()
    except (NotImplementedError, RuntimeError):
        return None
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def budget_bytes(budget_gib: float, device: jax.Device) -> int | None:
    """`train.memory_budget_gib` in bytes for `device`; None: no check."""
    if budget_gib == -1:
        return device_bytes(device)
    if budget_gib < 0:
        raise ConfigError(
            f"train.memory_budget_gib={budget_gib:g}: use -1 (the device's memory), 0 (no "
            f"check) or a positive number of GiB."
        )
    return int(budget_gib * GIB) if budget_gib > 0 else None


def check_step(
    compiled: Any, budget: int, what: str, batch_field: str, batch_size: int, dtype: str
) -> None:
    """Raises MemoryBudgetError when `compiled` (the step `what`, its batch size the config field
    `batch_field` = `batch_size`) needs more than `budget` bytes per device."""
    need = peak_bytes(compiled)
    if need is None or need <= budget:
        return
    remedies = [f"lower {batch_field} (now {batch_size}) or the input size (images, proposals)"]
    if dtype == "float32":
        remedies.append("set train.dtype='bfloat16'")
    remedies.append("raise train.memory_budget_gib")
    raise MemoryBudgetError(
        f"the {what} needs an estimated {need / GIB:.3g} GiB per device (XLA's compiled memory "
        f"analysis), over the budget of {budget / GIB:.3g} GiB (train.memory_budget_gib; -1: "
        f"the device's memory): {', '.join(remedies[:-1])}, or {remedies[-1]}."
    )
