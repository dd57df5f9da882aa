"""The report's PNG plots: curves per epoch, test accuracy and stability per lr, the optimisation landscape,
the per-layer norms."""

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure  # pyplot-free: no global state; PNGs are drawn by the Agg canvas
from matplotlib.ticker import MaxNLocator

from cnnstudy.report.compare import ArmLevels, LrSeries
from cnnstudy.report.groups import Group
from cnnstudy.report.stats import LayerRow, Summary


def colors_for(count: int):
    return colormaps["tab10" if count <= 10 else "tab20"]


def plot_curves(groups: list[Group], path: Path) -> bool:
    """Train loss and val accuracy per epoch: mean over completed seeds, band = min-max over seeds."""
    runs = [(g.label, [j.epochs for j in g.completed]) for g in groups if g.n]
    if max((len(e) for _, seeds in runs for e in seeds), default=0) < 2:
        return False
    fig = Figure(figsize=(12, 5), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    colors = colors_for(len(runs))
    for i, (name, seeds) in enumerate(runs):
        for ax, key, scale in ((loss_ax, "train_loss", 1), (acc_ax, "val_acc", 100)):
            per_epoch = defaultdict(list)  # seeds of a partial group may hold different numbers of epochs
            for epochs in seeds:
                for index, e in enumerate(epochs):
                    if e.get(key) is not None:
                        per_epoch[e.get("epoch", index) + 1].append(e[key] * scale)
            xs = sorted(per_epoch)
            ax.plot(xs, [statistics.fmean(per_epoch[x]) for x in xs], marker=".", color=colors(i), label=name)
            lo, hi = [min(per_epoch[x]) for x in xs], [max(per_epoch[x]) for x in xs]
            ax.fill_between(xs, lo, hi, color=colors(i), alpha=0.2, linewidth=0)
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.set(yscale="log", xlabel="epoch", ylabel="train loss (log)", title="train loss")
    acc_ax.set(xlabel="epoch", ylabel="val accuracy %", title="validation accuracy")
    acc_ax.legend(fontsize="small")
    fig.suptitle("mean over completed seeds; shaded band = min–max over seeds")
    fig.savefig(path, dpi=100)
    return True


def plot_means(ax, points: list[tuple[float, Summary | None]], color, label: str) -> None:
    """One line of accuracies in %: the mean at each x with a summary, error bar = std over seeds."""
    done = [(x, summary) for x, summary in points if summary is not None]
    means, stds = [s.mean * 100 for _, s in done], [(s.std or 0) * 100 for _, s in done]
    ax.errorbar([x for x, _ in done], means, yerr=stds, marker="o", capsize=3, color=color, label=label)


def plot_test_acc_vs_lr(series: list[LrSeries], path: Path) -> None:
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    colors = colors_for(len(series))
    for i, s in enumerate(series):
        plot_means(ax, [(p.lr, p.test_acc) for p in s.points], colors(i), s.label)
        diverged = [p.lr for p in s.points if p.diverged]
        # x in data, y in axes coordinates: the marker sits at the bottom whatever the accuracy range
        ax.plot(diverged, [0.03] * len(diverged), "x", color=colors(i), ms=9, mew=2, transform=ax.get_xaxis_transform())
    ax.plot([], [], "x", color="gray", label="diverged (≥ 1 seed)")
    ax.set(xscale="log", xlabel="learning rate", ylabel="test accuracy %")
    ax.set_title("test accuracy vs lr: mean over completed seeds, error bar = std")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def plot_test_acc_by_arm(levels: ArmLevels, path: Path) -> None:
    """Test accuracy against the setting a study's arms are levels of (e.g. the batch size), one line per
    combination of the other overrides."""
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    colors = colors_for(len(levels.lines))
    for i, (name, points) in enumerate(levels.lines.items()):
        plot_means(ax, [(x, g.stats.get("test_acc")) for x, g in points.items()], colors(i), name)
    values = sorted({x for points in levels.lines.values() for x in points})
    if all(isinstance(x, int | float) and x > 0 for x in values) and values[-1] >= 10 * values[0]:
        ax.set_xscale("log")
    ax.set_xticks(values, [str(x) for x in values])
    ax.set(xlabel=f"{levels.key} (set by {levels.arm})", ylabel="test accuracy %")
    ax.set_title("test accuracy: mean over completed seeds, error bar = std")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def plot_stability(series: list[LrSeries], threshold: float, path: Path) -> None:
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    for s in series:
        decided = [p for p in s.points if p.decided]
        ax.plot([p.lr for p in decided], [p.trained / p.decided for p in decided], marker="o", label=s.label)
    ax.set(xscale="log", ylim=(-0.05, 1.05), xlabel="learning rate", ylabel="fraction of seeds that still train")
    ax.set_title(f"still trains = completed with last val acc ≥ {threshold * 100:g}%; diverged = does not")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def common_steps(runs: list[dict], tags) -> list[int]:
    """The training steps at which every run has every tag."""
    return sorted(set.intersection(*(set(r.get(t, {})) for r in runs for t in tags)))


def plot_landscape(groups: list[Group], path: Path) -> bool:
    """Santurkar et al.'s three views over training steps, per group: the band spans the probed step sizes
    (min to max of the loss / gradient change, each averaged over seeds); beta-smoothness is the seeds' mean."""
    probed = [(g.label, [j.landscape for j in g.completed if j.landscape]) for g in groups]
    probed = [(name, runs) for name, runs in probed if runs]
    if not probed:
        return False
    fig = Figure(figsize=(16, 5), layout="constrained")
    axes = fig.subplots(1, 3)
    colors = colors_for(len(probed))
    views = (
        ("landscape/loss_min", "landscape/loss_max", "loss along the gradient", "loss variation"),
        ("landscape/grad_change_min", "landscape/grad_change_max", "‖∇L(θ−ηg) − g‖", "gradient predictiveness"),
    )
    for i, (name, runs) in enumerate(probed):
        for ax, (low, high, ylabel, title) in zip(axes, views, strict=False):
            xs = common_steps(runs, (low, high))
            lo = [statistics.fmean(r[low][x] for r in runs) for x in xs]
            hi = [statistics.fmean(r[high][x] for r in runs) for x in xs]
            ax.fill_between(xs, lo, hi, color=colors(i), alpha=0.35, linewidth=0, label=name)
            ax.set(xlabel="training step", ylabel=ylabel, title=title, yscale="log")
        beta = "landscape/beta_smoothness"
        xs = common_steps(runs, (beta,))
        axes[2].plot(xs, [statistics.fmean(r[beta][x] for r in runs) for x in xs], color=colors(i), label=name)
        axes[2].set(xlabel="training step", ylabel="max ‖Δ∇L‖ / ‖ηg‖", title="effective β-smoothness", yscale="log")
    axes[0].legend(fontsize="small")
    fig.suptitle("along the gradient at the probed step sizes η; band = min–max over η, mean over seeds")
    fig.savefig(path, dpi=100)
    return True


def plot_layer_stats(rows: list[LayerRow], groups: list[Group], path: Path) -> bool:
    """LayerStats' gradient norm and output std over the probed steps: a row of panels per group, a line per
    layer (the median over the group's completed and diverged jobs at each step any of them probed)."""
    labels = list(dict.fromkeys(x.label for x in rows))
    if not labels:
        return False
    by_label = {g.label: g for g in groups}
    layers = list(dict.fromkeys(x.layer for x in rows))
    colors = colors_for(len(layers))
    fig = Figure(figsize=(12, 3.2 * len(labels)), layout="constrained")
    axes = fig.subplots(len(labels), 2, squeeze=False, sharex=True, sharey="col")
    for (grad_ax, act_ax), name in zip(axes, labels, strict=True):
        jobs = [j.layer_stats for j in by_label[name].jobs if j.status in ("completed", "diverged") and j.layer_stats]
        for ax, prefix, ylabel in ((grad_ax, "grad_norm/", "‖∇W‖"), (act_ax, "act_std/", "std of the output")):
            for i, layer in enumerate(layers):
                per_step = defaultdict(list)
                for stats in jobs:
                    for step, value in stats.get(prefix + layer, {}).items():
                        per_step[step].append(value)
                xs = sorted(per_step)
                ax.plot(xs, [statistics.median(per_step[x]) for x in xs], color=colors(i), label=layer)
            ax.set(yscale="log", ylabel=ylabel, title=f"{name} (n = {len(jobs)})")
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    axes[0][0].legend(fontsize="small")
    fig.suptitle("per layer, median over jobs (LayerStats)")
    fig.savefig(path, dpi=100)
    return True


# What sets a run's training budget: series that differ only in these are one net at several budgets.
BUDGET_KEYS = ("trainer.max_epochs", "trainer.limit_train_batches", "trainer.max_steps")


def steps_of(series: LrSeries) -> float | None:
    """The optimizer steps a job of the series took (the median over its completed jobs)."""
    steps = [j.metrics.get("steps") for p in series.points for j in p.group.completed]
    steps = [s for s in steps if s is not None]
    return statistics.median(steps) if steps else None


def plot_edge_vs_budget(series: list[LrSeries], path: Path) -> bool:
    """The 50 % edge (with its interval) against the training budget, one line per series setup less the
    budget; False unless some setup was run at two or more budgets."""
    lines = defaultdict(list)
    for s in series:
        if s.setup is not None and s.edge is not None and (steps := steps_of(s)) is not None:
            setup = {k: v for k, v in s.setup.items() if k not in BUDGET_KEYS}
            lines[json.dumps(setup, sort_keys=True, default=str)].append((steps, s))
    lines = {key: sorted(points, key=lambda p: p[0]) for key, points in lines.items() if len(points) > 1}
    if not lines:
        return False
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    colors = colors_for(len(lines))
    for i, points in enumerate(lines.values()):
        inside = [(steps, s.edge) for steps, s in points if math.isfinite(s.edge.log_lr)]  # beyond a grid: no point
        edges = [10**edge.log_lr for _, edge in inside]
        # an interval end beyond the grid is drawn to the grid's end
        low = [e - max(10 ** edge.interval[0], edge.grid[0]) for e, (_, edge) in zip(edges, inside, strict=True)]
        high = [min(10 ** edge.interval[1], edge.grid[1]) - e for e, (_, edge) in zip(edges, inside, strict=True)]
        ax.errorbar([steps for steps, _ in inside], edges, yerr=[low, high], marker="o", capsize=3, color=colors(i))
        ax.lines[-1].set_label(points[0][1].label)
    ax.set(xscale="log", yscale="log", xlabel="training steps (budget)", ylabel="50 % edge: largest lr that trains")
    ax.set_title("50 % edge vs budget; bar: 95 % bootstrap interval (cut at the grid)", fontsize="medium")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return True
