"""Mixed precision for every job: `train.dtype` = 'float32' | 'bfloat16'.

With bfloat16 a task's model computes in bfloat16 while everything the loop keeps stays float32:
parameters and optimizer state (the master copy the updates add to), BatchNorm statistics, the
loss. `jwsol.tasks.build` wraps the task's model in `MixedPrecision`, whose `apply` casts

  params (floating leaves)  float32 -> bfloat16   (Flax layers with dtype=None compute in the
  the image (first input)   float32 -> bfloat16    dtype of their inputs and parameters)
  outputs and new state     bfloat16 -> float32   (the loss and the statistics stay float32)

so one wrapper serves the train step and `predict`, and no model file knows about precision.
The gradient reaches the float32 parameters through the cast (its transpose casts back).
Other model inputs (proposal boxes, masks, scores) are left as they are: in bfloat16 a box edge
near 1,000 px would round by up to 4 px. BatchNorm statistics are never cast down: Flax reduces
in float32 and keeps the running averages in the dtype they were created in.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jwsol.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> jnp.dtype:
    """The dtype of `train.dtype` = `name`; a ConfigError for an unknown name."""
    if name not in DTYPES:
        raise ConfigError(
            f"train.dtype={name!r} is unknown; use one of {', '.join(map(repr, DTYPES))}."
        )
    return jnp.dtype(DTYPES[name])


def cast_floating(tree: Any, dtype: jnp.dtype) -> Any:
    """`tree` with every floating-point array leaf cast to `dtype` (integers, bools kept)."""

    def cast(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
            return jnp.asarray(x, dtype)
        return x

    return jax.tree.map(cast, tree)


class MixedPrecision:
    """A Flax module's stand-in whose `apply` computes in `dtype` (see the module docstring);
    `init` and every other attribute are the module's own."""

    def __init__(self, module: Any, dtype: jnp.dtype):
        self.module, self.dtype = module, jnp.dtype(dtype)

    def apply(self, variables: dict, inputs: Any, *args, **kwargs) -> Any:
        """`module.apply(variables, inputs, *args, **kwargs)` with params and `inputs` in
        `self.dtype`; every floating output (and new state, with `mutable`) in float32."""
        variables = dict(variables, params=cast_floating(variables["params"], self.dtype))
        out = self.module.apply(variables, cast_floating(inputs, self.dtype), *args, **kwargs)
        return cast_floating(out, jnp.float32)

    def __getattr__(self, name: str) -> Any:
        if name == "module":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.module, name)


def apply_to_task(task: Any, name: str) -> Any:
    """`task` with its model computing in `train.dtype` = `name` (float32 leaves it untouched)."""
    dtype = compute_dtype(name)
    if dtype != jnp.float32:
        task.model = MixedPrecision(task.model, dtype)
    return task
