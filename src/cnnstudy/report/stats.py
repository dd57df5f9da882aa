"""Statistics over seeds: mean ± sample std, Welch's t-test (the statistics rule of docs/studies.md)."""

import statistics
from dataclasses import dataclass

from scipy import stats as scipy_stats


@dataclass
class Summary:
    mean: float
    std: float | None  # sample std (ddof=1); None for one value
    values: list[float]


def summarise(values: list[float]) -> Summary | None:
    if not values:
        return None
    return Summary(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, values)


# Statistics rule: "better" or "worse" only when Welch's two-sided p is below this.
ALPHA = 0.05


@dataclass
class Welch:
    """Welch's two-sample t-test (unequal variances, two-sided) of the first sample against the second."""

    p: float | None  # None where a side has fewer than 2 values, or neither has any spread
    n: tuple[int, int]
    difference: float | None  # mean of the first minus mean of the second

    @property
    def verdict(self) -> str:
        if self.p is None or self.p >= ALPHA:
            return f"not resolved at n = {self.n[0]} vs {self.n[1]}"
        return "better" if self.difference > 0 else "worse"


def welch(first: list[float], second: list[float]) -> Welch:
    p = None
    spread = any(max(values) > min(values) for values in (first, second) if values)
    if len(first) > 1 and len(second) > 1 and spread:
        # from the summaries: statistics' exact sums give a side of equal values a std of exactly 0
        sides = [(statistics.fmean(v), statistics.stdev(v), len(v)) for v in (first, second)]
        p = float(scipy_stats.ttest_ind_from_stats(*sides[0], *sides[1], equal_var=False).pvalue)
    difference = statistics.fmean(first) - statistics.fmean(second) if first and second else None
    return Welch(p, (len(first), len(second)), difference)
