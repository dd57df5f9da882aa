"""Errors a user can fix by changing the command or the data: the entry points print them as one line."""


class UserError(Exception):
    """Bad input: the message says what is wrong and what would be right."""


def find_user_error(error: BaseException) -> UserError | None:
    """The UserError behind `error`, if any (Hydra's instantiate wraps what constructors raise)."""
    while error is not None:
        if isinstance(error, UserError):
            return error
        error = error.__cause__
    return None
