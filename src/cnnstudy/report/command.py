"""Summarise a sweep: `python -m cnnstudy.report multirun/<dir> [--trains-above 0.9]`, or `--latest`.

Reads every job's metrics.json under the dir and groups jobs whose resolved configs differ only in the
seed (and run-time keys). Writes into the dir report.md (one `mean ± std` row per group, over its completed
seeds; std is the sample std, ddof=1), the BN vs no-BN comparisons with the config keys that differ, and,
where they make sense, PNG plots: curves.png (>= 2 epochs), test_acc_vs_lr.png and stability.png (an lr
series: groups that differ only in the lr). Jobs that are running, diverged, failed, unreadable or have no
metrics.json yet are listed in the report, never counted in the means and never dropped silently.

A job "still trains" at a learning rate if it completed and its last-epoch val_acc >= --trains-above.
Diverged jobs count as not training; failed and running jobs are left out of that fraction (their
outcome says nothing about the learning rate yet).

Jobs run with probes get each probe's section (cnnstudy.report.probe_sections, from each job's probes.json):
with `probes=bn` landscape.png and a table of the LandscapeProbe's numbers (loss variation, gradient
predictiveness and effective beta-smoothness along the gradient, per group, as in Santurkar et al. 2018); with
LayerStats (`probes=bn` or `probes=layer_stats`) layer_stats.png and a table of each layer's gradient norm and
output std; with `probes=ioffe` step_curves.png and step_curves.md (Ioffe & Szegedy's figure 1).

`--archive DEST` first copies the sweep's records (metrics.json, overrides, multirun.yaml; no checkpoints or
events) to DEST/<sweep name>/, then reports on DEST: the slices of a study run in separate sittings, and the
records behind docs/results/, are reported as one.
"""

import argparse
from collections import Counter
from pathlib import Path

from cnnstudy.errors import UserError, fail
from cnnstudy.record import METRICS_FILE
from cnnstudy.report.cells import fmt
from cnnstudy.report.claims import claims_for, load_claims
from cnnstudy.report.compare import SeriesComparison, arm_levels, comparisons, lr_series, one_factor
from cnnstudy.report.dashboard import write_dashboard
from cnnstudy.report.groups import build_groups
from cnnstudy.report.jobs import MULTIRUN, archive, find_jobs, latest_sweep, sweep_commands
from cnnstudy.report.markdown import REPORT_FILE, Report, write_markdown
from cnnstudy.report.plots.curves import plot_curves
from cnnstudy.report.plots.lr import plot_edge_vs_budget, plot_stability, plot_test_acc_by_arm, plot_test_acc_vs_lr
from cnnstudy.report.plots.verdicts import plot_verdicts
from cnnstudy.report.probe_sections import probe_sections
from cnnstudy.report.verdicts import evaluate


def report(sweep_dir: Path, trains_above: float | None = None, claims: Path | None = None) -> Report:
    """Write report.md, the plots and tb_summary/ into `sweep_dir`; returns the numbers behind them.

    `claims` is the study's claims file (default: conf/claims/<experiment>.yaml when there is one); its
    `trains_above` is the threshold unless one is given here (else 0.9)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a folder")
    if next(sweep_dir.rglob(METRICS_FILE), None) is None:
        raise FileNotFoundError(f"no {METRICS_FILE} under {sweep_dir}")
    jobs = find_jobs(sweep_dir)
    groups, common = build_groups(jobs)
    claim_set = load_claims(claims) if (claims := claims or claims_for(groups, sweep_dir)) else None
    if trains_above is None:
        trains_above = (claim_set and claim_set.trains_above) or 0.9
    series = lr_series(groups, common, trains_above)
    result = Report(
        dir=str(sweep_dir),
        commands=sweep_commands(sweep_dir),
        counts=dict(Counter(j.status for j in jobs).most_common()),
        groups=groups,
        common=common,
        not_finished=[j for j in jobs if not j.completed],
        lr_series=series,
        comparisons=comparisons(groups),
        series_comparisons=comparisons(series, SeriesComparison),
        one_factor=one_factor(groups),
        plots=[],
        claims=claim_set,
        verdicts=evaluate(claim_set, groups, common, trains_above) if claim_set else [],
        trains_above=trains_above,
    )
    if plot_verdicts(result.verdicts, sweep_dir / "verdicts.png"):
        result.plots.append("verdicts.png")
    if plot_curves(groups, sweep_dir / "curves.png"):
        result.plots.append("curves.png")
    if series:
        plot_test_acc_vs_lr(series, sweep_dir / "test_acc_vs_lr.png")
        plot_stability(series, trains_above, sweep_dir / "stability.png")
        result.plots += ["test_acc_vs_lr.png", "stability.png"]
        if plot_edge_vs_budget(series, sweep_dir / "edge_vs_budget.png"):
            result.plots.append("edge_vs_budget.png")
    if levels := arm_levels(result.one_factor):
        plot_test_acc_by_arm(levels, sweep_dir / "test_acc_by_arm.png")
        result.plots.append("test_acc_by_arm.png")
    result.probe_sections = probe_sections(groups, result.comparisons, sweep_dir)
    result.plots += [plot for section in result.probe_sections for plot in section.plots]
    write_dashboard(sweep_dir, groups, common)
    result.report = write_markdown(sweep_dir, result)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cnnstudy.report", description=__doc__.split("\n")[0])
    parser.add_argument("dir", nargs="?", type=Path, help="a sweep folder, e.g. multirun/<timestamp>")
    parser.add_argument("--latest", action="store_true", help=f"the newest sweep under {MULTIRUN}/")
    parser.add_argument(
        "--trains-above", type=float, help="last val acc that counts as training (default: the claims file's, or 0.9)"
    )
    parser.add_argument("--claims", type=Path, help="the study's claims file (default: conf/claims/<experiment>.yaml)")
    parser.add_argument(
        "--archive", type=Path, metavar="DEST", help="copy the sweep's records to DEST/<sweep name>/ and report on DEST"
    )
    parser.error = fail  # a bad option: one line on stderr and exit 2, as every cnnstudy mistake
    args = parser.parse_args(argv)
    if (args.dir is None) == (not args.latest):
        fail("give a sweep folder or --latest (one of them)")
    try:
        sweep_dir = latest_sweep() if args.latest else args.dir
        if args.archive:
            sweep_dir = archive(sweep_dir, args.archive)
        result = report(sweep_dir, args.trains_above, args.claims)
    except (OSError, UserError) as e:
        fail(str(e))
    print(result.report)
    for g in result.groups:
        if g.n:
            test, val = fmt(g.stats["test_acc"], True), fmt(g.stats["best_val_acc"], True)
            print(f"{g.label}: n={g.n} test acc {test} %, best val acc {val} %")
    if result.not_finished:
        print(f"not finished: {len(result.not_finished)} job(s), listed in {REPORT_FILE}")
