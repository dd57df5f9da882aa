"""Claims as data: what a study tests, declared in `conf/claims/<study>.yaml`, and the verdict the rule gives.

Each claim names the groups it compares by config values (`{model.norm: bn, optim.lr: 0.01}`; Hydra choices
such as `arm/norm_batch_size: b2` work too) and one test from a small vocabulary:

- `difference`: the metric of a minus b, Welch's two-sided t-test, the effect with its 95 % t-interval;
- `equivalence`: |a - b| < margin, two one-sided Welch tests (TOST), the effect with its 90 % interval (the
  interval TOST's two 5 % tests correspond to);
- `value`: a number the source reports, TOST of our seeds' mean against it within ±margin;
- `trend`: the metric against a setting (`over`, log2 of it with `scale: log2`), the least-squares slope and
  its 95 % interval;
- `best_lr`: two lr series, each at its own best lr (chosen on validation), Welch on test accuracy;
- `edge_ratio`: two lr series' 50 % edges (docs/studies.md), their ratio a over b with its bootstrap interval
  and a bootstrap p; printed again at each `sensitivity` threshold of "still trains".

The verdict the rule gives (the family's correction, the verdict's words, the seeds that would resolve a claim)
is cnnstudy.report.verdicts.
"""

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy import stats as scipy_stats
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttost_ind

from cnnstudy.config import CONF_DIR
from cnnstudy.errors import UserError
from cnnstudy.report.compare import LrSeries, lr_series
from cnnstudy.report.edge import RESAMPLES, edge_ratio, lr_text
from cnnstudy.report.groups import Group, override_key
from cnnstudy.report.probe_sections.landscape import landscape_of, landscape_summary

CLAIMS_DIR = CONF_DIR / "claims"
TESTS = ("difference", "equivalence", "value", "trend", "best_lr", "edge_ratio")
EXPECT = ("greater", "less", "equivalent", "increasing", "decreasing")


@dataclass
class Claim:
    name: str
    says: str  # the claim in words, as the source makes it (or the question the study asks)
    test: str  # one of TESTS
    a: dict = field(default_factory=dict)  # selects a group (or an lr series for best_lr / edge_ratio)
    b: dict = field(default_factory=dict)
    metric: str = "test_acc"
    expect: str | None = None  # what the source claims: one of EXPECT; None for a question without a side
    margin: float | None = None  # equivalence and value: in the metric's units (accuracy: 0.005 = 0.5 points)
    value: float | None = None  # value: the source's number
    over: str | None = None  # trend: the config key on the x axis
    scale: str = "linear"  # trend: linear or log2 in `over`
    sensitivity: list[float] = field(default_factory=list)  # edge_ratio: other "still trains" thresholds


@dataclass
class ClaimSet:
    path: Path
    source: str
    claims: list[Claim]
    trains_above: float | None = None  # the "still trains" threshold of the study's lr series
    correction: str = "holm"
    alpha: float = 0.05


@dataclass
class Verdict:
    claim: Claim
    n: tuple[int, ...]  # seeds per side (one side for value and trend: all seeds)
    effect: float | None = None  # in the metric's units (a ratio for edge_ratio)
    interval: tuple[float, float] | None = None
    level: int = 95  # of the interval
    p: float | None = None
    p_adjusted: float | None = None
    words: str = ""  # the verdict, by the rule
    outcome: str = ""  # the source's claim: reproduced / contradicted / not resolved
    detail: str = ""  # what was compared (the groups' labels, the lrs chosen)
    seeds_needed: str = ""  # for an unresolved claim
    commands: list[str] = field(default_factory=list)  # that add those seeds
    sensitivity: list[tuple[float, str, int]] = field(default_factory=list)  # edge_ratio: threshold, ratio, side
    sides: tuple[Group, ...] = ()  # the groups compared
    missing: str = ""  # why the claim has no verdict in these records
    beyond: bool = False  # an equivalence whose estimate is beyond its margin: tested for a difference larger than m

    @property
    def p_floor(self) -> float:
        """The smallest p its test can give: a bootstrap's 1 / resamples (and Holm's multiple of it)."""
        return 1 / RESAMPLES if self.claim.test == "edge_ratio" else 0.0


def load_claims(path: Path) -> ClaimSet:
    """A claims file, checked: an unknown test, key or expectation is a UserError naming it."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"claims file {path}: {e}") from None
    claims = []
    for i, entry in enumerate(data.get("claims") or []):
        where = f"claims file {path}: claim {entry.get('name', i + 1)}"
        try:
            claim = Claim(**entry)
        except TypeError as e:
            raise UserError(f"{where}: {e}") from None
        if claim.test not in TESTS:
            raise UserError(f"{where}: test {claim.test!r} is not one of {', '.join(TESTS)}")
        if claim.expect not in (*EXPECT, None):
            raise UserError(f"{where}: expect {claim.expect!r} is not one of {', '.join(EXPECT)}")
        if claim.test in ("equivalence", "value") and not claim.margin:
            raise UserError(f"{where}: {claim.test} needs a margin")
        if claim.test == "trend" and not claim.over:
            raise UserError(f"{where}: trend needs `over`, the setting on the x axis")
        claims.append(claim)
    extra = set(data) - {"source", "claims", "trains_above", "correction", "alpha"}
    if extra:
        raise UserError(f"claims file {path}: unknown key(s) {', '.join(sorted(extra))}")
    keys = {k: data[k] for k in ("trains_above", "correction", "alpha") if k in data}
    return ClaimSet(Path(path), data.get("source", ""), claims, **keys)


def claims_for(groups: list[Group], folder: Path) -> Path | None:
    """conf/claims/<folder name>.yaml (an archive, docs/results/<study>), else conf/claims/<experiment>.yaml for the
    experiment most of the jobs were composed from (a sweep folder, multirun/<study>/<time>), if there is one."""
    experiments = [e for g in groups for j in g.jobs if (e := (j.metrics.get("choices") or {}).get("experiment"))]
    names = [Path(folder).name] + ([max(set(experiments), key=experiments.count)] if experiments else [])
    return next((path for name in names if (path := CLAIMS_DIR / f"{name}.yaml").exists()), None)


class NotInRecords(Exception):
    """A claim's group is not among these records (a slice of a study, reported on its own): no verdict."""


def values_of(group: Group) -> dict:
    """What a selector matches: the flat resolved config, the Hydra choices, and the overrides."""
    overrides = {override_key(o): o.partition("=")[2] for o in group.overrides}
    return {**overrides, **(group.choices or {}), **(group.setup or {})}


def same(wanted, value) -> bool:
    if isinstance(wanted, bool) or isinstance(value, bool):
        return wanted == value
    try:
        return math.isclose(float(wanted), float(value), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(wanted) == str(value)


def matches(group: Group, selector: dict) -> bool:
    values = values_of(group)
    return all(key in values and same(wanted, values[key]) for key, wanted in selector.items())


def the_one(found: list, selector: dict, claim: Claim, what: str, whats: str):
    """The one group (or lr series) a selector picks: none is a claim these records cannot test, several a
    selector too loose to mean anything."""
    if not found:
        raise NotInRecords(f"no {what} has {selector}")
    if len(found) != 1:
        labels = "; ".join(f"`{item.label}`" for item in found)
        raise UserError(f"claim {claim.name}: {selector} matches {len(found)} {whats} ({labels}), not one")
    return found[0]


def select(groups: list[Group], selector: dict, claim: Claim) -> Group:
    return the_one([g for g in groups if matches(g, selector)], selector, claim, "group", "groups")


def select_series(series: list[LrSeries], selector: dict, claim: Claim) -> LrSeries:
    found = [s for s in series if all(matches(p.group, selector) for p in s.points)]
    return the_one(found, selector, claim, "lr series", "lr series")


def metric_values(group: Group, metric: str) -> list[float]:
    """The metric over the group's completed seeds: a report column, a metrics.json number, or a landscape
    probe's per-job average (`landscape:β-smoothness`)."""
    if metric.startswith("landscape:"):
        name = metric.split(":", 1)[1]
        per_job = [landscape_summary(landscape_of(j)) for j in group.completed if landscape_of(j)]
        return [s[name] for s in per_job if name in s]
    if metric in group.stats:
        return group.stats[metric].values if group.stats[metric] else []
    return [float(j.metrics[metric]) for j in group.completed if isinstance(j.metrics.get(metric), int | float)]


def spread(values: list[float]) -> bool:
    return len(values) > 1 and max(values) > min(values)


def welch_test(x: list[float], y: list[float]) -> tuple[float | None, float, tuple | None]:
    """Welch's two-sided p, the difference of means and its 95 % interval; no p without two seeds a side."""
    effect = statistics.fmean(x) - statistics.fmean(y)
    if len(x) < 2 or len(y) < 2 or not (spread(x) or spread(y)):
        return None, effect, None
    compare = CompareMeans(DescrStatsW(np.array(x)), DescrStatsW(np.array(y)))
    p = float(scipy_stats.ttest_ind(x, y, equal_var=False).pvalue)
    return p, effect, tuple(float(v) for v in compare.tconfint_diff(alpha=0.05, usevar="unequal"))


def two_groups(claim: Claim, groups: list[Group], verdict: Verdict) -> tuple[list[float], list[float]]:
    a, b = select(groups, claim.a, claim), select(groups, claim.b, claim)
    x, y = metric_values(a, claim.metric), metric_values(b, claim.metric)
    verdict.n, verdict.detail, verdict.sides = (len(x), len(y)), f"`{a.label}` vs `{b.label}`", (a, b)
    return x, y


def difference(claim: Claim, groups: list[Group], verdict: Verdict) -> None:
    verdict.p, verdict.effect, verdict.interval = welch_test(*two_groups(claim, groups, verdict))


def equivalence(claim: Claim, groups: list[Group], verdict: Verdict) -> None:
    x, y = (np.array(v) for v in two_groups(claim, groups, verdict))
    verdict.effect, verdict.level = float(x.mean() - y.mean()), 90
    if len(x) > 1 and len(y) > 1 and (spread(list(x)) or spread(list(y))):
        compare = CompareMeans(DescrStatsW(x), DescrStatsW(y))
        if abs(verdict.effect) <= claim.margin:
            verdict.p = float(ttost_ind(x, y, -claim.margin, claim.margin, usevar="unequal")[0])
        else:  # beyond the margin: is it further than m? One-sided, doubled for the side picked after looking
            side, bound = ("larger", claim.margin) if verdict.effect > 0 else ("smaller", -claim.margin)
            one_sided = compare.ttest_ind(alternative=side, usevar="unequal", value=bound)[1]
            verdict.p, verdict.beyond = float(min(1.0, 2 * one_sided)), True
        verdict.interval = tuple(float(v) for v in compare.tconfint_diff(alpha=0.10, usevar="unequal"))


def value(claim: Claim, groups: list[Group], verdict: Verdict) -> None:
    group = select(groups, claim.a, claim)
    x = np.array(metric_values(group, claim.metric))
    verdict.n, verdict.level, verdict.sides = (len(x),), 90, (group,)
    verdict.detail = f"`{group.label}` vs the source's {claim.value:g}"
    verdict.effect = float(x.mean() - claim.value)
    if spread(list(x)):
        stats = DescrStatsW(x)
        if abs(verdict.effect) <= claim.margin:
            verdict.p = float(stats.ttost_mean(claim.value - claim.margin, claim.value + claim.margin)[0])
        else:  # beyond the margin: one-sided against the nearer bound, doubled (the side picked after looking)
            side, bound = ("larger", claim.margin) if verdict.effect > 0 else ("smaller", -claim.margin)
            one_sided = stats.ttest_mean(claim.value + bound, alternative=side)[1]
            verdict.p, verdict.beyond = float(min(1.0, 2 * one_sided)), True
        verdict.interval = tuple(float(v) - claim.value for v in stats.tconfint_mean(alpha=0.10))


def trend(claim: Claim, groups: list[Group], verdict: Verdict) -> None:
    points = [
        (float(values_of(g)[claim.over]), v)
        for g in groups
        if matches(g, claim.a) and claim.over in values_of(g)
        for v in metric_values(g, claim.metric)
    ]
    levels = sorted({x for x, _ in points})
    verdict.n, verdict.detail = (len(points),), f"{claim.a} over {claim.over} = {', '.join(f'{x:g}' for x in levels)}"
    if len(levels) < 2:
        raise UserError(f"claim {claim.name}: {claim.a} has fewer than two levels of {claim.over}")
    xs = np.array([x for x, _ in points])
    xs = np.log2(xs) if claim.scale == "log2" else xs
    fit = scipy_stats.linregress(xs, [v for _, v in points])
    half = scipy_stats.t.ppf(0.975, len(points) - 2) * fit.stderr
    verdict.effect, verdict.p = float(fit.slope), float(fit.pvalue)
    verdict.interval = (float(fit.slope - half), float(fit.slope + half))


def best_lr(claim: Claim, series: list[LrSeries], verdict: Verdict) -> None:
    a, b = select_series(series, claim.a, claim), select_series(series, claim.b, claim)
    best_a, best_b = a.best, b.best
    if best_a is None or best_b is None:
        raise UserError(f"claim {claim.name}: a series has no lr at which every seed completed")
    x, y = metric_values(best_a.group, claim.metric), metric_values(best_b.group, claim.metric)
    verdict.n, verdict.sides = (len(x), len(y)), (best_a.group, best_b.group)
    verdict.detail = f"`{a.label}` at its best lr {best_in(a)} vs `{b.label}` at {best_in(b)}"
    verdict.p, verdict.effect, verdict.interval = welch_test(x, y)


def best_in(series: LrSeries) -> str:
    """A series' best lr, saying so when it is an end of the grid (a better lr may lie beyond it)."""
    lrs = [p.lr for p in series.points]
    end = (
        " (the grid's largest)"
        if series.best.lr == max(lrs)
        else " (the grid's smallest)"
        if series.best.lr == min(lrs)
        else ""
    )
    return f"{series.best.lr:g}{end}"


def ratio_at(claim: Claim, series: list[LrSeries]) -> tuple[float, tuple, float | None, tuple[int, int], str]:
    """The edge ratio a over b, its 95 % interval, a bootstrap p (two-sided, against a ratio of 1), the seeds
    decided per side and what was compared."""
    a, b = select_series(series, claim.a, claim), select_series(series, claim.b, claim)
    if a.edge is None or b.edge is None:
        raise UserError(f"claim {claim.name}: a series has fewer than two decided lrs")
    ratio = edge_ratio(a.edge, b.edge)
    resamples = a.edge.resamples - b.edge.resamples
    defined = resamples[~np.isnan(resamples)]
    p = None
    if len(defined):
        tail = min(np.mean(defined <= 0), np.mean(defined >= 0))
        p = float(min(1.0, max(2 * tail, 1 / RESAMPLES)))
    n = tuple(sum(pt.decided for pt in s.points) for s in (a, b))
    edges = f"edges {lr_text(a.edge.log_lr, a.edge.grid)} vs {lr_text(b.edge.log_lr, b.edge.grid)}"
    return ratio.log_ratio, ratio.interval, p, n, f"`{a.label}` vs `{b.label}`: {edges}"


def ratio_words(log_ratio: float, interval: tuple) -> str:
    """The ratio and its interval in words: > 1 resolved only when the whole interval is."""

    def number(log: float) -> str:
        return f"{10**log:.3g}" if math.isfinite(log) else ("0" if log < 0 else "∞")

    if not any(math.isfinite(x) for x in (log_ratio, *interval)):
        return f"{number(log_ratio)}× (an edge beyond its grid in every resample: unbounded)"
    return f"{number(log_ratio)}× [{number(interval[0])}, {number(interval[1])}]"


def edge(claim: Claim, groups: list[Group], common: set[str], threshold: float, verdict: Verdict) -> None:
    log_ratio, interval, verdict.p, verdict.n, verdict.detail = ratio_at(claim, lr_series(groups, common, threshold))
    verdict.effect, verdict.interval = log_ratio, interval
    for other in claim.sensitivity:
        log_other, interval_other, p, _, _ = ratio_at(claim, lr_series(groups, common, other))
        verdict.sensitivity.append((other, ratio_words(log_other, interval_other), resolved_side(interval_other, 0)))


def resolved_side(interval: tuple | None, null: float) -> int:
    """+1 when the whole interval lies above the null, -1 below, 0 when it holds it."""
    if interval is None:
        return 0
    return 1 if interval[0] > null else -1 if interval[1] < null else 0
