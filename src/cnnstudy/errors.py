"""The errors cnnstudy's commands answer in one line on stderr (`fail`), and their exit statuses:

    0        done
    1        the command was right but did not finish: files that cannot be written (StorageError), SLURM jobs
             that ended without a result or a submission sbatch refused; a bug's traceback is 1 too (Python's)
    2        a mistake the user can fix in the command, config or data (UserError, an override Hydra refuses,
             a SLURM request no node can run): `exit_on_user_error` turns a UserError into this
    128 + N  stopped by signal N (SIGTERM: 143); running the same command again resumes

HYDRA_FULL_ERROR=1 shows a UserError's traceback instead."""

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
    """One line on stderr, and exit with `status` (the module docstring lists them)."""
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
