"""Errors a user can fix by changing the command or the data: every entry point prints them as one line
on stderr and exits with status 2 (`exit_on_user_error`). HYDRA_FULL_ERROR=1 shows the traceback instead."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input: the message says what is wrong and what would be right."""


def find_user_error(error: BaseException) -> UserError | None:
    """The UserError behind `error`, if any (Hydra's instantiate wraps what constructors raise)."""
    while error is not None:
        if isinstance(error, UserError):
            return error
        error = error.__cause__
    return None


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


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
