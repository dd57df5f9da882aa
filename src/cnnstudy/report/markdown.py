"""report.md: the tables, the comparisons with the keys that differ, what did not finish, and the plots."""

from dataclasses import dataclass, field
from pathlib import Path

from cnnstudy.report.cells import differences, fmt, md_table, p_value, pair, test_text
from cnnstudy.report.claims import ClaimSet, Verdict
from cnnstudy.report.compare import (
    NORM_KEYS,
    FactorComparison,
    GroupComparison,
    LrSeries,
    SeriesComparison,
)
from cnnstudy.report.edge import edge_text, fine_pass, ratio_text
from cnnstudy.report.groups import COLUMNS, Group, provenance_warnings, shown, sort_key
from cnnstudy.report.jobs import Job
from cnnstudy.report.probe_sections import Section
from cnnstudy.report.verdicts import verdict_lines

REPORT_FILE = "report.md"


@dataclass
class Report:
    """The numbers behind report.md."""

    dir: str
    commands: list[str]
    counts: dict[str, int]  # status -> jobs
    groups: list[Group]
    common: set[str]  # the overrides every group shares
    not_finished: list[Job]
    lr_series: list[LrSeries]
    comparisons: list[GroupComparison]
    series_comparisons: list[SeriesComparison]
    one_factor: list[FactorComparison]
    plots: list[str]
    claims: ClaimSet | None = None
    verdicts: list[Verdict] = field(default_factory=list)  # one per claim of `claims`
    trains_above: float = 0.9  # the "still trains" threshold
    report: str = ""  # the path of report.md
    probe_sections: list[Section] = field(default_factory=list)  # the probes' (cnnstudy.report.probe_sections)

    @property
    def bn_ratios(self) -> list[SeriesComparison]:
        return [c for c in self.series_comparisons if c.bn]


def header_section(r: Report) -> list[str]:
    counts = ", ".join(f"{n} {status}" for status, n in r.counts.items())
    lines = [f"# Sweep report: {r.dir}", ""]
    lines += [f"command: `{c}`  " for c in r.commands]
    lines += [f"jobs: {sum(r.counts.values())} ({counts})  "]
    if r.common:
        lines += [f"same in every group: `{' '.join(sorted(r.common, key=sort_key))}`"]
    lines += [f"\n**warning:** {warning}" for warning in provenance_warnings(r.groups)]
    return lines


def groups_section(r: Report) -> list[str]:
    lines = ["", "## Results per group", ""]
    lines += ["mean ± std over the completed seeds (sample std); n = completed seeds.", ""]
    header = ["group", "n", "params"] + [head for head, _ in COLUMNS.values()]
    rows = []
    for g in r.groups:
        params = "/".join(f"{p:,}" for p in g.params) or "–"
        rows.append([g.label, g.n, params] + [fmt(g.stats[k], pct) for k, (_, pct) in COLUMNS.items()])
    return lines + md_table(header, rows)


def comparisons_section(r: Report) -> list[str]:
    if not r.comparisons:
        return []
    lines = ["", "## BN vs no BN", ""]
    lines += [
        "Groups with BN and without, of one model family, each the other's nearest in config. A BN comparison",
        f"differs only in normalisation keys ({', '.join(NORM_KEYS)});",
        "otherwise every key that differs is named (value with BN vs without). Test accuracy: mean ± std over seeds,",
        "Welch's two-sided t-test; the verdict (with BN) is better/worse only at p < 0.05 (docs/studies.md).",
        "",
    ]
    header = ["with BN vs without", "BN comparison", "config keys that differ", "test acc % with", "test acc % without"]
    header += ["n", "Welch p", "verdict"]
    rows = (
        [pair(c), "yes" if c.bn else "no", differences(c)]
        + [fmt(g.stats["test_acc"], True) for g in (c.with_bn, c.without_bn)]
        + [f"{c.welch.n[0]} vs {c.welch.n[1]}", p_value(c.welch), c.welch.verdict]
        for c in r.comparisons
    )
    return lines + md_table(header, rows)


# The columns a one-factor comparison tests, and the words for "first higher" / "first lower" in each.
FACTOR_COLUMNS = {"test_acc": ("better", "worse"), "epoch1_train_loss": ("higher", "lower")}
FACTOR_COLUMNS |= {"last_train_loss": ("higher", "lower")}


def factor_test(c: FactorComparison, column: str) -> str:
    test = c.welch(column)
    if test.difference is None:
        return "–"
    scale, unit = (100, " points") if column == "test_acc" else (1, "")
    return test_text(test, FACTOR_COLUMNS[column], scale, unit)


def factor_keys(c: FactorComparison) -> str:
    """'model.norm: bn vs gn', or for an arm 'arm/x: b2 vs b128 (data.batch_size: 2 vs 128; optim.lr: ...)'."""
    text = f"{c.key}: {shown(c.values[0])} vs {shown(c.values[1])}"
    if not c.moved:
        return text
    first, second = c.first.setup, c.second.setup
    moved = (f"{k}: {shown(first.get(k, '–'))} vs {shown(second.get(k, '–'))}" for k in c.moved)
    return f"{text} ({'; '.join(moved)})"


def one_factor_section(r: Report) -> list[str]:
    if not r.one_factor:
        return []
    lines = ["", "## One-factor comparisons", ""]
    lines += [
        "Every two groups whose configs differ in exactly one key other than optim.lr, or only in what one arm of",
        "the study sets (the keys it moves are named): the first group minus the second, Welch's two-sided",
        "t-test over seeds; a verdict only at p < 0.05 (docs/studies.md), otherwise not resolved. Each pair is",
        "one test: read a table of many pairs with that in mind.",
        "",
    ]
    header = ["first vs second", "key: first vs second"] + [COLUMNS[k][0] for k in FACTOR_COLUMNS]
    rows = (
        [f"`{c.first.label}` vs `{c.second.label}`"] + [factor_keys(c)] + [factor_test(c, k) for k in FACTOR_COLUMNS]
        for c in r.one_factor
    )
    return lines + md_table(header, rows)


def not_finished_section(r: Report) -> list[str]:
    lines = ["", "## Not finished", ""]
    if not r.not_finished:
        return lines + ["none: every job completed."]
    rows = ([j.dir, j.status, " ".join(j.overrides), j.detail[:300]] for j in r.not_finished)
    return lines + md_table(["job", "status", "overrides", "error / diverged epoch / progress"], rows)


def largest_text(s: LrSeries) -> str:
    return "–" if s.largest_lr is None else f"{s.largest_lr:g}"


def lr_section(r: Report, threshold: float) -> list[str]:
    if not r.lr_series:
        return []
    lines = ["", "## Largest learning rate that still trains (all seeds)", ""]
    lines += [f"A seed still trains if it completed with last-epoch val acc ≥ {threshold * 100:g}%.", ""]
    rows = []
    for s in r.lr_series:
        per_lr = ", ".join(f"{p.lr:g}: {p.trained}/{p.decided}" for p in s.points)
        rows.append([s.label, largest_text(s), per_lr])
    lines += md_table(["group", "largest lr (all seeds train)", "seeds that train, per lr"], rows)
    lines += ["", "Estimated: the lr where the fraction of seeds that train crosses 50 % (log-lr interpolation),"]
    lines += ["with a 95 % bootstrap interval over seeds (docs/studies.md); the all-seeds rule beside it.", ""]
    rows = (
        [f"`{s.label}`", *edge_text(s.edge), "–" if s.largest_lr is None else f"{s.largest_lr:g}", fine_pass(s.edge)]
        for s in r.lr_series
    )
    lines += md_table(["series", "50 % edge", "95 % interval", "largest lr (all seeds train)", "fine pass"], rows)
    for c in r.series_comparisons:
        if c.bn:
            ratio = "–" if c.ratio is None else f"{c.ratio:.3g}×"
            edges = (
                "–" if None in (c.with_bn.edge, c.without_bn.edge) else ratio_text(c.with_bn.edge, c.without_bn.edge)
            )
            lines += ["", f"BN / no BN: {pair(c)}: ratio {ratio} (all seeds train); 50 % edge ratio {edges}"]
            lines += [f"(differ in {differences(c)})"]
            tests = (f"{lr:g}: {test.verdict} (p {p_value(test)})" for lr, test in c.per_lr())
            lines += ["", f"Test accuracy with BN vs without, per lr (Welch): {'; '.join(tests)}"]
            if best := c.at_best_lrs():
                bn_lr, nobn_lr, test = best
                result = test_text(test, FACTOR_COLUMNS["test_acc"], 100, " points")
                lines += ["", "At each one's best lr (highest mean best val acc, every seed completed):"]
                lines += [f"BN at {bn_lr:g} vs no BN at {nobn_lr:g}, test acc {result}"]
        else:
            lines += ["", f"Not a BN comparison: {pair(c)} differ in {differences(c)}"]
    return lines


def verdicts_section(r: Report) -> list[str]:
    if not r.claims:
        return []
    return ["", "## Verdicts", ""] + verdict_lines(r.claims, r.verdicts, r.trains_above)


def write_markdown(sweep_dir: Path, r: Report) -> str:
    threshold = r.trains_above
    lines = header_section(r) + verdicts_section(r) + groups_section(r) + comparisons_section(r) + one_factor_section(r)
    lines += not_finished_section(r)
    lines += lr_section(r, threshold)
    lines += [line for section in r.probe_sections for line in section.lines]
    if r.plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in r.plots]
    (sweep_dir / REPORT_FILE).write_text("\n".join(lines) + "\n")
    return str(sweep_dir / REPORT_FILE)
