"""Orbax checkpoints of the train state: save every N steps, keep K, restore the newest that restores.

Faults (docs/faults.md): a step folder that is not a complete orbax checkpoint is ignored; one
that fails to restore is skipped with a warning naming it and why, and restore walks back to the
next older one. A writer moves both kinds aside (`N.incomplete`, `N.damaged`) rather than
deleting them, so they cannot collide with the new saves that supersede them. A full or
unwritable disk is one line naming the path and the space needed.
"""

from __future__ import annotations

import errno
import os
import re
import shutil

import jax
import orbax.checkpoint as ocp
from absl import logging

from jwsol.errors import UserError

# What a finished orbax save leaves in a step folder (unfinished saves live in N.orbax-checkpoint-tmp).
_COMPLETE_MARKERS = ("_CHECKPOINT_METADATA", os.path.join("default", "_METADATA"))
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM}
# Orbax's tensorstore writes report the OS error inside a ValueError's text.
_DISK_TEXT = re.compile(
    r"No space left on device|Disk quota exceeded|Permission denied|Read-only file system"
)


def is_complete(step_dir: str) -> bool:
    """Whether `step_dir` holds the files every finished orbax save writes."""
    return all(os.path.isfile(os.path.join(step_dir, m)) for m in _COMPLETE_MARKERS)


def _reason(error: BaseException) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__


def _disk_error_reason(error: BaseException | None) -> str | None:
    """The OS's words for a full or unwritable disk anywhere in `error`'s chain, else None."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
            return os.strerror(error.errno)
        if found := _DISK_TEXT.search(str(error)):
            return found.group(0)
        error = error.__cause__ or error.__context__
    return None


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _state_bytes(state) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(state))


class Checkpointer:
    """Wraps `ocp.CheckpointManager` for one workdir's `checkpoints/` folder.

    `writable=False` (evaluation) never moves or creates anything beyond the folder itself.
    """

    def __init__(self, workdir: str, keep: int, writable: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.writable = writable and jax.process_index() == 0
        self._state_nbytes, self._saving = 0, -1  # for the disk-full message
        if self.writable:
            for step in self._incomplete_steps():
                logging.warning(
                    "checkpoint folder %s is not a complete orbax checkpoint; ignored (moved to "
                    "%s).",
                    os.path.join(self.directory, str(step)),
                    self._set_aside(step, "incomplete"),
                )
        # The loop decides when to save; orbax only keeps the newest `keep` and, in a writer,
        # removes the N.orbax-checkpoint-tmp folders that saves cut short leave behind.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=self.writable
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    # Listing ------------------------------------------------------------------------------------
    def _step_folders(self) -> dict[int, str]:
        if not os.path.isdir(self.directory):
            return {}
        return {
            int(name): os.path.join(self.directory, name)
            for name in os.listdir(self.directory)
            if name.isdigit() and os.path.isdir(os.path.join(self.directory, name))
        }

    def _incomplete_steps(self) -> list[int]:
        return sorted(s for s, path in self._step_folders().items() if not is_complete(path))

    def all_steps(self) -> list[int]:
        """Steps with a complete checkpoint folder, oldest first (restoring may still fail)."""
        return sorted(s for s, path in self._step_folders().items() if is_complete(path))

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def _set_aside(self, step: int, kind: str) -> str:
        """Renames step folder N to N.KIND (N.KIND.2, ... if taken) and returns the new path:
        orbax ignores it, nothing is deleted, and a new save of step N does not collide with it."""
        source = os.path.join(self.directory, str(step))
        target, n = f"{source}.{kind}", 1
        while os.path.exists(target):
            n += 1
            target = f"{source}.{kind}.{n}"
        os.rename(source, target)
        return target

    # Restore ------------------------------------------------------------------------------------
    def _restore_step(self, step: int, abstract_state):
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def restore(self, abstract_state, step: int | None = None):
        """Restores into the structure and shardings of `abstract_state` (from jax.eval_shape).

        `step` None or < 0: the newest checkpoint that restores; each newer one that does not is
        skipped with a warning naming it and why (a writer moves it aside). A given `step` that
        is missing or does not restore is a `UserError`.
        """
        steps = self.all_steps()
        if step is not None and step >= 0:
            return self._restore_exactly(abstract_state, step, steps)
        if not steps:
            raise UserError(
                f"no checkpoint in {self.directory}; train first with --mode=train and the same "
                f"--workdir."
            )
        failures = []
        for candidate in reversed(steps):
            try:
                state = self._restore_step(candidate, abstract_state)
            except Exception as e:  # noqa: BLE001  damage fails in many ways (orbax, tensorstore)
                failures.append((candidate, _reason(e)))
                continue
            for bad, why in failures:  # one warning per skipped step, once one has restored
                moved = f" (moved to {self._set_aside(bad, 'damaged')})" if self.writable else ""
                logging.warning(
                    "checkpoint step %d in %s does not restore (%s); skipped%s, using "
                    "step %d.",
                    bad, self.directory, why, moved, candidate,
                )  # fmt: skip
            if failures:
                self._manager.reload()
            return state
        listed = "; ".join(f"step {s}: {why}" for s, why in failures)
        raise UserError(
            f"no checkpoint in {self.directory} restores ({listed}). If the config changed since "
            f"they were written, use a new --workdir; otherwise move that folder aside to start "
            f"over."
        )

    def _restore_exactly(self, abstract_state, step: int, steps: list[int]):
        if step not in steps:
            incomplete = step in self._step_folders()
            what = "is not a complete checkpoint" if incomplete else "does not exist"
            raise UserError(
                f"checkpoint step {step} in {self.directory} {what}; available: {steps}."
            )
        try:
            return self._restore_step(step, abstract_state)
        except Exception as e:  # see restore()
            others = [s for s in steps if s != step]
            raise UserError(
                f"checkpoint step {step} in {self.directory} does not restore ({_reason(e)}); "
                f"evaluate another step (available: {others}) or leave out "
                f"--config.eval.step for the newest one that restores."
            ) from e

    # Save ---------------------------------------------------------------------------------------
    def _disk_error(self, step: int, reason: str) -> UserError:
        free = shutil.disk_usage(self.directory).free if os.path.isdir(self.directory) else 0
        kept = self.all_steps()
        resume = f"steps {kept} are intact: a rerun resumes from step {kept[-1]}" if kept else (
            "there is no earlier checkpoint: a rerun starts over"
        )  # fmt: skip
        return UserError(
            f"cannot write checkpoint step {step} to {self.directory} ({reason}): it "
            f"needs about {_megabytes(self._state_nbytes)}, {_megabytes(free)} free. Free space "
            f"or make the folder writable, then rerun the same command; {resume}."
        )

    def _guarded(self, step: int, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if reason := _disk_error_reason(e):
                raise self._disk_error(step, reason) from e
            raise

    def save(self, step: int, state) -> None:
        """Saves asynchronously; the state must not be donated before the copy is taken."""
        self._state_nbytes, self._saving = _state_bytes(state), step
        self._guarded(step, self._manager.save, step, args=ocp.args.StandardSave(state), force=True)

    def wait(self) -> None:
        self._guarded(self._saving, self._manager.wait_until_finished)

    def close(self) -> None:
        self.wait()
        self._manager.close()


def abstract_with_sharding(state, sharding):
    """ShapeDtypeStructs of `state` (arrays or ShapeDtypeStructs) carrying `sharding`."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
