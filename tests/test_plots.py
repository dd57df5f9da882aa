"""The report's plots, read back from the matplotlib Figures: the values drawn are the report's numbers, one
panel per level of a study's facet setting, every seed drawn, at most MAX_LINES lines a panel, legends outside
the data. On the archived records of norm_batch_size (norm x batch size, 3-6 seeds) and dlwpt_ch8 (10 arms)."""

import itertools
import statistics
from pathlib import Path

import pytest
from matplotlib.colors import to_hex

from cnnstudy.report.compare import arm_levels, lr_series, one_factor
from cnnstudy.report.groups import build_groups
from cnnstudy.report.jobs import find_jobs
from cnnstudy.report.plots.curves import MAX_LINES, plot_curves
from cnnstudy.report.plots.lr import plot_test_acc_by_arm, plot_test_acc_vs_lr
from cnnstudy.report.plots.style import NORM_COLORS, line_styles

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
NORMS = ["bn", "gn", "ln", "none"]
BATCHES = ["b2", "b4", "b8", "b32", "b128"]


def report_table(study: str) -> dict[str, list[str]]:
    """The committed report's "Results per group" table: group -> its cells."""
    table = (RESULTS / study / "report.md").read_text().split("## Results per group")[1].split("\n## ")[0]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| arm")
    ]
    return {row[0]: row for row in rows}


def mean_and_std(cell: str) -> tuple[float, float]:
    mean, std = cell.split(" ± ")
    return float(mean), float(std)


def lines_by_gid(ax) -> dict[str, list]:
    found = {}
    for line in ax.get_lines():
        if line.get_gid():
            found.setdefault(line.get_gid(), []).append(line)
    return found


@pytest.fixture(scope="module")
def norm_batch_size():
    groups, _ = build_groups(find_jobs(RESULTS / "norm_batch_size"))
    # the grid at the rule's lr: BN's re-estimated arms and the tuned lrs (lr_at_batch_128) are side studies
    return [g for g in groups if "_recal" not in g.label and g.setup["lr_at_batch_128"] == 0.01]


def legend_is_outside_every_panel(fig) -> bool:
    fig.canvas.draw()
    legend = (fig.legends or [ax.get_legend() for ax in fig.axes if ax.get_legend()])[0].get_window_extent()
    return not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)


def test_curves_are_one_panel_per_norm_and_draw_the_reports_numbers_and_every_seed(norm_batch_size, tmp_path):
    fig = plot_curves(norm_batch_size, tmp_path / "curves.png")
    loss_axes, acc_axes = fig.axes[:4], fig.axes[4:]
    assert [ax.get_title() for ax in loss_axes] == [f"model.norm={norm}" for norm in NORMS]
    table = report_table("norm_batch_size")
    colors = {}
    for norm, loss_ax, acc_ax in zip(NORMS, loss_axes, acc_axes, strict=True):
        loss_lines, acc_lines = lines_by_gid(loss_ax), lines_by_gid(acc_ax)
        assert len([gid for gid in loss_lines if gid.endswith("|mean")]) == len(BATCHES) <= MAX_LINES
        for batch in BATCHES:
            group = f"arm/norm_batch_size={batch} model.norm={norm}"
            (mean,) = loss_lines[f"{group}|mean"]
            seeds = loss_lines[f"{group}|seed"]
            assert list(mean.get_xdata()) == [1, 2, 3, 4, 5] and len(seeds) == int(table[group][1])  # its n
            # the last epoch's mean and the seeds' std are the report's "last-epoch train loss" cell, the first
            # epoch's its "epoch-1 train loss"
            for epoch, column in ((-1, 5), (0, 3)):
                seed_values = [line.get_ydata()[epoch] for line in seeds]
                assert (round(mean.get_ydata()[epoch], 4), round(statistics.stdev(seed_values), 4)) == mean_and_std(
                    table[group][column]
                )
                assert mean.get_ydata()[epoch] == pytest.approx(statistics.fmean(seed_values))
            # validation accuracy in %: each seed's curve is drawn, the best of its epochs averages to "best val acc"
            best = statistics.fmean(max(line.get_ydata()) for line in acc_lines[f"{group}|seed"])
            assert round(best, 2) == mean_and_std(table[group][7])[0]
            colors.setdefault(batch, set()).add(to_hex(mean.get_color()))
    # a batch size has one colour in every panel, and the five are five colours
    assert all(len(c) == 1 for c in colors.values()) and len({c.pop() for c in colors.values()}) == len(BATCHES)
    assert legend_is_outside_every_panel(fig)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [*BATCHES, "one seed"]  # in batch order


def test_test_accuracy_by_batch_size_draws_each_seed_beside_the_mean(norm_batch_size, tmp_path):
    fig = plot_test_acc_by_arm(arm_levels(one_factor(norm_batch_size)), tmp_path / "test_acc_by_arm.png")
    (ax,) = fig.axes
    lines = lines_by_gid(ax)
    table = report_table("norm_batch_size")
    for norm in NORMS:
        (mean,) = lines[f"model.norm={norm}|mean"]
        (seeds,) = lines[f"model.norm={norm}|seeds"]
        assert to_hex(mean.get_color()) == to_hex(NORM_COLORS[norm])  # a norm's colour in every figure
        rows = [table[f"arm/norm_batch_size={batch} model.norm={norm}"] for batch in BATCHES]
        ends = list(itertools.accumulate(int(row[1]) for row in rows))  # each batch's seeds, in batch order
        assert len(seeds.get_xdata()) == ends[-1]
        for i, (start, end) in enumerate(itertools.pairwise([0, *ends])):
            x, values = mean.get_xdata()[i], seeds.get_ydata()[start:end]
            assert [2, 4, 8, 32, 128][i] / 1.2 < x < [2, 4, 8, 32, 128][i] * 1.2  # moved sideways, not to another x
            assert all(seed_x > x for seed_x in seeds.get_xdata()[start:end])  # beside it, to its right
            cell = mean_and_std(rows[i][8])
            assert (round(mean.get_ydata()[i], 2), round(statistics.stdev(values), 2)) == cell
    assert legend_is_outside_every_panel(fig)


def test_an_ablation_of_many_arms_is_split_into_panels_with_the_first_arm_as_reference(tmp_path):
    groups, _ = build_groups(find_jobs(RESULTS / "dlwpt_ch8"))
    assert len(groups) == 10
    fig = plot_curves(groups, tmp_path / "curves.png")
    loss_axes = fig.axes[: len(fig.axes) // 2]
    drawn = [[gid.removesuffix("|mean") for gid in lines_by_gid(ax) if gid.endswith("|mean")] for ax in loss_axes]
    assert all(len(panel) <= MAX_LINES and panel[0] == "arm/dlwpt_ch8=net" for panel in drawn)
    assert sorted({label for panel in drawn for label in panel}) == sorted(g.label for g in groups)
    assert legend_is_outside_every_panel(fig)


def test_line_styles_colour_one_setting_and_dash_the_other():
    styles, title = line_styles(["model=bn optim=adam", "model=bn optim=sgd", "model=nobn optim=adam"])
    assert title == "model / optim"
    assert [styles[k]["color"] for k in styles] == [NORM_COLORS["bn"], NORM_COLORS["bn"], NORM_COLORS["nobn"]]
    assert [styles[k]["linestyle"] for k in styles] == ["-", "--", "-"]
    # numbered levels in numeric order, each its own colour
    ordered, _ = line_styles([f"model.init_scale={s}" for s in ("5.0", "0.1", "1.0")])
    assert [s["label"] for s in ordered.values()] == ["0.1", "1.0", "5.0"]
    assert len({to_hex(s["color"]) for s in ordered.values()}) == 3


def test_accuracy_vs_lr_rings_each_series_best_lr_chosen_on_validation(tmp_path):
    """bn_lr_cifar (BN and no BN over 7 lrs, 3 seeds): each series' ring sits at the lr whose mean best val acc is
    the highest, at that lr's mean test acc; the error bars stay within 0-100 % where seeds sit at chance."""
    groups, common = build_groups(find_jobs(RESULTS / "bn_lr_cifar"))
    series = lr_series(groups, common, 0.5)
    fig = plot_test_acc_vs_lr(series, tmp_path / "test_acc_vs_lr.png")
    lines = {gid: found for ax in fig.axes for gid, found in lines_by_gid(ax).items()}
    assert len(series) == 2
    for s in series:
        val = {p.lr: p.group.stats["best_val_acc"].mean for p in s.points if p.group.n == len(p.group.jobs)}
        best_lr = max(val, key=val.get)
        best = next(p for p in s.points if p.lr == best_lr)
        (ring,) = lines[f"{s.label}|best"]
        assert best_lr / 1.2 < ring.get_xdata()[0] < best_lr * 1.2
        assert ring.get_ydata()[0] == pytest.approx(best.test_acc.mean * 100)
    for ax in fig.axes:
        for collection in ax.collections:  # the error bars
            for segment in collection.get_segments():
                assert all(-1e-9 <= y <= 100 + 1e-9 for _, y in segment)
    assert "best lr, chosen on val acc" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_val_accuracy_near_100_is_spaced_by_its_error_so_one_arms_dip_does_not_squash_the_rest(tmp_path):
    """deeper_cnn: six arms end at 98-99 % and bn_gap dips to 79 %; on the error's log scale 98 to 99 % takes a
    sixth of the panel or more (under a twentieth on a linear axis down to 79 %), and the values are unchanged."""
    groups, _ = build_groups(find_jobs(RESULTS / "deeper_cnn"))
    fig = plot_curves(groups, tmp_path / "curves.png")
    acc_ax = fig.axes[1]
    to_axes = acc_ax.transScale + acc_ax.transLimits  # data -> 0..1 of the panel's height
    (_, at_98), (_, at_99) = to_axes.transform([(1, 98.0), (1, 99.0)])
    assert acc_ax.get_yscale() == "function" and at_99 - at_98 > 1 / 6
    (gap,) = lines_by_gid(acc_ax)["arm/deeper_cnn=bn_gap|mean"]
    assert 75 < min(gap.get_ydata()) < 80 and acc_ax.get_ylim()[0] < min(gap.get_ydata())
