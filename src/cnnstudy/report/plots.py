"""The report's PNG plots: curves per epoch, test accuracy and stability per lr (the probes' plots are their sections',
cnnstudy.report.probe_sections).

Drawn around a study's settings (the `key=value` overrides that tell its groups apart): a study that crosses two
settings gets one panel per level of the one with fewer levels (e.g. per norm) and a line per level of the other.
Within a panel the colour follows one setting: a normalisation has the same colour in every figure (NORM_COLORS),
an ordered setting (lr, init scale, batch size) a sequential colour map, anything else the Okabe-Ito palette;
line style follows the remaining settings. Legends sit outside the data, every seed is drawn beside its mean
(thin lines on the curves, hollow points on the accuracy plots), and no panel holds more than MAX_LINES lines.
Each function returns its Figure (None where there is nothing to draw) so the plotted values can be read back.
"""

import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure  # pyplot-free: no global state; PNGs are drawn by the Agg canvas
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from cnnstudy.report.compare import ArmLevels, LrSeries
from cnnstudy.report.groups import Group
from cnnstudy.report.stats import Summary

MAX_LINES = 8
# Okabe & Ito's colour-blind-safe palette, yellow last (it is faint on white)
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
# matplotlib's 'tableau-colorblind10' colours: for 9 or 10 categories
TABLEAU_COLORBLIND = ("#006BA4", "#FF800E", "#ABABAB", "#595959", "#5F9ED1")
TABLEAU_COLORBLIND += ("#C85200", "#898989", "#A2C8EC", "#FFBC79", "#CFCFCF")
# One colour per normalisation in every figure: BN blues, no normalisation vermillion.
NORM_COLORS = {"bn": "#0072B2", "bn_scratch": "#56B4E9", "noisy_bn": "#CC79A7", "gn": "#009E73", "ln": "#E69F00"}
NORM_COLORS |= {"none": "#D55E00", "nobn": "#D55E00"}
NORM_SETTINGS = ("model.norm", "model")  # the settings that choose a normalisation (model=bn / model=nobn)
MARKERS = "os^Dv<>ph"
LINE_STYLES = ("-", "--", ":", "-.")
ABSENT = "–"  # a setting a group does not override


def settings(label: str) -> dict[str, str]:
    """A group's (or series') label, `model.norm=bn optim.lr=0.1`, as setting -> value."""
    return {key: value for key, _, value in (token.partition("=") for token in label.split())}


def number(value: str) -> float | None:
    """The number a level names: `0.1`, `1e-3`, or an arm's `b128`; None for a word."""
    found = re.fullmatch(r"[A-Za-z]*(\d+(?:\.\d*)?(?:e-?\d+)?)", value)
    return float(found[1]) if found else None


def in_order(values) -> list[str]:
    """Levels in their natural order: not set first, numbers by value (b2 before b128), words alphabetically."""
    return sorted(set(values), key=lambda v: (v != ABSENT, number(v) is None, number(v) or 0.0, v))


def factors(labels: list[str]) -> dict[str, list[str]]:
    """The settings whose value differs between the labels, each with its levels in order."""
    parsed = [settings(label) for label in labels]
    keys = dict.fromkeys(key for p in parsed for key in p)
    levels = {key: in_order(p.get(key, ABSENT) for p in parsed) for key in keys}
    return {key: values for key, values in levels.items() if len(values) > 1}


def facet_setting(labels: list[str]) -> str | None:
    """The setting to draw one panel per level of: of two or more settings crossed (every combination of
    levels run), the one with the fewest levels; None otherwise."""
    found = factors(labels)
    if len(found) < 2 or len(set(labels)) != math.prod(len(v) for v in found.values()):
        return None
    return min(found, key=lambda key: len(found[key]))


def without(label: str, key: str | None) -> str:
    return " ".join(t for t in label.split() if t.partition("=")[0] != key) or label


def palette(key: str | None, levels: list[str]) -> dict[str, str]:
    """A colour per level of `key`: the norms' own, a sequential map for numbers, else categorical."""
    if key in NORM_SETTINGS and set(levels) <= NORM_COLORS.keys():
        return {level: NORM_COLORS[level] for level in levels}
    if all(number(level) is not None for level in levels):
        viridis = colormaps["viridis"]  # dark to light in level order; its yellow end left out
        return {level: viridis(f) for level, f in zip(levels, np.linspace(0, 0.85, len(levels)), strict=True)}
    if len(levels) <= len(OKABE_ITO):
        colors = OKABE_ITO
    elif len(levels) <= len(TABLEAU_COLORBLIND):
        colors = TABLEAU_COLORBLIND
    else:
        colors = [colormaps["tab20"](i % 20) for i in range(len(levels))]
    return dict(zip(levels, colors, strict=False))


def line_styles(labels: list[str]) -> tuple[dict[str, dict], str]:
    """How each label's line looks (keyword arguments of `plot`), in legend order, and the legend's title:
    colour and marker by one setting (a norm if one varies, else the first), line style by the combination of
    the others (up to four); with more combinations than that, a colour per label."""
    labels = list(dict.fromkeys(labels))
    found = factors(labels)
    key = next((k for k in NORM_SETTINGS if k in found), next(iter(found), None))
    rest = [k for k in found if k != key]
    combos = in_order(" ".join(settings(label).get(k, ABSENT) for k in rest) for label in labels)
    if key is None or len(combos) > len(LINE_STYLES):
        key, rest, combos = None, [], [""]
    levels = in_order(settings(label).get(key, ABSENT) for label in labels) if key else labels
    colors = palette(key, levels)
    styles, order = {}, {}
    for label in labels:
        level = settings(label).get(key, ABSENT) if key else label
        combo = combos.index(" ".join(settings(label).get(k, ABSENT) for k in rest))
        styles[label] = {
            "label": level if len(found) == 1 else label,  # the legend's title names a single setting
            "color": colors[level],
            "marker": MARKERS[levels.index(level) % len(MARKERS)],
            "linestyle": LINE_STYLES[combo],
        }
        order[label] = (levels.index(level), combo)  # the legend in level order
    title = ", ".join(found) if key is None else " / ".join([key, *rest])
    return dict(sorted(styles.items(), key=lambda item: order[item[0]])), title


def chunks(items: list, size: int) -> list[list]:
    """`items` in as few even runs of at most `size` as there can be."""
    if not items:
        return []
    count = math.ceil(len(items) / size)
    bounds = [math.ceil(i * len(items) / count) for i in range(count + 1)]  # longer runs first
    return [items[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


def legend_outside(fig: Figure, handles: list, title: str, note: Line2D | None = None) -> None:
    """One legend for the whole figure, right of the panels (constrained layout makes room for it)."""
    handles = [*handles, note] if note else handles
    fig.legend(handles=handles, loc="outside right center", fontsize="small", title=title, title_fontsize="small")


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


def plain_log_labels(ax, which: str = "y") -> None:
    """A log axis labelled 0.5, 1, 2 rather than 5×10⁻¹, 10⁰, 2×10⁰: the powers of ten, and between them 2 and 5
    where the axis spans under three decades (and 3 and 7 too under one)."""

    def label(value, _) -> str:
        low, high = ax.get_ylim() if which == "y" else ax.get_xlim()
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        labelled = (1,) if high / low > 1000 else (1, 2, 5) if high / low > 10 else (1, 2, 3, 5, 7)
        return f"{value:g}" if mantissa in labelled else ""

    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(FuncFormatter(label))


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


OUTCOME_COLORS = {"reproduced": OKABE_ITO[0], "contradicted": OKABE_ITO[1]}  # else grey: not resolved, no claim


def verdict_panel(verdict) -> str:
    """Which panel of the verdicts figure a claim's effect belongs to: claims in one unit share an axis."""
    claim = verdict.claim
    if claim.test == "edge_ratio":
        return "50 % edge ratio, a / b"
    metric = claim.metric.replace("_", " ")
    if claim.test == "trend":
        return f"slope of {metric} per {'doubling of ' if claim.scale == 'log2' else ''}{claim.over}"
    unit = " (points)" if "acc" in claim.metric else ""
    return f"{metric}{unit}: a − b" + (" (a − the source's number)" if claim.test == "value" else "")


def plot_verdicts(verdicts: list, path: Path) -> Figure | None:
    """A study at a glance: each claim's effect with its interval (95 %; 90 % for equivalences, the interval
    TOST decides by), an equivalence margin as a band, filled where the corrected test resolved it, coloured by
    what it says of the source's claim. One panel per unit."""
    shown = [v for v in verdicts if v.effect is not None and not v.missing]
    if not shown:
        return None
    panels = defaultdict(list)
    for v in shown:
        panels[verdict_panel(v)].append(v)
    heights = [len(rows) + 1 for rows in panels.values()]
    open_ended = False
    fig = Figure(figsize=(8.5, 1.0 + 0.42 * sum(heights)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (title, rows) in zip(axes, panels.items(), strict=True):
        ratio = rows[0].claim.test == "edge_ratio"
        scale = 100 if "points" in title else 1
        for y, v in enumerate(reversed(rows)):
            effect = 10**v.effect if ratio else v.effect * scale
            low, high = ((10**x if ratio else x * scale) for x in (v.interval or (v.effect, v.effect)))
            low, high = (min(max(x, 1e-3), 1e3) if ratio else x for x in (low, high))  # beyond the grid: a bound
            color = OUTCOME_COLORS.get(v.outcome, "#888888")
            resolved = not v.words.startswith("not resolved")
            if v.claim.margin and v.claim.test in ("equivalence", "value"):
                m = v.claim.margin * scale
                ax.fill_betweenx([y - 0.35, y + 0.35], -m, m, color="#DDDDDD", linewidth=0)
            ax.plot([low, high], [y, y], color=color, linewidth=2)
            for end, arrow in ((low, "<"), (high, ">")):
                if ratio and end in (1e-3, 1e3):  # open on that side ([15.9, ∞]): an arrowhead, not a bar's end
                    ax.scatter([end], [y], marker=arrow, s=50, color=color, zorder=3)
                    open_ended = True
            face = color if resolved else "white"
            ax.plot([effect], [y], marker="o", markersize=8, color=color, markerfacecolor=face)
        ax.axvline(1 if ratio else 0, color="black", linewidth=0.8)
        if ratio:
            ax.set_xscale("log")
            plain_log_labels(ax, "x")
        ax.set_yticks(range(len(rows)), [v.claim.name for v in reversed(rows)], fontsize="small")
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_title(title, fontsize="small", loc="left")
    handles = [
        Line2D([], [], color=OUTCOME_COLORS["reproduced"], marker="o", label="the source's claim reproduced"),
        Line2D([], [], color=OUTCOME_COLORS["contradicted"], marker="o", label="the source's claim contradicted"),
        Line2D([], [], color="#888888", marker="o", label="resolved, not the source's claim"),
        Line2D([], [], color="#888888", marker="o", markerfacecolor="white", label="not resolved (hollow)"),
        Line2D([], [], color="#DDDDDD", linewidth=8, label="equivalence margin"),
    ]
    if open_ended:
        handles.append(Line2D([], [], color="#888888", marker=">", linestyle="", label="interval open beyond the grid"))
    legend_outside(fig, handles, "verdict (corrected p)")
    fig.suptitle("each claim: effect and interval (95 %; 90 % for equivalence)", fontsize="medium")
    fig.savefig(path, dpi=100)
    return fig
