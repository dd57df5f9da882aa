"""Errors a user can fix by changing the command or the data: every entry point prints them as one line
on stderr and exits with status 2 (`exit_on_user_error`). HYDRA_FULL_ERROR=1 shows the traceback instead."""

import errno
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input: the message says what is wrong and what would be right."""


class StorageError(Exception):
    """A run's files could not be written: no space, no permission, a read-only file system."""

    @classmethod
    def of(cls, path, error: BaseException) -> "StorageError":
        cause = os.strerror(error.errno) if isinstance(error, OSError) and error.errno else str(error)
        if not isinstance(error, OSError) and no_space_left(path):
            cause = os.strerror(errno.ENOSPC)  # torch.save says only "file write failed"
        return cls(f"cannot write {path}: {cause}")


class Interrupted(Exception):
    """The run was stopped by a signal (SIGTERM, SIGINT) at a safe point: its last checkpoint is intact."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def no_space_left(path, margin: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < margin
    except OSError:
        return False


def find_user_error(error: BaseException) -> UserError | None:
    """The UserError behind `error`, if any (Hydra's instantiate wraps what constructors raise)."""
    while error is not None:
        if isinstance(error, UserError):
            return error
        error = error.__cause__
    return None


def fail(message: str, status: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a UserError raised inside (however wrapped) into one stderr line and exit status 2."""
    try:
        yield
    except Exception as e:
        error = find_user_error(e)
        if error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(str(error))
