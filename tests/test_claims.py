"""Claims as data: verdicts computed by the rule (Welch, TOST, slope, edge ratio; Holm over the family), the seeds
an unresolved claim needs, mistakes in a claims file, and the pages' verdict blocks against the archived records."""

import math
import re
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.power import TTestIndPower

from cnnstudy.errors import UserError
from cnnstudy.record import setup_identity
from cnnstudy.report import report
from cnnstudy.report.claims import best_in, load_claims
from cnnstudy.report.compare import lr_series
from cnnstudy.report.groups import build_groups
from cnnstudy.report.jobs import find_jobs
from cnnstudy.report.pages import BLOCK, DEFAULT_PAGES, main, pages, study_verdicts
from cnnstudy.report.plots.verdicts import plot_verdicts
from test_report import completed, write_job

from conftest import ROOT, run_cli

# seeds 0-2 of two groups: bn better by 3 points, an lr 1e-2 pair that differs by 0.5 points
ACCS = {
    ("bn", "1e-3"): [0.970, 0.975, 0.980],
    ("nobn", "1e-3"): [0.940, 0.945, 0.950],
    ("bn", "1e-2"): [0.950, 0.960, 0.970],
    ("nobn", "1e-2"): [0.945, 0.965, 0.955],
}

CLAIMS = """
source: a test
claims:
  - {name: bn_better, says: BN is better, test: difference, a: {model: bn, optim.lr: 1e-3},
     b: {model: nobn, optim.lr: 1e-3}, expect: greater}
  - {name: same_at_high, says: equal at 1e-2, test: equivalence, margin: 0.02, a: {model: bn, optim.lr: 0.01},
     b: {model: nobn, optim.lr: 0.01}, expect: equivalent}
  - {name: tiny_gap, says: BN is better at 1e-2, test: difference, a: {model: bn, optim.lr: 0.01},
     b: {model: nobn, optim.lr: 0.01}, expect: greater}
  - {name: book_number, says: the book's 97.5 %, test: value, value: 0.975, margin: 0.01,
     a: {model: bn, optim.lr: 0.001}, expect: equivalent}
"""


@pytest.fixture
def sweep(tmp_path) -> Path:
    number = 0
    for (model, lr), accs in ACCS.items():
        for seed, acc in enumerate(accs):
            write_job(
                tmp_path / "sweep", number, [f"model={model}", f"optim.lr={lr}", f"seed={seed}"], **completed(acc, seed)
            )
            number += 1
    (tmp_path / "claims.yaml").write_text(CLAIMS)
    return tmp_path / "sweep"


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out: the k-th smallest p times (m - k), made monotone."""
    order, adjusted, running = sorted(range(len(ps)), key=lambda i: ps[i]), [0.0] * len(ps), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, ps[i] * (len(ps) - k)))
        adjusted[i] = running
    return adjusted


def test_verdicts_follow_the_rule_with_holm_over_the_family(sweep):
    verdicts = {v.claim.name: v for v in report(sweep, claims=sweep.parent / "claims.yaml").verdicts}
    bn, nobn = ACCS["bn", "1e-3"], ACCS["nobn", "1e-3"]
    welch = scipy_stats.ttest_ind(bn, nobn, equal_var=False)
    better = verdicts["bn_better"]
    assert better.p == pytest.approx(welch.pvalue, rel=1e-9)
    assert better.effect == pytest.approx(0.03)
    low, high = better.interval  # Welch's 95 % interval: mean difference ± t(df) * se
    se = math.sqrt(statistics.variance(bn) / 3 + statistics.variance(nobn) / 3)
    assert (high - low) / 2 == pytest.approx(scipy_stats.t.ppf(0.975, welch.df) * se, rel=1e-6)
    tested = [verdicts[name] for name in ("bn_better", "same_at_high", "tiny_gap", "book_number")]
    assert [v.p_adjusted for v in tested] == pytest.approx(holm([v.p for v in tested]), rel=1e-9)
    assert (better.words, better.outcome) == ("better", "reproduced")
    # equal within 2 points: TOST's two one-sided tests at the margin, the larger p decides
    same = verdicts["same_at_high"]
    x, y = ACCS["bn", "1e-2"], ACCS["nobn", "1e-2"]
    lower = scipy_stats.ttest_ind([v + 0.02 for v in x], y, equal_var=False, alternative="greater").pvalue
    upper = scipy_stats.ttest_ind([v - 0.02 for v in x], y, equal_var=False, alternative="less").pvalue
    assert same.p == pytest.approx(max(lower, upper), rel=1e-6)
    # TOST at 5 % rejects exactly when the 90 % interval lies inside the margin
    assert same.level == 90 and (-0.02 < same.interval[0] and same.interval[1] < 0.02) == (same.p < 0.05)
    tiny = verdicts["tiny_gap"]
    assert tiny.words == "not resolved at n = 3 vs 3" and tiny.outcome == "not resolved"
    # the seeds per side at which Welch would have 80 % power, at the family's Bonferroni level
    d = abs(tiny.effect) / math.sqrt((statistics.variance(x) + statistics.variance(y)) / 2)
    needed = max(4, math.ceil(TTestIndPower().solve_power(effect_size=d, alpha=0.05 / 4, power=0.8)))
    assert tiny.seeds_needed == str(needed)  # and never the seeds that ran, which did not resolve it
    new_seeds = f"'seed=range(3,{needed})'"  # Hydra's range: seeds 3 to needed - 1
    assert tiny.commands[0].endswith(f"model=bn optim.lr=1e-2 {new_seeds} hydra.sweep.dir=multirun/seeds_tiny_gap")
    book = verdicts["book_number"]
    assert book.effect == pytest.approx(0.0) and book.n == (3,)
    assert book.words == ("equivalent within ±1.00 points" if book.p_adjusted < 0.05 else "not resolved at n = 3")


def test_an_equivalence_beyond_its_margin_is_tested_for_a_larger_difference(sweep):
    """bn is 3 points above nobn: 'the same within 1 point' is then asked the other way round, one-sided against
    the nearer bound and doubled (its side was picked after looking)."""
    path = sweep.parent / "beyond.yaml"
    path.write_text(
        "claims:\n  - {name: same, says: equal, test: equivalence, margin: 0.01, a: {model: bn, optim.lr: 1e-3},"
        " b: {model: nobn, optim.lr: 1e-3}, expect: equivalent}\n"
    )
    (verdict,) = report(sweep, claims=path).verdicts
    x, y = ACCS["bn", "1e-3"], ACCS["nobn", "1e-3"]
    one_sided = scipy_stats.ttest_ind([v - 0.01 for v in x], y, equal_var=False, alternative="greater").pvalue
    assert verdict.p == pytest.approx(min(1, 2 * one_sided), rel=1e-6)
    assert (verdict.words, verdict.outcome) == ("differs by more than ±1.00 points", "contradicted")


def test_the_report_opens_with_the_verdicts(sweep):
    text = Path(report(sweep, claims=sweep.parent / "claims.yaml").report).read_text()
    verdicts = text.split("## Verdicts")[1].split("## Results per group")[0]
    row = next(line for line in verdicts.splitlines() if line.startswith("| **bn_better**"))
    assert "+3.00 [95 %:" in row and "| **better** | reproduced |" in row
    assert "Holm's correction" in verdicts and "its 4 tested claims" in verdicts


def test_the_verdicts_figure_draws_each_claims_effect_and_interval(sweep, tmp_path):
    result = report(sweep, claims=sweep.parent / "claims.yaml")
    assert result.plots[0] == "verdicts.png"  # the figure a study's page opens with
    fig = plot_verdicts(result.verdicts, tmp_path / "verdicts.png")
    assert len(fig.axes) == 2  # differences between groups, and the source's number: two panels
    drawn = {}
    for ax in fig.axes:
        names = [t.get_text() for t in ax.get_yticklabels()]
        for line in ax.get_lines():
            xs, ys = line.get_xdata(), line.get_ydata()
            if len(xs) == 2 and ys[0] == ys[1]:  # an interval
                drawn.setdefault(names[int(ys[0])], {})["interval"] = tuple(xs)
            elif len(xs) == 1:  # an effect: filled where resolved
                resolved = line.get_markerfacecolor() != "white"
                drawn.setdefault(names[int(ys[0])], {}).update(effect=xs[0], resolved=resolved)
    for v in result.verdicts:
        assert drawn[v.claim.name]["effect"] == pytest.approx(v.effect * 100)
        assert drawn[v.claim.name]["interval"] == pytest.approx(tuple(x * 100 for x in v.interval))
        assert drawn[v.claim.name]["resolved"] == (not v.words.startswith("not resolved"))


def test_a_trend_is_the_least_squares_slope(tmp_path):
    sizes = {2: [0.60, 0.62], 8: [0.64, 0.66], 32: [0.68, 0.70]}  # +0.02 per doubling
    number = 0
    for size, accs in sizes.items():
        for seed, acc in enumerate(accs):
            overrides = ["model=bn", f"data.batch_size={size}", f"seed={seed}"]
            write_job(tmp_path / "sweep", number, overrides, **completed(acc, seed))
            number += 1
    (tmp_path / "claims.yaml").write_text(
        "claims:\n  - {name: up, says: more is better, test: trend, over: data.batch_size, scale: log2,"
        " a: {model: bn}, expect: increasing}\n"
    )
    (verdict,) = report(tmp_path / "sweep", claims=tmp_path / "claims.yaml").verdicts
    assert verdict.effect == pytest.approx(0.02) and verdict.n == (6,)
    assert (verdict.words, verdict.outcome) == ("increasing", "reproduced")


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "claims, message",
    [
        ("claims: [{name: x, says: y, test: ttest}]", "test 'ttest' is not one of difference"),
        ("claims: [{name: x, says: y, test: difference, colour: red}]", "unexpected keyword argument 'colour'"),
        ("claims: [{name: x, says: y, test: equivalence}]", "equivalence needs a margin"),
        ("claim: []", "unknown key(s) claim"),
        (
            "claims: [{name: x, says: y, test: difference, a: {optim.lr: 1e-3}, b: {model: bn}}]",
            "claim x: {'optim.lr': '1e-3'} matches 2 groups (`model=bn optim.lr=1e-3`; `model=nobn optim.lr=1e-3`)",
        ),
    ],
)
def test_claims_file_mistakes_are_one_line(sweep, claims, message):
    path = sweep.parent / "bad.yaml"
    path.write_text(claims)
    with pytest.raises(UserError, match=re.escape(message)):
        report(sweep, claims=path)
    result = run_cli("cnnstudy.report", str(sweep), "--claims", str(path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_a_claim_whose_groups_did_not_run_has_no_verdict(sweep):
    """A slice of a study reported on its own: the claims about the other slices say so, and are no test."""
    path = sweep.parent / "slice.yaml"
    path.write_text(CLAIMS + "  - {name: later, says: z, test: difference, a: {model: bn, optim.lr: 0.1}, b: {}}\n")
    verdicts = report(sweep, claims=path).verdicts
    assert verdicts[-1].words == "not in these records (no group has {'model': 'bn', 'optim.lr': 0.1})"
    assert verdicts[-1].p is None and [v.p_adjusted is not None for v in verdicts] == [True] * 4 + [False]


def test_every_committed_claims_file_loads():
    for path in sorted((ROOT / "conf" / "claims").glob("*.yaml")):
        assert load_claims(path).claims, path


def test_pages_state_the_verdicts_their_records_give(monkeypatch, capsys):
    """Each verdict block of README.md and docs/results/*.md is what the archived records give now."""
    monkeypatch.chdir(ROOT)
    main(["--check"])  # exits 1, naming the page, where a block differs
    assert capsys.readouterr().out == ""
    for page in pages(list(DEFAULT_PAGES)):
        assert "not in these records" not in page.read_text(), page


# A verdict's words and p-values stand only in generated blocks; the prose around them may interpret.
VERDICT_IN_PROSE = re.compile(r"\breproduced\b|\bp [=<] ?\d|\bp ≤ ?\d", re.I)


def test_no_page_states_a_verdict_outside_its_generated_blocks():
    assert pages([str(ROOT / p) for p in DEFAULT_PAGES]), "no page has a verdict block"
    for page in [ROOT / "README.md", *sorted((ROOT / "docs" / "results").glob("*.md"))]:
        prose = BLOCK.sub("", page.read_text())
        found = [line for line in prose.splitlines() if VERDICT_IN_PROSE.search(line)]
        assert not found, f"{page.name}: verdicts written by hand: {found[:3]}"


def test_the_edge_claim_states_its_threshold_sensitivity():
    records = ROOT / "docs" / "results" / "bn_lr_cifar"

    _, verdicts, threshold = study_verdicts([records], ROOT / "conf" / "claims" / "bn_lr_cifar.yaml")
    edge = next(v for v in verdicts if v.claim.name == "larger_lr")
    assert threshold == 0.5 and 10**edge.effect == pytest.approx(0.806, abs=0.001)
    assert edge.interval[0] < 0 < edge.interval[1] and edge.words == "not resolved at n = 30 vs 30"
    by_threshold = {t: side for t, _, side in edge.sensitivity}
    assert by_threshold[0.6] == -1 and by_threshold[0.3] == 0  # resolved smaller at 60 %, not at 30 %
    assert np.isfinite(edge.p) and 0 < edge.p <= 1


def test_the_readme_tally_counts_each_study_page_verdict_tables():
    """The README's table of studies: each row's counts are the outcome column of its page's verdict tables, read
    back from the pages' text (a claim with no side expected, `–` there, counts by its verdict's words)."""
    tally = next(m["body"] for m in BLOCK.finditer((ROOT / "README.md").read_text()) if m["spec"].endswith(" tally"))
    rows = {row.split("](")[0].removeprefix("| ["): row.split(" | ") for row in tally.splitlines()[2:]}
    assert {"lr_range", "init_sensitivity", "norm_batch_size", "precision"} <= set(rows)
    for study, cells in rows.items():
        outcomes, own = [], []
        for body in (m["body"] for m in BLOCK.finditer((ROOT / "docs" / "results" / f"{study}.md").read_text())):
            for line in (line for line in body.splitlines() if line.startswith("| **")):
                *_, words, outcome = (cell.strip() for cell in line.strip().strip("|").split(" | "))
                (own if outcome == "–" else outcomes).append(words if outcome == "–" else outcome)
        sources = " · ".join(str(outcomes.count(k)) for k in ("reproduced", "contradicted", "not resolved"))
        unresolved = sum(w.startswith("**not resolved") for w in own)
        assert (cells[2], cells[3].rstrip(" |")) == (sources, f"{len(own) - unresolved} · {unresolved}"), study


def test_records_from_before_a_key_existed_join_the_lr_series_of_new_ones():
    """init_sensitivity's lr 0.01 runs were recorded before `model.noise_kind` and its siblings existed; BN at init
    scale 2 at lr 0.02 and 0.04 was recorded after. They are one lr series (the keys' values are the ones every
    earlier run ran as, record.ADDED_KEYS), while a run at another value of such a key stays apart."""
    groups, common = build_groups(find_jobs(ROOT / "docs/results/init_sensitivity"))
    (bn_at_2,) = [
        s
        for s in lr_series(groups, common, 0.5)
        if s.setup["model.init_scale"] == 2.0 and s.setup["model.norm"] == "bn"
    ]
    assert [p.lr for p in bn_at_2.points] == [0.01, 0.02, 0.04] and bn_at_2.best.lr == 0.02
    old = next(g for g in groups if g.lr == 0.01).jobs[0].config
    assert "noise_kind" not in old["model"] and setup_identity(old)["model"]["noise_kind"] == "channel"
    assert setup_identity(old) != setup_identity(old | {"model": old["model"] | {"noise_kind": "activation"}})
    assert "lr_at_batch_128" not in old and setup_identity(old)["lr_at_batch_128"] == 0.01  # a top-level key
    assert setup_identity(old) != setup_identity(old | {"lr_at_batch_128": 0.03})


def test_the_tuned_runs_of_norm_batch_size_join_the_rule_runs_as_an_lr_series_per_norm_and_batch():
    """norm_batch_size's lr follows the batch from lr_at_batch_128; the rule's runs (0.01, recorded before the key
    existed) and the tuned runs (0.003, 0.03, 0.1) are one series per norm and batch, its lrs each batch's rule
    lr times 0.3, 1, 3 and 10. The re-estimated-statistics arms, and the net without a norm (no tuned
    claim reads it), ran at the rule's lr only: no series. Seeds 3-5 ran at the rule's lr for BN and GN at batch 32
    and GN at 128, the claims that 3 seeds left closest (seeds_b32, seeds_b128)."""
    groups, common = build_groups(find_jobs(ROOT / "docs/results/norm_batch_size"))
    series = lr_series(groups, common, 0.5)
    found = {(s.points[0].group.setup["model.norm"], s.points[0].group.setup["data.batch_size"]): s for s in series}
    assert len(series) == len(found) == 15 and {norm for norm, _ in found} == {"bn", "gn", "ln"}
    rules = (0.003, 0.01, 0.03, 0.1)
    more_seeds = {("bn", 32), ("gn", 32), ("gn", 128)}
    for (norm, batch), one in found.items():
        assert [p.lr for p in one.points] == pytest.approx([f * batch / 128 for f in rules])
        at_rule = 6 if (norm, batch) in more_seeds else 3
        assert [p.group.n for p in one.points] == [3, at_rule, 3, 3]


def test_a_seed_archived_in_two_studies_counts_once():
    """bn_lr_cifar's lr 0.01 runs are init_sensitivity's scale-1 runs again (same setup, seeds 0-2): read together,
    each seed is one draw, the first folder's."""
    folders = [ROOT / "docs/results/init_sensitivity", ROOT / "docs/results/bn_lr_cifar"]
    own, _ = build_groups(find_jobs(folders[0]))
    both, _ = build_groups([job for folder in folders for job in find_jobs(folder)])

    def at_scale_1(groups):
        return next(
            g for g in groups if g.setup["model.norm"] == "bn" and g.setup["model.init_scale"] == 1.0 and g.lr == 0.01
        )

    assert sorted(at_scale_1(both).seeds) == [0, 1, 2]
    assert at_scale_1(both).stats["test_acc"].values == at_scale_1(own).stats["test_acc"].values
    bn_at_1 = [g.lr for g in both if g.setup["model.init_scale"] == 1.0 and g.setup["model.norm"] == "bn"]
    assert sorted(bn_at_1) == [0.003, 0.01, 0.03, 0.1, 0.178, 0.3, 1.0, 3.0]  # one group at 0.01, from both


def test_a_best_lr_at_an_end_of_its_grid_says_so():
    groups, common = build_groups(find_jobs(ROOT / "docs/results/init_sensitivity"))
    (bn_at_2,) = [
        s
        for s in lr_series(groups, common, 0.5)
        if s.setup["model.init_scale"] == 2.0 and s.setup["model.norm"] == "bn"
    ]
    assert best_in(bn_at_2) == "0.02"  # 0.01 and 0.04 on either side
    assert best_in(replace(bn_at_2, points=bn_at_2.points[:2])) == "0.02 (the grid's largest)"
    assert best_in(replace(bn_at_2, points=bn_at_2.points[1:])) == "0.02 (the grid's smallest)"


@pytest.mark.parametrize(
    ("scale", "norm", "lrs", "seeds"),
    [
        (0.1, "bn", [0.001, 0.003, 0.01, 0.03], [3, 3, 3, 3]),
        (0.1, "none", [0.003, 0.01, 0.03, 0.1], [3, 3, 3, 3]),
        (0.5, "bn", [0.003, 0.01, 0.03], [3, 3, 3]),
        (0.5, "none", [0.003, 0.01, 0.03, 0.1], [3, 3, 3, 2]),  # at 0.1 seed 2 diverged: a group holds completed runs
    ],
)
def test_the_small_init_scales_are_tuned_over_half_decades(scale, norm, lrs, seeds):
    """init_sensitivity's tuned slices at scales 0.1 and 0.5 join the shared-lr runs at 0.01: each net's series,
    widened by a half-decade where the best of 0.003-0.03 was at an end (tuned_small_wider_*)."""
    groups, common = build_groups(find_jobs(ROOT / "docs/results/init_sensitivity"))
    (series,) = [
        s
        for s in lr_series(groups, common, 0.5)
        if s.setup["model.init_scale"] == scale and s.setup["model.norm"] == norm
    ]
    assert [point.lr for point in series.points] == lrs
    assert [len(point.group.seeds) for point in series.points] == seeds
