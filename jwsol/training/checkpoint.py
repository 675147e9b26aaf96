"""Orbax checkpoints of the train state: save every N steps, keep K, restore the latest or step N."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from jwsol.errors import UserError


class Checkpointer:
    """Wraps `ocp.CheckpointManager` for one workdir's `checkpoints/` folder."""

    def __init__(self, workdir: str, keep: int):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        # The loop decides when to save; orbax only keeps the newest `keep`.
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state) -> None:
        """Saves asynchronously; the state must not be donated before the copy is taken."""
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, abstract_state, step: int | None = None):
        """Restores into the structure and shardings of `abstract_state` (from jax.eval_shape)."""
        step = self.latest_step() if step is None or step < 0 else step
        if step is None:
            raise UserError(
                f"no checkpoint in {self.directory}; train first with --mode=train and the same "
                f"--workdir."
            )
        if step not in self.all_steps():
            raise UserError(
                f"no checkpoint for step {step} in {self.directory}; available: {self.all_steps()}."
            )
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_with_sharding(state, sharding):
    """ShapeDtypeStructs of `state` (arrays or ShapeDtypeStructs) carrying `sharding`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
