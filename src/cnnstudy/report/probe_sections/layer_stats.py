"""LayerStats' section (`probes=bn`, `probes=layer_stats`): per group and layer the weight's gradient norm and the
output's std, at the first probed step and the largest over the steps (a table, BN against no BN per pair of
groups, and layer_stats.png)."""

import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cnnstudy.report.cells import fmt, md_table, pair, test_text
from cnnstudy.report.compare import GroupComparison
from cnnstudy.report.groups import Group
from cnnstudy.report.jobs import Job
from cnnstudy.report.plots.style import MARKERS, legend_outside, plain_log_labels
from cnnstudy.report.probe_sections import Section
from cnnstudy.report.stats import Summary, summarise, welch

GRAD_NORM, ACT_STD = "grad_norm/", "act_std/"
PNG = "layer_stats.png"


def section(groups: list[Group], comparisons: list[GroupComparison], sweep_dir: Path) -> Section | None:
    rows = layer_stats(groups)
    if not rows:
        return None
    plot_layer_stats(rows, groups, sweep_dir / PNG)
    return Section(layers_section(rows, comparisons), [PNG])


def layer_stats_of(job: Job) -> dict[str, dict[int, float]]:
    """The job's per-layer gradient norms and output stds, tag -> {step: value}."""
    return {tag: steps for tag, steps in job.probes.items() if tag.startswith((GRAD_NORM, ACT_STD))}


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
        probed = [stats for j in g.jobs if j.status in ("completed", "diverged") and (stats := layer_stats_of(j))]
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


def layers_section(layers: list[LayerRow], comparisons: list[GroupComparison]) -> list[str]:
    if not layers:
        return []
    lines = ["", "## Per-layer norms (LayerStats)", ""]
    lines += [
        "Per job and layer: the L2 norm of the weight's gradient and the std of the layer's output at the first",
        "probed step and the largest over the probed steps; mean ± std over the group's completed *and diverged*",
        "jobs (a net that blows up diverges, and its steps are the answer). inf: a value overflowed.",
        "",
    ]
    rows = ([x.label, x.layer, x.n, x.steps] + [fmt(x.stats[k], False) for k in LAYER_COLUMNS] for x in layers)
    lines += md_table(["group", "layer", "n", "probed steps", *LAYER_COLUMNS], rows)
    probed = {(x.label, x.layer): x for x in layers}
    pairs = [
        (c, bn, probed[c.without_bn.label, bn.layer])
        for c in comparisons
        if c.bn
        for bn in layers
        if bn.label == c.with_bn.label and (c.without_bn.label, bn.layer) in probed
    ]
    if pairs:
        lines += ["", "BN minus no BN in log10 of each largest value (finite ones), Welch's two-sided t-test over"]
        lines += ["jobs (higher/lower: p < 0.05):", ""]
        maxima = [k for k in LAYER_COLUMNS if k.endswith("max")]
        rows = ([pair(c), bn.layer] + [layer_test(bn, nobn, k) for k in maxima] for c, bn, nobn in pairs)
        lines += md_table(["with BN vs without", "layer", *(f"log10 {k}" for k in maxima)], rows)
    return lines


def layer_test(bn: LayerRow, nobn: LayerRow, column: str) -> str:
    """log10 of one largest-value column with BN against without, over the jobs where it is finite."""
    values = [x.stats[column].values if x.stats[column] else [] for x in (bn, nobn)]
    test = welch(*[[math.log10(v) for v in side if 0 < v < math.inf] for side in values])
    return "–" if test.difference is None else test_text(test, ("higher", "lower"))


def plot_layer_stats(rows: list[LayerRow], groups: list[Group], path: Path) -> Figure | None:
    """LayerStats' gradient norm and output std over the probed steps: a row of panels per group, a line per
    layer (the median over the group's completed and diverged jobs at each step any of them probed), coloured
    from the first layer (dark) to the last (light)."""
    labels = list(dict.fromkeys(x.label for x in rows))
    if not labels:
        return None
    by_label = {g.label: g for g in groups}
    layers = list(dict.fromkeys(x.layer for x in rows))
    viridis = colormaps["viridis"]
    colors = [viridis(f) for f in np.linspace(0, 0.85, len(layers))]
    fig = Figure(figsize=(14, 3.2 * len(labels)), layout="constrained")
    axes = fig.subplots(len(labels), 2, squeeze=False, sharex=True, sharey="col")
    any_zero = False
    for (grad_ax, act_ax), name in zip(axes, labels, strict=True):
        jobs = [s for j in by_label[name].jobs if j.status in ("completed", "diverged") and (s := layer_stats_of(j))]
        for ax, prefix, ylabel in ((grad_ax, "grad_norm/", "‖∇W‖"), (act_ax, "act_std/", "std of the output")):
            for layer, color, marker in zip(layers, colors, cycle(MARKERS), strict=False):
                per_step = defaultdict(list)
                for stats in jobs:
                    for step, value in stats.get(prefix + layer, {}).items():
                        per_step[step].append(value)
                xs = sorted(per_step)
                medians = [statistics.median(per_step[x]) for x in xs]
                # a dead net's gradients are exactly 0, which a log axis cannot show: a gap, and a mark at its foot
                zeros = [x for x, m in zip(xs, medians, strict=True) if m == 0]
                any_zero = any_zero or bool(zeros)
                ax.plot(zeros, [0.03] * len(zeros), "|", color=color, transform=ax.get_xaxis_transform())
                ax.plot(
                    xs,
                    [m if m > 0 else float("nan") for m in medians],
                    color=color,
                    marker=marker,
                    markersize=3,
                    markevery=max(1, len(xs) // 10),
                    label=layer,
                )
            ax.set(yscale="log", ylabel=ylabel, title=f"{name} (n = {len(jobs)})")
            ax.grid(alpha=0.3)
            plain_log_labels(ax)
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    handles = [line for line in axes[0][0].get_lines() if line.get_label() in layers]
    zero = Line2D([], [], color="#888888", marker="|", markersize=10, linestyle="", label="exactly 0 (off log axis)")
    legend_outside(fig, handles, "layer (input to output)", zero if any_zero else None)
    fig.suptitle("per layer, median over jobs (LayerStats)")
    fig.savefig(path, dpi=100)
    return fig
