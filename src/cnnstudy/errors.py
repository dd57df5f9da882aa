"""Errors a user can fix by changing the command or the data: the entry points print them as one line."""


class UserError(Exception):
    """Bad input: the message says what is wrong and what would be right."""
