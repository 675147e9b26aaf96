"""User-facing errors, and how every command line reports a failure: one `error:` line on stderr
(the traceback too with --verbose), exit status 2 for what the user can fix, 1 for a bug."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Callable

USER_ERROR_STATUS, BUG_STATUS = 2, 1
# Disk and permission faults are the user's to fix, wherever they surface.
_USER_ERRNOS = {
    errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOENT,
    errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
}  # fmt: skip


class UserError(Exception):
    """A problem the user can fix (bad config, missing file); the message says what to do."""


class DataError(UserError):
    """A data set or file is missing, corrupt or malformed; the message names it."""


class ConfigError(UserError):
    """A config field is unknown or has a bad value; the message names the field."""


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def describe(error: BaseException) -> tuple[str, int]:
    """The `error:` line's text for `error` and the exit status it gets."""
    if isinstance(error, UserError):
        return _one_line(str(error)), USER_ERROR_STATUS
    if isinstance(error, OSError) and error.errno in _USER_ERRNOS:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or error}{where}", USER_ERROR_STATUS
    text = _one_line(str(error))[:500]
    name = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return f"{name} (a bug: rerun with --verbose for the traceback and report it)", BUG_STATUS


def report(error: BaseException, verbose: bool) -> int:
    """Prints `error` as one `error:` line (after its traceback when `verbose`); its exit status."""
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    message, status = describe(error)
    print(f"error: {message}", file=sys.stderr, flush=True)
    return status


def run_main(body: Callable[[], object], verbose: bool) -> int:
    """Runs a command line's body: 0, or the status of its failure reported as one line."""
    try:
        body()
    except Exception as e:  # noqa: BLE001  the top level: every failure becomes one line
        return report(e, verbose)
    return 0


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_STATUS)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing (`app.run(main, flags_parser=parse_flags)`) with one-line errors for
    the usual mistakes, a `--config` file's included."""
    from absl import flags

    FLAGS = flags.FLAGS
    overrides = [a.split("=")[0][2:] for a in argv if a.startswith("--config.")]
    try:
        rest = FLAGS(argv)
        if "config" in FLAGS:
            FLAGS.config.keys()  # config files load lazily; load now to report errors here
        return rest
    except (KeyError, AttributeError) as e:
        _fail(
            f"unknown config field {str(e).strip(chr(34) + chr(39))!r} in {overrides}; the "
            f"fields are those of the config file (see its get_config)."
        )
    except OSError as e:  # the config file itself could not be read
        path = FLAGS["config"].config_filename
        reason = "no such file" if not os.path.exists(path) else str(e).splitlines()[0]
        _fail(
            f"cannot load config file {path!r} ({reason}); pass --config "
            f"configs/NAME.py[:VARIANT] with a file from configs/."
        )
    except flags.Error as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        _fail(" ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else lines[0])


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a `--verbose` switch whose usage errors are one `error:` line, status 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--verbose", action="store_true", help="print the full traceback of a failure"
        )

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)
