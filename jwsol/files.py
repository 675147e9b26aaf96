"""Files written whole or not at all: readers, a kill, a full disk and a second process writing
the same file see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO


def write_atomic(path: str, payload: bytes | Callable[[BinaryIO], None]) -> None:
    """Writes `payload` (bytes, or a function writing to a binary file) to `path`.

    Through a uniquely named temporary file beside it, then a rename; the temporary file is
    removed when writing fails (e.g. the disk is full), and `path` keeps its old content.
    """
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the user's group
        with os.fdopen(fd, "wb") as f:
            if callable(payload):
                payload(f)
            else:
                f.write(payload)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
