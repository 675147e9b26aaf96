"""One writer per workdir: an exclusive `fcntl.flock` on `DIR/.lock`.

The kernel drops a flock when its holder exits, however it exits (kill -9 included), so a
stale lock file never blocks the next run; the file only records the holder's pid for the
message a second writer gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator

from jwsol.errors import UserError

LOCK_NAME = ".lock"


def prepare_workdir(workdir: str) -> None:
    """Creates `workdir` if needed; a one-line `UserError` if it is a file or not writable."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir {workdir} is a file, not a folder; pass a folder path.")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create --workdir {workdir} ({e.strerror}); pass a folder you can write to."
        ) from e
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise UserError(f"--workdir {workdir} is not writable; pass a folder you can write to.")


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
    """Holds the workdir's lock for the block; a `UserError` naming the holder if it is taken."""
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"--workdir {workdir} is in use by another run ({_holder(path)}); wait for it "
                f"to end or stop it, or pass another --workdir."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock
