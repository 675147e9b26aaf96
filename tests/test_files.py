"""jwsol.files.write_atomic: whole files or the old ones, never a half or a stray temporary."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from jwsol.files import write_atomic


def test_writes_bytes_and_callables_into_new_folders(tmp_path):
    path = tmp_path / "a" / "b" / "x.bin"
    write_atomic(str(path), b"first")
    assert path.read_bytes() == b"first"
    write_atomic(str(path), lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["x.bin"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "x.bin"
    write_atomic(str(path), b"old")

    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(str(path), fail)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.bin"]


def test_concurrent_writers_of_one_file_leave_one_whole_file(tmp_path):
    path = str(tmp_path / "x.bin")
    payloads = [bytes([k]) * 1_000_000 for k in range(8)]
    threads = [threading.Thread(target=write_atomic, args=(path, p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(path, "rb") as f:
        assert f.read() in payloads
    assert os.listdir(tmp_path) == ["x.bin"]
