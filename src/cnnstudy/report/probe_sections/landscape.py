"""LandscapeProbe's section (`probes=bn`, Santurkar et al. 2018): per group the loss variation, gradient
predictiveness and effective β-smoothness along the gradient (a table, BN against no BN per pair of groups, and
landscape.png)."""

import statistics
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cnnstudy.report.cells import fmt, md_table, pair, test_text
from cnnstudy.report.compare import GroupComparison
from cnnstudy.report.groups import Group
from cnnstudy.report.jobs import Job
from cnnstudy.report.plots.style import legend_outside, line_styles, plain_log_labels
from cnnstudy.report.probe_sections import Section
from cnnstudy.report.stats import Summary, summarise, welch

LANDSCAPE = "landscape/"
LANDSCAPE_COLUMNS = ("loss range", "max gradient change", "β-smoothness", "gradient norm")
PNG = "landscape.png"


def section(groups: list[Group], comparisons: list[GroupComparison], sweep_dir: Path) -> Section | None:
    rows = landscape_stats(groups)
    if not rows:
        return None
    plot_landscape(groups, sweep_dir / PNG)
    return Section(landscape_section(rows, comparisons), [PNG])


def landscape_of(job: Job) -> dict[str, dict[int, float]]:
    """The job's LandscapeProbe scalars, tag -> {step: value}."""
    return {tag: steps for tag, steps in job.probes.items() if tag.startswith(LANDSCAPE)}


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
        probed = [j for j in g.completed if landscape_of(j)]
        if probed:
            per_job = [landscape_summary(landscape_of(j)) for j in probed]
            stats = {name: summarise([job[name] for job in per_job if name in job]) for name in LANDSCAPE_COLUMNS}
            rows.append(LandscapeRow(g.label, len(per_job), len(landscape_of(probed[0])["landscape/loss_max"]), stats))
    return rows


def landscape_section(landscape: list[LandscapeRow], comparisons: list[GroupComparison]) -> list[str]:
    if not landscape:
        return []
    lines = ["", "## Optimisation landscape (LandscapeProbe, Santurkar et al. 2018)", ""]
    lines += [
        "Per job each number is averaged over its probed steps; mean ± std over seeds. Loss range = loss_max −",
        "loss_min over the probed step sizes (variation of the loss); max gradient change = ‖∇L(θ−ηg) − g‖ at",
        "the largest η (gradient predictiveness: smaller is more predictive); β-smoothness = max over η of",
        "‖∇L(θ−ηg) − g‖ / ‖ηg‖.",
        "",
    ]
    rows = ([x.label, x.n, x.steps] + [fmt(x.stats[k], False) for k in LANDSCAPE_COLUMNS] for x in landscape)
    lines += md_table(["group", "n", "probed steps", *LANDSCAPE_COLUMNS], rows)
    probed = {x.label: x for x in landscape}
    pairs = [(c, probed.get(c.with_bn.label), probed.get(c.without_bn.label)) for c in comparisons if c.bn]
    pairs = [(c, bn, nobn) for c, bn, nobn in pairs if bn and nobn]
    if pairs:
        lines += ["", "BN minus no BN per column, Welch's two-sided t-test over seeds (higher/lower: p < 0.05):", ""]
        rows = ([pair(c)] + [landscape_test(bn, nobn, k) for k in LANDSCAPE_COLUMNS] for c, bn, nobn in pairs)
        lines += md_table(["with BN vs without", *LANDSCAPE_COLUMNS], rows)
    return lines


def landscape_test(bn: LandscapeRow, nobn: LandscapeRow, column: str) -> str:
    """One landscape column with BN against without: the difference, p and its verdict."""
    if bn.stats[column] is None or nobn.stats[column] is None:
        return "–"
    return test_text(welch(bn.stats[column].values, nobn.stats[column].values), ("higher", "lower"))


def common_steps(runs: list[dict], tags) -> list[int]:
    """The training steps at which every run has every tag."""
    return sorted(set.intersection(*(set(r.get(t, {})) for r in runs for t in tags)))


def plot_landscape(groups: list[Group], path: Path) -> Figure | None:
    """Santurkar et al.'s three views over training steps, per group: the band spans the probed step sizes
    (min to max of the loss / gradient change, each averaged over seeds, its edges in the group's line style);
    beta-smoothness is the seeds' mean."""
    probed = [(g.label, [runs for j in g.completed if (runs := landscape_of(j))]) for g in groups]
    probed = [(name, runs) for name, runs in probed if runs]
    if not probed:
        return None
    fig = Figure(figsize=(18, 5), layout="constrained")
    axes = fig.subplots(1, 3)
    styles, title = line_styles([name for name, _ in probed])
    views = (
        ("landscape/loss_min", "landscape/loss_max", "loss along the gradient", "loss variation"),
        ("landscape/grad_change_min", "landscape/grad_change_max", "‖∇L(θ−ηg) − g‖", "gradient predictiveness"),
    )
    for name, runs in probed:
        color, linestyle = styles[name]["color"], styles[name]["linestyle"]
        for ax, (low, high, ylabel, view) in zip(axes, views, strict=False):
            xs = common_steps(runs, (low, high))
            lo = [statistics.fmean(r[low][x] for r in runs) for x in xs]
            hi = [statistics.fmean(r[high][x] for r in runs) for x in xs]
            ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
            for edge in (lo, hi):
                ax.plot(xs, edge, color=color, linestyle=linestyle, linewidth=1)
            ax.set(xlabel="training step", ylabel=ylabel, title=view, yscale="log")
        beta = "landscape/beta_smoothness"
        xs = common_steps(runs, (beta,))
        axes[2].plot(xs, [statistics.fmean(r[beta][x] for r in runs) for x in xs], color=color, linestyle=linestyle)
        axes[2].set(xlabel="training step", ylabel="max ‖Δ∇L‖ / ‖ηg‖", title="effective β-smoothness", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        plain_log_labels(ax)
    handles = [Line2D([], [], **{**style, "marker": None}) for style in styles.values()]
    legend_outside(fig, handles, title)
    fig.suptitle("along the gradient at the probed step sizes η; band = min–max over η, mean over seeds")
    fig.savefig(path, dpi=100)
    return fig
