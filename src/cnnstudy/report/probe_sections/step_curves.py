"""Numbers against training steps from the probes TestCurve and SigmoidInputs (`probes=ioffe`): Ioffe & Szegedy
2015's figure 1 redrawn from a sweep, as step_curves.png (a: test accuracy against steps; b, c, ...: the 15th,
50th and 85th percentiles of one last-hidden-layer sigmoid's input, a panel per group) and step_curves.md (the
same numbers at the paper's x ticks, mean ± std over each group's completed seeds). A sweep without these probes
gets neither file; report.md lists the PNG."""

import statistics
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from cnnstudy.report.cells import fmt, md_table
from cnnstudy.report.groups import Group
from cnnstudy.report.plots.style import legend_outside
from cnnstudy.report.probe_sections import Section
from cnnstudy.report.stats import summarise

TEST_CURVE, SIGMOID_INPUT = "test_curve/", "sigmoid_input/"
ACCURACY = TEST_CURVE + "acc"
# The x ticks of the paper's figure 1(a): accuracies are tabled there
TABLE_STEPS = (10_000, 20_000, 30_000, 40_000, 50_000)
PNG, TABLE = "step_curves.png", "step_curves.md"


def per_step(group: Group, tag: str) -> dict[int, list[float]]:
    """step -> the tag's values over the group's completed seeds that measured it there."""
    steps: dict[int, list[float]] = {}
    for job in group.completed:
        for step, value in job.probes.get(tag, {}).items():
            steps.setdefault(step, []).append(value)
    return dict(sorted(steps.items()))


def percentile_tags(groups: list[Group]) -> list[str]:
    """SigmoidInputs' tags, lowest percentile first (sigmoid_input/p15, p50, p85)."""
    tags = {tag for g in groups for j in g.completed for tag in j.probes if tag.startswith(SIGMOID_INPUT)}
    return sorted(tags, key=lambda tag: float(tag.removeprefix(SIGMOID_INPUT + "p")))


def plot_step_curves(groups: list[Group], path: Path) -> Figure | None:
    """Panel (a): test accuracy against steps, per group the mean over seeds and a min-max band; then a panel per
    group: each percentile of the sigmoid's input, mean over seeds, band min-max. None without TestCurve; the
    Figure otherwise, so the plotted values can be read back."""
    curves = [(g.label, per_step(g, ACCURACY)) for g in groups]
    curves = [(label, steps) for label, steps in curves if steps]
    if not curves:
        return None
    tags = percentile_tags(groups)
    probed = [g for g in groups if any(per_step(g, tag) for tag in tags)]
    fig = Figure(figsize=(5.5 * (1 + len(probed)), 4.5), layout="constrained")
    axes = fig.subplots(1, 1 + len(probed), squeeze=False)[0]
    colors = colormaps["tab10"]
    for i, (label, steps) in enumerate(curves):
        xs = list(steps)
        axes[0].plot(xs, [statistics.fmean(steps[x]) for x in xs], color=colors(i), label=label)
        axes[0].fill_between(xs, [min(steps[x]) for x in xs], [max(steps[x]) for x in xs], color=colors(i), alpha=0.25)
    axes[0].set(xlabel="training step", ylabel="test accuracy", title="(a) test accuracy", ylim=(0.7, 1.0))
    axes[0].legend(fontsize="small")
    for ax, group, letter in zip(axes[1:], probed, "bcdefgh", strict=False):
        for i, tag in enumerate(tags):
            steps = per_step(group, tag)
            xs = list(steps)
            name = tag.removeprefix(SIGMOID_INPUT)
            ax.plot(xs, [statistics.fmean(steps[x]) for x in xs], color=colors(i), label=name)
            ax.fill_between(xs, [min(steps[x]) for x in xs], [max(steps[x]) for x in xs], color=colors(i), alpha=0.25)
        ax.set(xlabel="training step", ylabel="sigmoid input", title=f"({letter}) {group.label}")
    if probed:  # the same three colours in every panel: one legend, beside them rather than over a band
        legend_outside(fig, axes[1].get_lines(), "percentile")
    fig.suptitle("mean over completed seeds, band = min–max over seeds; on the test images, model in eval mode")
    fig.savefig(path, dpi=100)
    return fig


def step_table(groups: list[Group]) -> list[str]:
    """Markdown: test accuracy (%) and each sigmoid-input percentile at TABLE_STEPS, mean ± std over seeds."""
    tags = [ACCURACY, *percentile_tags(groups)]
    measured = [(g, {tag: per_step(g, tag) for tag in tags}) for g in groups]
    measured = [(g, series) for g, series in measured if series[ACCURACY]]
    if not measured:
        return []
    lines = ["# Against training steps (TestCurve, SigmoidInputs)", ""]
    lines += [
        "Mean ± std over each group's completed seeds (n); accuracy in %, percentiles of the sigmoid's input.",
        "",
    ]
    header = ["group", "n", "step", "test acc %", *(tag.removeprefix(SIGMOID_INPUT) for tag in tags[1:])]
    rows = []
    for group, series in measured:
        for step in TABLE_STEPS:
            cells = [fmt(summarise(series[tag].get(step, [])), tag == ACCURACY) for tag in tags]
            rows.append([group.label, len(series[ACCURACY].get(step, [])), f"{step:,}", *cells])
    return lines + md_table(header, rows) + drift_table(groups, tags[1:])


def drift_table(groups: list[Group], tags: list[str]) -> list[str]:
    """Markdown: how far each percentile, and the spread between the outer two, moved from the first to the last
    of TABLE_STEPS, per job, then mean ± std over the group's completed seeds that measured both steps."""
    if len(tags) < 2:
        return []
    first, last = TABLE_STEPS[0], TABLE_STEPS[-1]
    low, high = tags[0], tags[-1]
    lines = ["", f"## The sigmoid input's drift from step {first:,} to {last:,}", ""]
    lines += [f"Per job the value at {last:,} minus the value at {first:,}; mean ± std over seeds (n).", ""]
    names = [tag.removeprefix(SIGMOID_INPUT) for tag in tags]
    header = ["group", "n", *(f"Δ {name}" for name in names), f"Δ ({names[-1]} − {names[0]})"]
    rows = []
    for group in groups:
        jobs = [j.probes for j in group.completed if all({first, last} <= set(j.probes.get(t, {})) for t in tags)]
        if not jobs:
            continue
        moved = [summarise([p[t][last] - p[t][first] for p in jobs]) for t in tags]
        spread = summarise([(p[high][last] - p[low][last]) - (p[high][first] - p[low][first]) for p in jobs])
        rows.append([group.label, len(jobs), *(fmt(m, False) for m in moved), fmt(spread, False)])
    return lines + md_table(header, rows) if rows else []


def write_step_curves(groups: list[Group], sweep_dir: Path) -> list[str]:
    """Write step_curves.png and step_curves.md into sweep_dir where the sweep has TestCurve's numbers; returns
    the plots written (for the report's list)."""
    if plot_step_curves(groups, sweep_dir / PNG) is None:
        return []
    (sweep_dir / TABLE).write_text("\n".join(step_table(groups)) + "\n")
    return [PNG]


def section(groups: list[Group], comparisons: list, sweep_dir: Path) -> Section | None:
    plots = write_step_curves(groups, sweep_dir)
    return Section([], plots) if plots else None
