"""Test accuracy and stability per lr (test_acc_vs_lr.png, stability.png), test accuracy per arm
(test_acc_by_arm.png) and the 50 % edge per training budget (edge_vs_budget.png): a mean with its seeds per x,
lines sharing an x moved apart."""

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from cnnstudy.report.compare import ArmLevels, LrSeries
from cnnstudy.report.plots.style import (
    ABSENT,
    NORM_SETTINGS,
    factors,
    legend_outside,
    line_styles,
    plain_log_labels,
    settings,
    without,
)
from cnnstudy.report.stats import Summary


def beside(xs: list[float], offset: float, log: bool, span: float) -> list[float]:
    """`xs` moved sideways by `offset`: decades on a log axis, fractions of `span` on a linear one."""
    return [x * 10**offset if log else x + offset * span for x in xs]


def plot_means(
    ax, points: list[tuple[float, Summary | None]], style: dict, offset: float, log: bool, span: float, name: str
) -> None:
    """One line of accuracies in %: at each x with a summary the mean with an error bar of the std over seeds,
    and each seed a hollow point just right of it; the line is moved sideways by `offset` so that lines sharing
    an x do not hide each other."""
    done = [(x, summary) for x, summary in points if summary is not None]
    xs = beside([x for x, _ in done], offset, log, span)
    means, stds = [s.mean * 100 for _, s in done], [(s.std or 0) * 100 for _, s in done]
    # an accuracy stays within 0-100 %: a bar of seeds at chance and seeds at 99 % is cut there
    below = [min(std, mean) for mean, std in zip(means, stds, strict=True)]
    above = [min(std, 100 - mean) for mean, std in zip(means, stds, strict=True)]
    bars = ax.errorbar(xs, means, yerr=[below, above], capsize=3, markersize=5, **style)
    bars.lines[0].set_gid(f"{name}|mean")
    seed_x = [x for x, (_, s) in zip(beside(xs, 0.012, log, span), done, strict=True) for _ in s.values]
    seed_y = [v * 100 for _, s in done for v in s.values]
    ax.plot(
        seed_x,
        seed_y,
        linestyle="none",
        marker=style["marker"],
        markersize=3.5,
        markerfacecolor="none",
        color=style["color"],
        alpha=0.8,
        gid=f"{name}|seeds",
    )


def offsets(count: int, width: float = 0.025) -> list[float]:
    """Sideways offsets of `count` lines, centred on the true x."""
    return [(i - (count - 1) / 2) * width for i in range(count)]


SEED_NOTE = "mean ± std over completed seeds (bars cut at 0 and 100 %); hollow points = each seed"


def seed_points() -> Line2D:
    return Line2D([], [], linestyle="none", marker="o", markerfacecolor="none", color="gray", label="one seed")


def norm_panels(labels: list[str]) -> tuple[list[tuple[str, list[str]]], dict[str, dict], tuple[list, str]]:
    """Panels for lines told apart by a normalisation and other settings: one panel per combination of the
    others, a line per norm in its colour in each. Returns the panels (title, labels), each label's style and
    the legend (entries' styles, title). Without a norm setting, or with nothing else, one panel (line_styles)."""
    found = factors(labels)
    key = next((k for k in NORM_SETTINGS if k in found), None)
    if key is None or len(found) == 1:
        styles, title = line_styles(labels)
        return [("", labels)], styles, (list(styles.values()), title)
    norm_of = {label: f"{key}={settings(label).get(key, ABSENT)}" for label in labels}
    entries, title = line_styles(list(norm_of.values()))
    rest = {label: without(label, key) for label in labels}
    panels = [(name, [label for label in labels if rest[label] == name]) for name in dict.fromkeys(rest.values())]
    return panels, {label: entries[norm_of[label]] for label in labels}, (list(entries.values()), title)


def lr_axes(fig: Figure, panels: list, lrs: list[float]) -> list:
    """A panel per entry of `panels`, up to three a row, sharing both axes; log lr, a tick at each of up to 8
    `lrs` run, else at the powers of ten (and 2 and 5)."""
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    axes = list(fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).flat)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, _) in zip(axes, panels, strict=False):
        ax.set(xscale="log", title=title)
        ax.title.set_fontsize("medium")
        ax.grid(alpha=0.3)
        plain_log_labels(ax, "x")
        if len(set(lrs)) <= 8:
            ax.set_xticks(sorted(set(lrs)), [f"{lr:g}" for lr in sorted(set(lrs))])
            ax.xaxis.set_minor_formatter(NullFormatter())
    for ax in axes[: len(panels)]:
        ax.set_xlabel("learning rate")
    return axes[: len(panels)]


def lr_figure(panels: list) -> Figure:
    columns = min(3, len(panels))
    size = (max(8.5, 3 + 4.2 * columns), 1 + 4 * math.ceil(len(panels) / columns))  # room for a title and legend
    return Figure(figsize=size, layout="constrained")


def plot_test_acc_vs_lr(series: list[LrSeries], path: Path) -> Figure:
    """Test accuracy per lr of each series, in a panel per setup (norm_panels); crosses at the bottom mark the
    lrs where a seed diverged, a ring each series' best lr, chosen on validation (LrSeries.best): comparing the
    rings compares each setting at its own tuned lr (the isolation plot of the tuning playbook)."""
    panels, styles, (entries, title) = norm_panels([s.label for s in series])
    fig = lr_figure(panels)
    by_label = {s.label: s for s in series}
    for ax, (_, labels) in zip(lr_axes(fig, panels, [p.lr for s in series for p in s.points]), panels, strict=True):
        for label, offset in zip(labels, offsets(len(labels)), strict=True):
            s, style = by_label[label], styles[label]
            plot_means(ax, [(p.lr, p.test_acc) for p in s.points], style, offset, True, 0, s.label)
            if len(s.points) > 1 and (best := s.best) is not None:
                (x,) = beside([best.lr], offset, True, 0)
                ring = {"marker": "o", "markersize": 14, "markerfacecolor": "none", "markeredgewidth": 1.5}
                ax.plot([x], [best.test_acc.mean * 100], color=style["color"], gid=f"{s.label}|best", **ring)
            diverged = beside([p.lr for p in s.points if p.diverged], offset, True, 0)
            # x in data, y in axes coordinates: the marker sits at the bottom whatever the accuracy range
            ax.plot(
                diverged,
                [0.03] * len(diverged),
                "x",
                color=style["color"],
                ms=9,
                mew=2,
                transform=ax.get_xaxis_transform(),
            )
    fig.axes[0].set_ylabel("test accuracy %")  # the panels share it
    fig.suptitle(f"test accuracy vs lr: {SEED_NOTE}", fontsize="medium")
    diverged_note = Line2D([], [], linestyle="none", marker="x", color="gray", mew=2, label="diverged (≥ 1 seed)")
    handles = [Line2D([], [], **style) for style in entries] + [seed_points()]
    if any(len(s.points) > 1 and s.best is not None for s in series):
        ring = {"marker": "o", "markersize": 12, "markerfacecolor": "none", "linestyle": "none", "color": "gray"}
        handles.append(Line2D([], [], label="best lr, chosen on val acc", **ring))
    legend_outside(fig, handles, title, diverged_note if any(p.diverged for s in series for p in s.points) else None)
    fig.savefig(path, dpi=100)
    return fig


def plot_test_acc_by_arm(levels: ArmLevels, path: Path) -> Figure:
    """Test accuracy against the setting a study's arms are levels of (e.g. the batch size), one line per
    combination of the other overrides."""
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    styles, title = line_styles(list(levels.lines))
    values = sorted({x for points in levels.lines.values() for x in points})
    log = all(isinstance(x, int | float) and x > 0 for x in values) and values[-1] >= 10 * values[0]
    span = (values[-1] - values[0]) if all(isinstance(x, int | float) for x in values) else 0
    for (name, points), offset in zip(levels.lines.items(), offsets(len(levels.lines)), strict=True):
        plot_means(
            ax, [(x, g.stats.get("test_acc")) for x, g in points.items()], styles[name], offset, log, span or 1, name
        )
    if log:
        ax.set_xscale("log")
    ax.set_xticks(values, [str(x) for x in values])
    ax.grid(alpha=0.3)
    ax.set(xlabel=f"{levels.key} (set by {levels.arm})", ylabel="test accuracy %")
    ax.set_title(f"test accuracy: {SEED_NOTE}", fontsize="medium")
    handles = [Line2D([], [], **style) for style in styles.values()]
    legend_outside(fig, handles, title, seed_points())
    fig.savefig(path, dpi=100)
    return fig


def plot_stability(series: list[LrSeries], threshold: float, path: Path) -> Figure:
    """The fraction of each series' decided seeds that still train, per lr, in a panel per setup (norm_panels)."""
    panels, styles, (entries, title) = norm_panels([s.label for s in series])
    fig = lr_figure(panels)
    by_label = {s.label: s for s in series}
    for ax, (_, labels) in zip(lr_axes(fig, panels, [p.lr for s in series for p in s.points]), panels, strict=True):
        for label, offset in zip(labels, offsets(len(labels)), strict=True):  # apart, as equal fractions are common
            decided = [p for p in by_label[label].points if p.decided]
            lrs = beside([p.lr for p in decided], offset, True, 0)
            ax.plot(lrs, [p.trained / p.decided for p in decided], **styles[label], gid=label)
        ax.set(ylim=(-0.05, 1.05))
    fig.axes[0].set_ylabel("fraction of seeds that still train")
    fig.suptitle(
        f"still trains = completed with last val acc ≥ {threshold * 100:g}%; diverged = does not", fontsize="medium"
    )
    legend_outside(fig, [Line2D([], [], **style) for style in entries], title)
    fig.savefig(path, dpi=100)
    return fig


# What sets a run's training budget: series that differ only in these are one net at several budgets.
BUDGET_KEYS = ("trainer.max_epochs", "trainer.limit_train_batches", "trainer.max_steps")


def steps_of(series: LrSeries) -> float | None:
    """The optimizer steps a job of the series took (the median over its completed jobs)."""
    steps = [j.metrics.get("steps") for p in series.points for j in p.group.completed]
    steps = [s for s in steps if s is not None]
    return statistics.median(steps) if steps else None


def plot_edge_vs_budget(series: list[LrSeries], path: Path) -> Figure | None:
    """The 50 % edge (with its interval) against the training budget, one line per series setup less the
    budget; None unless some setup was run at two or more budgets."""
    lines = defaultdict(list)
    for s in series:
        if s.setup is not None and s.edge is not None and (steps := steps_of(s)) is not None:
            setup = {k: v for k, v in s.setup.items() if k not in BUDGET_KEYS}
            lines[json.dumps(setup, sort_keys=True, default=str)].append((steps, s))
    lines = {key: sorted(points, key=lambda p: p[0]) for key, points in lines.items() if len(points) > 1}
    if not lines:
        return None
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    names = [points[0][1].label for points in lines.values()]
    styles, title = line_styles(names)
    for name, points in zip(names, lines.values(), strict=True):
        inside = [(steps, s.edge) for steps, s in points if math.isfinite(s.edge.log_lr)]  # beyond a grid: no point
        edges = [10**edge.log_lr for _, edge in inside]
        # an interval end beyond the grid is drawn to the grid's end
        low = [e - max(10 ** edge.interval[0], edge.grid[0]) for e, (_, edge) in zip(edges, inside, strict=True)]
        high = [min(10 ** edge.interval[1], edge.grid[1]) - e for e, (_, edge) in zip(edges, inside, strict=True)]
        ax.errorbar([steps for steps, _ in inside], edges, yerr=[low, high], capsize=3, **styles[name])
    ax.set(xscale="log", yscale="log", xlabel="training steps (budget)", ylabel="50 % edge: largest lr that trains")
    plain_log_labels(ax, "x")
    plain_log_labels(ax, "y")
    ax.grid(alpha=0.3)
    ax.set_title("50 % edge vs budget; bar: 95 % bootstrap interval (cut at the grid)", fontsize="medium")
    legend_outside(fig, [Line2D([], [], **style) for style in styles.values()], title)
    fig.savefig(path, dpi=100)
    return fig
