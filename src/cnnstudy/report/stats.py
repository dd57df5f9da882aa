"""Statistics over seeds: mean ± sample std, Welch's t-test (the statistics rule of docs/studies.md), and the
LandscapeProbe's numbers per group."""

import statistics
from dataclasses import dataclass

from scipy import stats as scipy_stats

LANDSCAPE_COLUMNS = ("loss range", "max gradient change", "β-smoothness", "gradient norm")


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


def landscape_summary(landscape: dict[str, dict[int, float]]) -> dict[str, float]:
    """One job's landscape numbers, each averaged over its probed steps (a column of the report's table)."""
    loss_max, loss_min = landscape.get("landscape/loss_max", {}), landscape.get("landscape/loss_min", {})
    per_step = {
        "loss range": [loss_max[s] - loss_min[s] for s in loss_max.keys() & loss_min.keys()],
        "max gradient change": list(landscape.get("landscape/grad_change_max", {}).values()),
        "β-smoothness": list(landscape.get("landscape/beta_smoothness", {}).values()),
        "gradient norm": list(landscape.get("landscape/grad_norm", {}).values()),
    }
    return {name: statistics.fmean(values) for name, values in per_step.items() if values}


@dataclass
class LandscapeRow:
    label: str
    n: int  # probed seeds
    steps: int  # probed training steps per job
    stats: dict[str, Summary | None]  # LANDSCAPE_COLUMNS -> mean ± std over seeds


def landscape_stats(groups) -> list[LandscapeRow]:
    """Per group with probed jobs: landscape_summary's numbers, mean ± std over the group's seeds."""
    rows = []
    for g in groups:
        probed = [j for j in g.completed if j.landscape]
        if probed:
            per_job = [landscape_summary(j.landscape) for j in probed]
            stats = {name: summarise([job[name] for job in per_job if name in job]) for name in LANDSCAPE_COLUMNS}
            rows.append(LandscapeRow(g.label, len(per_job), len(probed[0].landscape["landscape/loss_max"]), stats))
    return rows
