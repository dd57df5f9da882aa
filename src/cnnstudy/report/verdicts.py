"""The verdict rule: what a study's claims (cnnstudy.report.claims) say once tested, and the verdict table.

The p-values of a study's claims are one family, corrected with Holm's method by default
(statsmodels' `multipletests`); the verdict's words are fixed by the corrected p: better/worse (higher/lower for
other metrics), equivalent within ±m, increasing/decreasing, or "not resolved at n = a vs b". An unresolved
difference also gets the seeds per side that would resolve it (80 % power at the observed effect and spread,
statsmodels' `TTestIndPower`) and the command that adds them.
"""

import math
import statistics

import numpy as np
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower

from cnnstudy.report.claims import (
    Claim,
    ClaimSet,
    NotInRecords,
    Verdict,
    best_lr,
    difference,
    edge,
    equivalence,
    metric_values,
    ratio_words,
    resolved_side,
    trend,
    value,
)
from cnnstudy.report.compare import lr_series
from cnnstudy.report.groups import Group

POWER = 0.8
MAX_SEEDS = 1000  # beyond this the seeds needed are stated as a bound


def is_accuracy(metric: str) -> bool:
    return "acc" in metric


def words_for(claim: Claim, verdict: Verdict, alpha: float) -> str:
    if verdict.missing:
        return f"not in these records ({verdict.missing})"
    resolved = verdict.p_adjusted is not None and verdict.p_adjusted < alpha
    n = " vs ".join(str(k) for k in verdict.n)
    if not resolved:
        return f"not resolved at n = {n}"
    if claim.test in ("equivalence", "value"):
        if verdict.beyond:
            return f"differs by more than ±{scaled(claim.metric, claim.margin)}"
        return f"equivalent within ±{scaled(claim.metric, claim.margin)}"
    if claim.test == "trend":
        return "increasing" if verdict.effect > 0 else "decreasing"
    if claim.test == "edge_ratio":
        return "larger" if verdict.effect > 0 else "smaller"
    up = verdict.effect > 0
    if is_accuracy(claim.metric):
        return "better" if up else "worse"
    return "higher" if up else "lower"


def outcome_for(claim: Claim, words: str) -> str:
    if claim.expect is None:
        return "–"
    if words.startswith("not in these records"):
        return "–"
    if words.startswith("not resolved"):
        return "not resolved"
    agrees = {
        "greater": ("better", "higher", "larger"),
        "less": ("worse", "lower", "smaller"),
        "equivalent": ("equivalent",),  # "differs by more than ±m" contradicts it
        "increasing": ("increasing",),
        "decreasing": ("decreasing",),
    }[claim.expect]
    return "reproduced" if words.startswith(agrees) else "contradicted"


def seeds_needed(claim: Claim, verdict: Verdict, x: list[float], y: list[float], alpha: float) -> str:
    """Seeds per side at which Welch's test (TOST for equivalence) has 80 % power, if the observed means and
    spreads were the true ones, at the family's Bonferroni level (Holm's strictest step)."""
    sd = math.sqrt((statistics.variance(x) + statistics.variance(y)) / 2) if len(x) > 1 and len(y) > 1 else 0
    if not sd:
        return "–"
    if claim.test == "equivalence":
        room = claim.margin - abs(verdict.effect)
        if room <= 0:
            return "none: the observed difference is beyond the margin"
        effect, alternative = room / sd, "larger"
    else:
        effect, alternative = abs(verdict.effect) / sd, "two-sided"
    if effect == 0:
        return "–"
    try:
        n = TTestIndPower().solve_power(effect_size=effect, alpha=alpha, power=POWER, alternative=alternative)
    except (ValueError, RuntimeError):
        return f"> {MAX_SEEDS}"
    if not np.isfinite(n) or n > MAX_SEEDS:
        return f"> {MAX_SEEDS}"
    # the power is the observed effect's, while the verdict is Holm's: at least one seed more than ran
    return str(max(len(x) + 1, len(y) + 1, math.ceil(n)))


def more_seeds_commands(group: Group, needed: int, name: str) -> str:
    seeds = [s for s in group.seeds if isinstance(s, int)]
    start = max(seeds, default=-1) + 1
    if needed <= len(seeds):
        return ""
    overrides = " ".join(f"'{o}'" if "," in o else o for o in group.overrides)
    new = f"'seed=range({start},{start + needed - len(seeds)})'"  # Hydra's range sweep: start to stop - 1
    return f"python -m cnnstudy.train -m {overrides} {new} hydra.sweep.dir=multirun/seeds_{name}"


def evaluate(claim_set: ClaimSet, groups: list[Group], common: set[str], threshold: float) -> list[Verdict]:
    """Every claim's test, then the family's correction and the verdicts' words."""
    tests = {"difference": difference, "equivalence": equivalence, "value": value, "trend": trend}
    verdicts = []
    for claim in claim_set.claims:
        verdict = Verdict(claim, (0,))
        try:
            if claim.test in tests:
                tests[claim.test](claim, groups, verdict)
            elif claim.test == "best_lr":
                best_lr(claim, lr_series(groups, common, threshold), verdict)
            else:
                edge(claim, groups, common, threshold, verdict)
        except NotInRecords as missing:
            verdict.missing = str(missing)
        verdicts.append(verdict)
    tested = [v for v in verdicts if v.p is not None]
    if tested:
        adjusted = multipletests([v.p for v in tested], alpha=claim_set.alpha, method=claim_set.correction)[1]
        for v, p in zip(tested, adjusted, strict=True):
            v.p_adjusted = float(p)
    strictest = claim_set.alpha / max(len(tested), 1)
    for v in verdicts:
        v.words = words_for(v.claim, v, claim_set.alpha)
        v.outcome = outcome_for(v.claim, v.words)
        if v.words.startswith("not resolved") and v.claim.test in ("difference", "equivalence", "best_lr"):
            v.seeds_needed = seeds_needed(v.claim, v, *(metric_values(g, v.claim.metric) for g in v.sides), strictest)
            if v.seeds_needed.isdigit():
                name = v.claim.name
                v.commands = [c for g in v.sides if (c := more_seeds_commands(g, int(v.seeds_needed), name))]
    return verdicts


def scaled(metric: str, number: float) -> str:
    """A number in the metric's units as the page writes it: accuracies in points."""
    return f"{number * 100:.2f} points" if is_accuracy(metric) else f"{number:.4g}"


def effect_text(v: Verdict) -> str:
    if v.effect is None:
        return "–"
    if v.claim.test == "edge_ratio":
        return ratio_words(v.effect, v.interval)
    scale, digits = (100, 2) if is_accuracy(v.claim.metric) else (1, 4)
    per = f" per {'doubling of ' if v.claim.scale == 'log2' else ''}{v.claim.over}" if v.claim.test == "trend" else ""
    text = f"{v.effect * scale:+.{digits}f}{per}"
    if v.interval is not None:
        low, high = (x * scale for x in v.interval)
        text += f" [{v.level} %: {low:+.{digits}f}, {high:+.{digits}f}]"
    return text


def p_text(p: float | None, floor: float = 0.0) -> str:
    """A p-value; at `floor` (a bootstrap's 1 / resamples, which it cannot go below) a bound."""
    if p is None:
        return "–"
    return f"≤ {floor:g}" if p <= floor else f"{p:.2g}"


def test_name(claim: Claim) -> str:
    metric = claim.metric.replace("_", " ")
    margin = f"±{scaled(claim.metric, claim.margin)}" if claim.margin else ""
    if claim.test == "difference":
        return f"Welch, {metric}"
    if claim.test == "equivalence":
        return f"TOST {margin}, {metric}"
    if claim.test == "value":
        return f"TOST {margin} of the source's {claim.value:g}, {metric}"
    if claim.test == "trend":
        return f"slope of {metric} ({claim.scale})"
    if claim.test == "best_lr":
        return f"Welch at each best lr, {metric}"
    return "50 % edge ratio, bootstrap"


def verdict_lines(claim_set: ClaimSet, verdicts: list[Verdict], threshold: float) -> list[str]:
    """The verdict table and what stands beside it: the family, sensitivity, seeds needed."""
    tested = sum(v.p is not None for v in verdicts)
    lines = [
        f"Claims: `{claim_set.path.name}` ({claim_set.source}). Family: its {tested} tested claims, "
        f"{claim_set.correction.capitalize()}'s correction (statsmodels `multipletests`), α = {claim_set.alpha:g}; "
        "effects a − b "
        + ("(accuracy in points)" if any(is_accuracy(v.claim.metric) for v in verdicts) else "(in the metric's units)")
        + (
            f", a seed still trains at last-epoch val acc ≥ {threshold * 100:g} %."
            if any(v.claim.test in ("edge_ratio", "best_lr") for v in verdicts)
            else "."
        ),
        "",
        "| claim | test | compared | n | effect [interval] | p | p (corrected) | verdict | source's claim |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        n = " vs ".join(str(k) for k in v.n)
        row = [f"**{v.claim.name}**: {v.claim.says}", test_name(v.claim), v.detail, n, effect_text(v)]
        row += [p_text(v.p, v.p_floor), p_text(v.p_adjusted), f"**{v.words}**", v.outcome]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    for v in verdicts:
        if v.sensitivity:
            side = {1: ", larger", -1: ", smaller", 0: ""}
            at = "; ".join(f"≥ {t * 100:g} %: {text}{side[s]}" for t, text, s in v.sensitivity)
            changes = len({s for _, _, s in v.sensitivity} | {resolved_side(v.interval, 0)}) > 1
            lines += [
                "",
                f'{v.claim.name}, by the threshold of "still trains" (95 % intervals, uncorrected): {at}. '
                f"Whether the interval excludes 1 {'changes' if changes else 'does not change'} with the threshold.",
            ]
    for v in verdicts:
        if v.seeds_needed:
            needed = f"{v.claim.name}: seeds per side for 80 % power at the observed effect and spread"
            lines += ["", f"{needed} (α = {claim_set.alpha:g} / {tested}): {v.seeds_needed}."]
            lines += [f"`{c}`" for c in v.commands]
    return lines
