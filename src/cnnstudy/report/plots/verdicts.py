"""A study's claims at a glance (verdicts.png): each claim's effect and interval, coloured by its verdict."""

from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cnnstudy.report.plots.style import OKABE_ITO, legend_outside, plain_log_labels

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
