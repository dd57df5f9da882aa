"""Statistics over seeds: mean ± sample std, and the LandscapeProbe's numbers per group."""

import statistics
from dataclasses import dataclass

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
