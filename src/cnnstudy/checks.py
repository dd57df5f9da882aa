"""Range checks for the options of cnnstudy's own components (models, data, probes): a value out of range
stops the run with one line naming the config key before anything trains, instead of training with it
(a negative dropout used to mean "no dropout", a zero-width layer a model that learns nothing)."""

from cnnstudy.errors import UserError


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def whole(key: str, value, at_least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < at_least:
        kind = "a positive whole number" if at_least == 1 else f"a whole number >= {at_least}"
        raise UserError(f"{key}={value!r} must be {kind}")
    return value


def whole_list(key: str, values, at_least: int = 1) -> list[int]:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < at_least:
            raise UserError(f"{key}={list(values)!r} must hold whole numbers >= {at_least}")
    return list(values)


def probability(key: str, value, one_allowed: bool = False) -> float:
    """A dropout rate or a probability: [0, 1) (a dropout of 1 zeroes everything), or [0, 1]."""
    if not is_number(value) or not (0 <= value < 1 or (one_allowed and value == 1)):
        raise UserError(f"{key}={value!r} must be a number in [0, 1{']' if one_allowed else ')'}")
    return value


def positive(key: str, value, zero_allowed: bool = False) -> float:
    if not is_number(value) or not (value > 0 or (zero_allowed and value == 0)):
        raise UserError(f"{key}={value!r} must be a number {'>=' if zero_allowed else '>'} 0")
    return value


def flag(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{key}={value!r} must be true or false")
    return value
