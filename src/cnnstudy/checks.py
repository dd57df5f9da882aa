"""Every range check of a config value: those of cnnstudy's own components (models, data, probes), which
their constructors call, and `config` for the values torch and Lightning take unchecked. A value out of range
stops the run with one line naming the config key before anything trains, instead of training with it
(a negative dropout used to mean "no dropout", a zero-width layer a model that learns nothing)."""

from omegaconf import OmegaConf

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


def numbers(key: str, values, low: float, high: float | None = None, low_allowed: bool = True) -> list[float]:
    """One number or more, each above `low` (or equal to it, with `low_allowed`) and at most `high`."""

    def fits(value) -> bool:
        return is_number(value) and (value > low or (low_allowed and value == low)) and (high is None or value <= high)

    if not values or not all(fits(v) for v in values):
        bounds = f"{'>=' if low_allowed else '>'} {low}" + ("" if high is None else f" and <= {high}")
        raise UserError(f"{key}={list(values)!r} must hold numbers {bounds}")
    return list(values)


def probability(key: str, value, one_allowed: bool = False) -> float:
    """A dropout rate or a probability: [0, 1) (a dropout of 1 zeroes everything), or [0, 1]."""
    if not is_number(value) or not (0 <= value < 1 or (one_allowed and value == 1)):
        raise UserError(f"{key}={value!r} must be a number in [0, 1{']' if one_allowed else ')'}")
    return value


def positive(key: str, value, zero_allowed: bool = False) -> float:
    if not is_number(value) or not (value > 0 or (zero_allowed and value == 0)):
        raise UserError(f"{key}={value!r} must be {'a number >= 0' if zero_allowed else 'a positive number'}")
    return value


def flag(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{key}={value!r} must be true or false")
    return value


# Values torch and Lightning take unchecked, then fail on once training runs (a scheduler's step_size=0 divides
# by zero) or train with (a negative lr or gamma).
CONFIG_KEYS = {
    "optim.lr": positive,
    "trainer.max_epochs": whole,
    "scheduler.step_size": whole,
    "scheduler.T_max": whole,
    "scheduler.gamma": positive,
    "scheduler.max_lr": positive,
}
UNSET = object()


def config(cfg) -> None:
    """Each key of CONFIG_KEYS that `cfg` sets, in its range."""
    for key, check in CONFIG_KEYS.items():
        value = OmegaConf.select(cfg, key, default=UNSET, throw_on_resolution_failure=False)
        if value is not UNSET:
            check(key, value)
