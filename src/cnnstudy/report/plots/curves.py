"""Train loss and val accuracy per epoch (curves.png): a panel per level of the study's facet setting, or an
ablation of many arms split into panels around a reference arm."""

import math
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from cnnstudy.report.groups import Group
from cnnstudy.report.plots.style import (
    ABSENT,
    MARKERS,
    OKABE_ITO,
    facet_setting,
    in_order,
    legend_outside,
    line_styles,
    plain_log_labels,
    settings,
    without,
)

MAX_LINES = 8  # lines in a panel at most: a study of more groups than that is split (curve_panels)


def chunks(items: list, size: int) -> list[list]:
    """`items` in as few even runs of at most `size` as there can be."""
    if not items:
        return []
    count = math.ceil(len(items) / size)
    bounds = [math.ceil(i * len(items) / count) for i in range(count + 1)]  # longer runs first
    return [items[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


def seed_line(color) -> Line2D:
    return Line2D([], [], color=color, linewidth=0.8, alpha=0.45, label="one seed")


def per_epoch(jobs, key: str, scale: float) -> list[tuple[list[int], list[float]]]:
    """Each job's (epochs, values) of `key`; epochs count from 1."""
    runs = []
    for job in jobs:
        points = [(e.get("epoch", i) + 1, e[key] * scale) for i, e in enumerate(job.epochs) if e.get(key) is not None]
        runs.append(([x for x, _ in points], [y for _, y in points]))
    return runs


def mean_over_seeds(runs: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float]]:
    """At each epoch, the mean over the seeds that reached it (a partial group's seeds may differ in length)."""
    by_epoch = defaultdict(list)
    for xs, ys in runs:
        for x, y in zip(xs, ys, strict=True):
            by_epoch[x].append(y)
    xs = sorted(by_epoch)
    return xs, [statistics.fmean(by_epoch[x]) for x in xs]


Panel = tuple[str, dict[str, dict], list[Group]]  # title, line style by group label, groups


def curve_panels(groups: list[Group]) -> tuple[list[Panel], tuple | None]:
    """The panels of the curves, and the figure's legend (its entries' styles and title; None: a legend per
    panel): one panel per level of a crossed setting, every panel in the same styles; else one panel of up to
    MAX_LINES groups; else (an ablation of many arms) the first group, in black, as a reference in every panel,
    with up to MAX_LINES - 2 others, each panel in its own colours."""
    key = facet_setting([g.label for g in groups])
    if key is not None or len(groups) <= MAX_LINES:
        entries, title = line_styles([without(g.label, key) for g in groups])
        styles, legend = {g.label: entries[without(g.label, key)] for g in groups}, (list(entries.values()), title)
        if key is None:
            return [("", styles, groups)], legend
        levels = in_order(settings(g.label).get(key, ABSENT) for g in groups)
        by_level = [[g for g in groups if settings(g.label).get(key, ABSENT) == level] for level in levels]
        return [(f"{key}={level}", styles, members) for level, members in zip(levels, by_level, strict=True)], legend
    reference, panels = groups[0], []
    for run in chunks(groups[1:], MAX_LINES - 2):
        styles = {reference.label: {"label": f"{reference.label} (reference)", "color": "#000000", "marker": "o"}}
        for group, color, marker in zip(run, OKABE_ITO, MARKERS[1:], strict=False):
            styles[group.label] = {"label": group.label, "color": color, "marker": marker}
        panels.append(("", styles, [reference, *run]))
    return panels, None


def plot_curves(groups: list[Group], path: Path) -> Figure | None:
    """Train loss and val accuracy per epoch, a column of two panels per level of the study's facet setting
    (`curve_panels`): a thick line for the mean over the completed seeds, a thin one per seed. None under two
    epochs."""
    if max((len(j.epochs or []) for g in groups for j in g.completed), default=0) < 2:
        return None
    panels, legend = curve_panels(groups)  # of all groups: a setting whose one level all diverged is still crossed
    fig = Figure(
        figsize=(max(8.5, (2.2 if legend else 0) + 3.6 * len(panels)), 6.4 if legend else 8), layout="constrained"
    )
    axes = fig.subplots(2, len(panels), sharex=True, sharey="row", squeeze=False)
    longest = max(len(j.epochs) for g in groups for j in g.completed)
    for (loss_ax, acc_ax), (panel_title, styles, members) in zip(axes.T, panels, strict=True):
        for group in (g for g in members if g.n):
            style = styles[group.label]
            for ax, metric, scale in ((loss_ax, "train_loss", 1), (acc_ax, "val_acc", 100)):
                runs = per_epoch(group.completed, metric, scale)
                for xs, ys in runs:
                    ax.plot(xs, ys, color=style["color"], linewidth=0.8, alpha=0.45, gid=f"{group.label}|seed")
                ax.plot(
                    *mean_over_seeds(runs),
                    **style,
                    linewidth=1.8,
                    markersize=4,
                    markevery=max(1, longest // 10),
                    gid=f"{group.label}|mean",
                )
        loss_ax.set_title(panel_title, fontsize="medium")
        if legend is None:  # each panel's own, under it
            handles = [Line2D([], [], **style) for style in styles.values()] + [seed_line("gray")]
            acc_ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize="small")
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set(yscale="log", ylabel="train loss (log)")
    plain_log_labels(axes[0][0])
    axes[1][0].set_ylabel("val accuracy %")
    mean_lines = [line for ax in axes[1] for line in ax.get_lines() if line.get_gid().endswith("|mean")]
    means = [max(line.get_ydata()) for line in mean_lines if len(line.get_ydata())]  # none: no val_acc logged
    if means and max(means) >= ERROR_SCALE_FROM:
        error_scale(axes[1][0])
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    if legend is not None:
        entries, title = legend
        legend_outside(fig, [Line2D([], [], **style) for style in entries], title, seed_line("gray"))
    fig.suptitle("thick line: mean over completed seeds; thin lines: each seed", fontsize="medium")
    fig.savefig(path, dpi=100)
    return fig


# Val accuracy's axis is the error's on a log scale once a group's mean reaches this: 98 % and 99 % are as far apart
# as 80 % and 90 %, so one arm's dip to 80 % (deeper_cnn's GAP head) no longer squashes the others into one line.
ERROR_SCALE_FROM = 95.0
ACCURACY_TICKS = (0, 50, 80, 90, 95, 98, 99, 99.5, 99.8, 99.9, 99.95, 99.98, 99.99)


def error_scale(ax) -> None:
    """`ax`'s y axis (accuracy %) spaced as -log10 of the error, limited to the lines drawn with a 5 % margin; the
    axes sharing it follow."""

    def forward(y):
        return -np.log10(np.clip(100 - np.asarray(y, dtype=float), 1e-3, None))

    def inverse(t):
        return 100 - 10 ** -np.asarray(t, dtype=float)

    siblings = ax.get_shared_y_axes().get_siblings(ax)
    drawn = forward([y for sibling in siblings for line in sibling.get_lines() for y in line.get_ydata()])
    low, high = drawn.min(), drawn.max()
    ax.set_yscale("function", functions=(forward, inverse))
    ax.set_ylim(inverse(low - 0.05 * (high - low)), inverse(high + 0.05 * (high - low)))
    ticks = [t for t in ACCURACY_TICKS if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_ylabel("val accuracy % (error on a log scale)")
