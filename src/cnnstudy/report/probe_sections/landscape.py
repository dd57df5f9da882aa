"""The report's sections for probed sweeps: the LandscapeProbe's landscape table and LayerStats' per-layer norms,
each with BN against no BN per pair of groups."""

import math

from cnnstudy.report.cells import fmt, md_table, pair, test_text
from cnnstudy.report.compare import GroupComparison
from cnnstudy.report.stats import LANDSCAPE_COLUMNS, LAYER_COLUMNS, LandscapeRow, LayerRow, welch


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
