"""How the plots look, shared by all of them: a study's settings read from its labels, and the colour, marker
and line style of each.

Within a panel the colour follows one setting: a normalisation has the same colour in every figure (NORM_COLORS),
an ordered setting (lr, init scale, batch size) a sequential colour map, anything else the Okabe-Ito palette;
line style follows the remaining settings. Legends sit outside the data, every seed is drawn beside its mean
(thin lines on the curves, hollow points on the accuracy plots), and no panel holds more than MAX_LINES lines
(cnnstudy.report.plots.curves).
"""

import math
import re

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure  # pyplot-free: no global state; PNGs are drawn by the Agg canvas
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

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


def legend_outside(fig: Figure, handles: list, title: str, note: Line2D | None = None) -> None:
    """One legend for the whole figure, right of the panels (constrained layout makes room for it)."""
    handles = [*handles, note] if note else handles
    fig.legend(handles=handles, loc="outside right center", fontsize="small", title=title, title_fontsize="small")


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
