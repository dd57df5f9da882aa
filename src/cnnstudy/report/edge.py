"""The largest trainable lr as an estimate with an interval (method and assumptions: docs/studies.md).

The *edge* of an lr series is where the fraction of seeds that still train crosses 50 %: linear in
log10 lr between the largest grid lr with a fraction >= 50 % and the next one up. If the largest grid
lr is >= 50 % the edge is above the grid; if no lr is, below it (stated, not a number). The 95 %
interval is the percentile interval over bootstrap resamples of the seeds within each lr.
"""

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
RNG_SEED = 0  # the report is repeatable


@dataclass
class Edge:
    log_lr: float  # log10 of the edge; +inf above the grid, -inf below it
    interval: tuple[float, float]  # 95 % percentile interval of log_lr over the resamples
    grid: tuple[float, float]  # the series' lowest and highest lr
    bracket: tuple[float, float] | None  # the grid lrs the edge lies between; None beyond the grid
    resamples: np.ndarray  # log_lr per resample, for the ratio of two series


@dataclass
class EdgeRatio:
    log_ratio: float  # log10 (BN edge / no-BN edge); ±inf when one edge is beyond its grid, nan when both
    interval: tuple[float, float]
    undefined: int  # resamples in which both edges were beyond their grids (left out of the interval)


def crossing(log_lrs: np.ndarray, fractions: np.ndarray) -> float:
    """log10 lr where the fraction that trains crosses 50 %, going up from the largest lr at >= 50 %."""
    at_least_half = np.flatnonzero(fractions >= 0.5)
    if not len(at_least_half):
        return -math.inf
    i = at_least_half[-1]
    if i == len(fractions) - 1:
        return math.inf
    f1, f2 = fractions[i], fractions[i + 1]
    return float(log_lrs[i] + (f1 - 0.5) / (f1 - f2) * (log_lrs[i + 1] - log_lrs[i]))


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """The 2.5 and 97.5 % points, each an actual resample (no interpolation across ±inf)."""
    low, high = np.quantile(values, [0.025, 0.975], method="inverted_cdf")
    return float(low), float(high)


def estimate_edge(lrs: list[float], trained: list[int], decided: list[int], rng: np.random.Generator) -> Edge | None:
    """The edge from the seeds that train out of those decided at each lr (lrs ascending); None under 2 lrs."""
    points = [(lr, k, n) for lr, k, n in zip(lrs, trained, decided, strict=True) if n]
    if len(points) < 2:
        return None
    log_lrs = np.log10([lr for lr, _, _ in points])
    k, n = np.array([p[1] for p in points]), np.array([p[2] for p in points])
    # resampling n seeds with replacement at an lr where k of n trained: k* ~ Binomial(n, k/n)
    fractions = rng.binomial(n, k / n, size=(RESAMPLES, len(n))) / n
    resamples = np.array([crossing(log_lrs, f) for f in fractions])
    grid = (points[0][0], points[-1][0])
    log_lr = crossing(log_lrs, k / n)
    below = [lr for lr, _, _ in points if math.isfinite(log_lr) and math.log10(lr) <= log_lr]
    bracket = (below[-1], points[len(below)][0]) if below else None
    return Edge(log_lr, percentile_interval(resamples), grid, bracket, resamples)


def fine_pass(edge: Edge | None) -> str:
    """Where to run more seeds next (the coarse-then-fine pattern, docs/studies.md): quarter-decade lrs inside
    the bracket (its geometric middle if it is a quarter decade or less), or the grid extended a decade."""
    if edge is None:
        return "–"
    if edge.bracket is None:
        end = edge.grid[1] if edge.log_lr > 0 else edge.grid[0]
        factors = (10**0.5, 10) if edge.log_lr > 0 else (10**-0.5, 0.1)
        return "extend: optim.lr=" + ",".join(f"{end * f:.3g}" for f in factors)
    low, high = np.log10(edge.bracket)
    quarters = [k / 4 for k in range(math.ceil(low * 4), math.floor(high * 4) + 1) if low + 1e-6 < k / 4 < high - 1e-6]
    inside = ",".join(f"{10**q:.3g}" for q in quarters or [(low + high) / 2])
    return f"optim.lr={inside}; more seeds at {edge.bracket[0]:.3g}, {edge.bracket[1]:.3g}"


def edge_ratio(with_bn: Edge, without_bn: Edge) -> EdgeRatio:
    """BN edge over no-BN edge, in log10, with the two series resampled together (independent draws)."""
    with np.errstate(invalid="ignore"):
        point = with_bn.log_lr - without_bn.log_lr
        ratios = with_bn.resamples - without_bn.resamples
    defined = ratios[~np.isnan(ratios)]
    interval = percentile_interval(defined) if len(defined) else (math.nan, math.nan)
    return EdgeRatio(float(point), interval, int(len(ratios) - len(defined)))


def lr_text(log_lr: float, grid: tuple[float, float]) -> str:
    """An lr, or the bound where it is beyond the grid."""
    if log_lr == math.inf:
        return f"> {grid[1]:g}"
    if log_lr == -math.inf:
        return f"< {grid[0]:g}"
    return f"{10**log_lr:.3g}"


def edge_text(edge: Edge | None) -> tuple[str, str]:
    """The edge and its 95 % interval as the report prints them."""
    if edge is None:
        return "–", "–"
    beyond = {math.inf: "above the grid: ", -math.inf: "below the grid: "}.get(edge.log_lr, "")
    low, high = (lr_text(end, edge.grid) for end in edge.interval)
    return beyond + lr_text(edge.log_lr, edge.grid), f"[{low}, {high}]"


def ratio_text(with_bn: Edge | None, without_bn: Edge | None) -> str:
    """The edge ratio: a number, a bound where an edge is beyond its grid (taken at the grid's end), and
    its interval (0 and ∞ where resamples went beyond the grids)."""
    if with_bn is None or without_bn is None:
        return "–"
    ends = []
    for edge, sign in ((with_bn, 1), (without_bn, -1)):
        beyond = 0 if math.isfinite(edge.log_lr) else sign * (1 if edge.log_lr > 0 else -1)
        end = edge.log_lr if not beyond else math.log10(edge.grid[1] if edge.log_lr > 0 else edge.grid[0])
        ends.append((end, beyond))
    directions = {beyond for _, beyond in ends} - {0}
    if len(directions) > 1:
        return "undefined (both edges beyond their grids)"
    prefix = {1: "> ", -1: "< "}.get(next(iter(directions), 0), "")
    ratio = edge_ratio(with_bn, without_bn)
    low, high = ("0" if x == -math.inf else "∞" if x == math.inf else f"{10**x:.3g}" for x in ratio.interval)
    left_out = f"; {ratio.undefined} of {RESAMPLES} resamples undefined" if ratio.undefined else ""
    return f"{prefix}{10 ** (ends[0][0] - ends[1][0]):.3g}× [{low}, {high}{left_out}]"
