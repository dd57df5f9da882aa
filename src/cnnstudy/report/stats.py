"""Statistics over seeds: mean ± sample std, Welch's t-test (the statistics rule of docs/studies.md), and the
probes' numbers per group (LandscapeProbe's, and LayerStats' per layer)."""

import math
import re
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


# Per layer, from LayerStats' scalars: the first probed step's value and the largest over the probed steps.
LAYER_COLUMNS = ("grad norm, first", "grad norm, max", "act std, first", "act std, max")


@dataclass
class LayerRow:
    label: str  # the group's
    layer: str  # the module's name in the model (features.0.0: the first conv)
    n: int  # probed jobs, completed or diverged (a net that blows up diverges: its steps are the answer)
    steps: int  # probed training steps of the group's first probed job
    stats: dict[str, Summary | None]  # LAYER_COLUMNS -> mean ± std over the jobs


def natural(name: str) -> list:
    """features.2.0 before features.10.0: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def layer_summary(series: dict[int, float]) -> tuple[float, float]:
    """A scalar's value at its first probed step and its largest value (NaN steps left out, inf kept)."""
    values = [series[step] for step in sorted(series) if not math.isnan(series[step])]
    return (values[0], max(values)) if values else (math.nan, math.nan)


def layer_stats(groups) -> list[LayerRow]:
    """Per group and layer: LAYER_COLUMNS over the group's completed and diverged jobs that ran LayerStats."""
    rows = []
    for g in groups:
        probed = [j.layer_stats for j in g.jobs if j.status in ("completed", "diverged") and j.layer_stats]
        layers = sorted({tag.split("/", 1)[1] for stats in probed for tag in stats}, key=natural)
        for layer in layers:
            per_job = [
                layer_summary(stats.get(f"grad_norm/{layer}", {})) + layer_summary(stats.get(f"act_std/{layer}", {}))
                for stats in probed
            ]
            columns = {
                name: summarise([job[i] for job in per_job if not math.isnan(job[i])])
                for i, name in enumerate(LAYER_COLUMNS)
            }
            steps = len(probed[0].get(f"grad_norm/{layer}", {}))
            rows.append(LayerRow(g.label, layer, len(probed), steps, columns))
    return rows
