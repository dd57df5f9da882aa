"""Summarise a sweep: `python -m cnnstudy.report multirun/<dir> [--trains-above 0.9]`, or `--latest`.

Reads every job's metrics.json under the dir and groups jobs that differ only by `seed`. Writes into
the dir report.md (one `mean ± std` row per group, over its completed seeds; std is the sample std,
ddof=1) and, where they make sense, PNG plots: curves.png (>= 2 epochs), test_acc_vs_lr.png and
stability.png (>= 2 learning rates). Jobs that are running, diverged, failed, unreadable or have no
metrics.json yet are listed in the report, never counted in the means and never dropped silently.

A job "still trains" at a learning rate if it completed and its last-epoch val_acc >= --trains-above.
Diverged jobs count as not training; failed and running jobs are left out of that fraction (their
outcome says nothing about the learning rate yet).

Jobs run with `probes=bn` also get landscape.png and a table of the LandscapeProbe's numbers (read from
their TensorBoard events): loss variation, gradient predictiveness and effective beta-smoothness along
the gradient, per group, as in Santurkar et al. 2018.

`--archive DEST` first copies the sweep's records (metrics.json, overrides, multirun.yaml; no checkpoints or
events) to DEST/<sweep name>/, then reports on DEST: the slices of a study run in separate sittings, and the
records behind docs/results/, are reported as one.
"""

import argparse
import json
import re
import shlex
import shutil
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure  # pyplot-free: no global state; PNGs are drawn by the Agg canvas
from matplotlib.ticker import MaxNLocator
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnstudy.cli import fail
from cnnstudy.results import METRICS_FILE

REPORT_FILE = "report.md"
MULTIRUN = Path("multirun")
# stats key -> (column header, is an accuracy: shown in percent)
COLUMNS = {
    "epoch1_train_loss": ("epoch-1 train loss", False),
    "epoch1_train_acc": ("epoch-1 train acc %", True),
    "last_train_loss": ("last-epoch train loss", False),
    "last_train_acc": ("last-epoch train acc %", True),
    "best_val_acc": ("best val acc %", True),
    "test_acc": ("test acc %", True),
}
# An override that turns BatchNorm on -> the one that leaves it out, for the largest-lr ratio.
BN_PAIRS = {
    "model=bn": "model=nobn",
    "model.norm=bn": "model.norm=none",
    "model=deep_cnn_bn": "model=deep_cnn",
    "model=session5_bn": "model=session5",
    "model=net_batchnorm": "model=net",
}
# What a sweep's results are, without checkpoints or events: what `--archive` keeps.
RECORDS = (f"**/{METRICS_FILE}", "**/.hydra/overrides.yaml", "**/multirun.yaml")
# Config keys that differ between jobs of one setup: the lr (a series' x axis), where the data lives, and the
# shuffle order (which follows the seed).
NOT_SETUP = (("optim", "lr"), ("data", "root"), ("data", "num_workers"), ("data", "shuffle_seed"))
LANDSCAPE_COLUMNS = ("loss range", "max gradient change", "β-smoothness", "gradient norm")


def override_key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def group_overrides(overrides: list[str], drop: tuple[str, ...] = ("seed",)) -> tuple[str, ...]:
    """The overrides that define a group: the rule of results.run_name (no hydra.*, no data.root), minus `drop`."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "data.root"))]
    return tuple(sorted(o for o in kept if override_key(o) not in drop))


def sort_key(overrides: tuple[str, ...]) -> list[tuple]:
    """Order groups by their overrides, numbers numerically (optim.lr=1e-3 before optim.lr=0.01)."""
    parts = []
    for override in overrides:
        key, _, value = override.partition("=")
        try:
            parts.append((key, 0, float(value), ""))
        except ValueError:
            parts.append((key, 1, 0.0, value))
    return parts


def read_job(job_dir: Path, sweep_dir: Path) -> dict:
    job = {"dir": str(job_dir.relative_to(sweep_dir)), "overrides": [], "metrics": None, "detail": ""}
    try:  # Hydra's own record: the overrides of a job whose metrics.json is missing or unreadable
        job["overrides"] = list(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    except Exception:  # noqa: BLE001 - a missing or broken record only costs the overrides column
        pass
    path = job_dir / METRICS_FILE
    if not path.exists():  # started, but its first epoch has not ended (or it was killed before)
        return {**job, "status": "no metrics.json", "detail": "no epoch has ended yet"}
    try:
        metrics = json.loads(path.read_text())
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return {**job, "status": "unreadable", "detail": f"{type(e).__name__}: {e}"}
    job.update(metrics=metrics, status=metrics.get("status", "unknown"), landscape=read_landscape(job_dir))
    job["overrides"] = list(metrics.get("overrides") or job["overrides"])
    epochs = metrics.get("epochs") or []
    if job["status"] == "diverged":
        job["detail"] = f"epoch {metrics.get('diverged_epoch')}: {metrics.get('error', '')}"
    elif job["status"] == "running":
        job["detail"] = f"{len(epochs)} epoch(s) so far"
    elif job["status"] != "completed":
        job["detail"] = str(metrics.get("error", ""))
    return job


def read_landscape(job_dir: Path) -> dict[str, dict[int, float]]:
    """The LandscapeProbe's scalars in the job's TensorBoard events: tag -> {step: value}; {} without probes."""
    series = defaultdict(dict)
    for run_dir in sorted({p.parent for p in (job_dir / "tb").rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 1, "images": 1})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            if tag.startswith("landscape/"):  # the LandscapeProbe's scalars (cnnstudy.probes)
                series[tag].update((e.step, e.value) for e in events.Scalars(tag))
    return dict(series)


def find_jobs(sweep_dir: Path) -> list[dict]:
    job_dirs = {p.parent for p in sweep_dir.rglob(METRICS_FILE)}
    job_dirs |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    return [read_job(d, sweep_dir) for d in sorted(job_dirs, key=numbers_first)]


def numbers_first(path: Path) -> list[tuple]:
    """Job folders in number order (2 before 10)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def job_values(metrics: dict) -> dict:
    epochs = metrics.get("epochs") or [{}]
    first, last = epochs[0], epochs[-1]
    return {
        "epoch1_train_loss": first.get("train_loss"),
        "epoch1_train_acc": first.get("train_acc"),
        "last_train_loss": last.get("train_loss"),
        "last_train_acc": last.get("train_acc"),
        "best_val_acc": metrics.get("best_val_acc"),
        "test_acc": metrics.get("test_acc"),
    }


def summarise(values: list[float]) -> dict | None:
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None  # sample std (ddof=1)
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def lr_of(job: dict) -> float | None:
    lr = ((job["metrics"] or {}).get("config") or {}).get("optim", {}).get("lr")
    if lr is None:  # a failed job's record may hold no config
        lr = next((o.partition("=")[2] for o in job["overrides"] if override_key(o) == "optim.lr"), None)
    try:
        return float(lr)
    except (TypeError, ValueError):
        return None


def trains(job: dict, threshold: float) -> bool:
    epochs = (job["metrics"] or {}).get("epochs") or [{}]
    return job["status"] == "completed" and (epochs[-1].get("val_acc") or 0.0) >= threshold


def label(overrides: tuple[str, ...], common: set[str]) -> str:
    """What tells a group apart: its overrides less those every group shares."""
    return " ".join(o for o in overrides if o not in common) or " ".join(overrides) or "defaults"


def build_groups(jobs: list[dict]) -> tuple[list[dict], set[str]]:
    by_key = defaultdict(list)
    for job in jobs:
        by_key[group_overrides(job["overrides"])].append(job)
    common = set.intersection(*(set(key) for key in by_key)) if len(by_key) > 1 else set()
    groups = []
    for key in sorted(by_key, key=sort_key):
        done = [j for j in by_key[key] if j["status"] == "completed"]
        values = [job_values(j["metrics"]) for j in done]
        stats = {name: summarise([v[name] for v in values if v[name] is not None]) for name in COLUMNS}
        params = sorted({j["metrics"].get("params") for j in done} - {None})
        seeds = [(j["metrics"].get("config") or {}).get("seed") for j in done]
        groups.append({"key": key, "label": label(key, common), "n": len(done), "seeds": seeds, "params": params})
        groups[-1].update(stats=stats, jobs=done)
    return groups, common


def series_key(job: dict) -> tuple[str, ...]:
    """The group key without seed and optim.lr. Arms that set their own lr (cifar10_cnn's relu, lr_too_low,
    lr_too_high) are one series when their resolved setup differs only in lr: the arm names give way to it."""
    key = group_overrides(job["overrides"], drop=("seed", "optim.lr"))
    if not any(override_key(o).startswith("arm/") for o in key):
        return key
    config = (job["metrics"] or {}).get("config") or {}
    setup = {section: dict(config.get(section) or {}) for section in ("data", "model", "optim", "scheduler")}
    for section, not_setup in NOT_SETUP:
        setup[section].pop(not_setup, None)
    return (*(o for o in key if not override_key(o).startswith("arm/")), json.dumps(setup, sort_keys=True))


def series_label(jobs: list[dict], common: set[str]) -> str:
    """The series' group label, its arms named in lr order (arm/cifar10_cnn=lr_too_low|relu|lr_too_high)."""
    by_key = defaultdict(list)
    for job in sorted(jobs, key=lr_of):
        for override in group_overrides(job["overrides"], drop=("seed", "optim.lr")):
            key, _, value = override.partition("=")
            if value not in by_key[key]:
                by_key[key].append(value)
    return label(tuple(f"{key}={'|'.join(values)}" for key, values in by_key.items()), common)


def lr_study(jobs: list[dict], common: set[str], threshold: float) -> list[dict]:
    """Per series (series_key: the group key without optim.lr): test accuracy and trainability per learning rate."""
    if len({lr for j in jobs if (lr := lr_of(j)) is not None}) < 2:
        return []
    by_series = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        if (lr := lr_of(job)) is not None:
            by_series[series_key(job)][lr].append(job)
    common = {o for o in common if override_key(o) != "optim.lr"}
    series = []
    for key in sorted(by_series, key=sort_key):
        points = []
        for lr, lr_jobs in sorted(by_series[key].items()):
            decided = [j for j in lr_jobs if j["status"] in ("completed", "diverged")]
            done = [j["metrics"].get("test_acc") for j in lr_jobs if j["status"] == "completed"]
            points.append(
                {
                    "lr": lr,
                    "test_acc": summarise([a for a in done if a is not None]),
                    "diverged": sum(j["status"] == "diverged" for j in lr_jobs),
                    "decided": len(decided),
                    "trained": sum(trains(j, threshold) for j in decided),
                }
            )
        if len(points) < 2:  # an arm run at one lr (e.g. deeper_cnn's) says nothing about the lr range
            continue
        all_train = [p["lr"] for p in points if p["decided"] and p["trained"] == p["decided"]]
        largest = max(all_train, default=None)
        series_jobs = [job for lr_jobs in by_series[key].values() for job in lr_jobs]
        series.append({"key": key, "label": series_label(series_jobs, common), "points": points, "largest_lr": largest})
    return series


def bn_ratios(series: list[dict]) -> list[dict]:
    """Largest trainable lr with BN over the same without BN, for every series that has its no-BN twin."""
    by_key = {s["key"]: s for s in series}
    ratios = []
    for s in series:
        for override in s["key"]:
            if override not in BN_PAIRS:
                continue
            twin = by_key.get(tuple(sorted({*s["key"]} - {override} | {BN_PAIRS[override]})))
            if twin is not None:
                bn, nobn = s["largest_lr"], twin["largest_lr"]
                ratio = bn / nobn if bn and nobn else None
                ratios.append({"bn": s["label"], "nobn": twin["label"], "bn_lr": bn, "nobn_lr": nobn, "ratio": ratio})
    return ratios


def sweep_commands(sweep_dir: Path) -> list[str]:
    """The command of each sweep under the dir, from Hydra's multirun.yaml."""
    commands = []
    for path in sorted(sweep_dir.rglob("multirun.yaml")):
        try:
            hydra = OmegaConf.to_container(OmegaConf.load(path).hydra)
            extra = [o for o in hydra["overrides"]["hydra"] if o != "hydra.mode=MULTIRUN"]
            args = shlex.join(hydra["overrides"]["task"] + extra)
            commands.append(f"python -m cnnstudy.{hydra['job']['name']} -m {args}".rstrip())
        except Exception:  # noqa: BLE001 - the header just goes without the command
            pass
    return commands


def fmt(stat: dict | None, percent: bool) -> str:
    if stat is None:
        return "–"
    scale, digits = (100, 2) if percent else (1, 4)
    std = "–" if stat["std"] is None else f"{stat['std'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {std}"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(value) -> str:  # an error message must not break the table
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]


def plot_curves(groups_jobs: list[tuple[str, list[dict]]], path: Path) -> bool:
    """Train loss and val accuracy per epoch: mean over completed seeds, band = min-max over seeds."""
    runs = [(name, [j["metrics"].get("epochs") or [] for j in jobs]) for name, jobs in groups_jobs]
    if max((len(e) for _, seeds in runs for e in seeds), default=0) < 2:
        return False
    fig = Figure(figsize=(12, 5), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    colors = colormaps["tab10" if len(runs) <= 10 else "tab20"]
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


def plot_test_acc_vs_lr(series: list[dict], path: Path) -> None:
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    colors = colormaps["tab10" if len(series) <= 10 else "tab20"]
    for i, s in enumerate(series):
        done = [p for p in s["points"] if p["test_acc"] is not None]
        ax.errorbar(
            [p["lr"] for p in done],
            [p["test_acc"]["mean"] * 100 for p in done],
            yerr=[(p["test_acc"]["std"] or 0) * 100 for p in done],
            marker="o",
            capsize=3,
            color=colors(i),
            label=s["label"],
        )
        diverged = [p["lr"] for p in s["points"] if p["diverged"]]
        # x in data, y in axes coordinates: the marker sits at the bottom whatever the accuracy range
        ax.plot(diverged, [0.03] * len(diverged), "x", color=colors(i), ms=9, mew=2, transform=ax.get_xaxis_transform())
    ax.plot([], [], "x", color="gray", label="diverged (≥ 1 seed)")
    ax.set(xscale="log", xlabel="learning rate", ylabel="test accuracy %")
    ax.set_title("test accuracy vs lr: mean over completed seeds, error bar = std")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def plot_stability(series: list[dict], threshold: float, path: Path) -> None:
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    for s in series:
        decided = [p for p in s["points"] if p["decided"]]
        fractions = [p["trained"] / p["decided"] for p in decided]
        ax.plot([p["lr"] for p in decided], fractions, marker="o", label=s["label"])
    ax.set(xscale="log", ylim=(-0.05, 1.05), xlabel="learning rate", ylabel="fraction of seeds that still train")
    ax.set_title(f"still trains = completed with last val acc ≥ {threshold * 100:g}%; diverged = does not")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)


def landscape_summary(landscape: dict[str, dict[int, float]]) -> dict[str, float]:
    """One job's landscape numbers, each averaged over its probed steps (a column of the report's table)."""
    loss_max, loss_min = landscape.get("landscape/loss_max", {}), landscape.get("landscape/loss_min", {})
    per_step = {
        "loss range": [loss_max[s] - loss_min[s] for s in loss_max.keys() & loss_min.keys()],
        "max gradient change": list(landscape.get("landscape/grad_change_max", {}).values()),
        "β-smoothness": list(landscape.get("landscape/beta_smoothness", {}).values()),
        "gradient norm": list(landscape.get("landscape/grad_norm", {}).values()),
    }
    return {name: statistics.fmean(values) for name, values in per_step.items() if values}


def landscape_stats(groups: list[dict]) -> list[dict]:
    """Per group with probed jobs: landscape_summary's numbers, mean ± std over the group's seeds."""
    rows = []
    for g in groups:
        per_job = [landscape_summary(j["landscape"]) for j in g["jobs"] if j.get("landscape")]
        if per_job:
            stats = {name: summarise([job[name] for job in per_job if name in job]) for name in LANDSCAPE_COLUMNS}
            steps = len(next(j["landscape"] for j in g["jobs"] if j.get("landscape"))["landscape/loss_max"])
            rows.append({"label": g["label"], "n": len(per_job), "steps": steps, **stats})
    return rows


def common_steps(runs: list[dict], tags) -> list[int]:
    """The training steps at which every run has every tag."""
    return sorted(set.intersection(*(set(r.get(t, {})) for r in runs for t in tags)))


def plot_landscape(groups: list[dict], path: Path) -> bool:
    """Santurkar et al.'s three views over training steps, per group: the band spans the probed step sizes
    (min to max of the loss / gradient change, each averaged over seeds); beta-smoothness is the seeds' mean."""
    probed = [(g["label"], [j["landscape"] for j in g["jobs"] if j.get("landscape")]) for g in groups]
    probed = [(name, runs) for name, runs in probed if runs]
    if not probed:
        return False
    fig = Figure(figsize=(16, 5), layout="constrained")
    axes = fig.subplots(1, 3)
    colors = colormaps["tab10" if len(probed) <= 10 else "tab20"]
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


def write_markdown(sweep_dir: Path, result: dict, common: set[str], threshold: float) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in result["counts"].items())
    lines = [f"# Sweep report: {sweep_dir}", ""]
    lines += [f"command: `{c}`  " for c in result["commands"]]
    lines += [f"jobs: {sum(result['counts'].values())} ({counts})  "]
    if common:
        lines += [f"same in every group: `{' '.join(sorted(common, key=sort_key))}`"]
    lines += ["", "## Results per group", ""]
    lines += ["mean ± std over the completed seeds (sample std); n = completed seeds.", ""]
    header = ["group", "n", "params"] + [head for head, _ in COLUMNS.values()]
    rows = []
    for g in result["groups"]:
        params = "/".join(f"{p:,}" for p in g["params"]) or "–"
        rows.append([g["label"], g["n"], params] + [fmt(g["stats"][k], pct) for k, (_, pct) in COLUMNS.items()])
    lines += md_table(header, rows)
    lines += ["", "## Not finished", ""]
    if result["not_finished"]:
        rows = [[j["dir"], j["status"], " ".join(j["overrides"]), j["detail"][:300]] for j in result["not_finished"]]
        lines += md_table(["job", "status", "overrides", "error / diverged epoch / progress"], rows)
    else:
        lines += ["none: every job completed."]
    if result["lr_series"]:
        lines += ["", "## Largest learning rate that still trains (all seeds)", ""]
        lines += [f"A seed still trains if it completed with last-epoch val acc ≥ {threshold * 100:g}%.", ""]
        rows = []
        for s in result["lr_series"]:
            per_lr = ", ".join(f"{p['lr']:g}: {p['trained']}/{p['decided']}" for p in s["points"])
            rows.append([s["label"], "–" if s["largest_lr"] is None else f"{s['largest_lr']:g}", per_lr])
        lines += md_table(["group", "largest lr (all seeds train)", "seeds that train, per lr"], rows)
        for r in result["bn_ratios"]:
            ratio = "–" if r["ratio"] is None else f"{r['ratio']:.3g}×"
            lines += ["", f"BN / no BN: `{r['bn']}` vs `{r['nobn']}`: ratio {ratio}"]
    if landscape := result["landscape"]:
        lines += ["", "## Optimisation landscape (LandscapeProbe, Santurkar et al. 2018)", ""]
        lines += [
            "Per job each number is averaged over its probed steps; mean ± std over seeds. Loss range = loss_max −",
            "loss_min over the probed step sizes (variation of the loss); max gradient change = ‖∇L(θ−ηg) − g‖ at",
            "the largest η (gradient predictiveness: smaller is more predictive); β-smoothness = max over η of",
            "‖∇L(θ−ηg) − g‖ / ‖ηg‖.",
            "",
        ]
        header = ["group", "n", "probed steps", *LANDSCAPE_COLUMNS]
        rows = [[r["label"], r["n"], r["steps"]] + [fmt(r[k], False) for k in LANDSCAPE_COLUMNS] for r in landscape]
        lines += md_table(header, rows)
    if result["plots"]:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in result["plots"]]
    (sweep_dir / REPORT_FILE).write_text("\n".join(lines) + "\n")
    return str(sweep_dir / REPORT_FILE)


def is_line_key(key: str) -> bool:
    """What a dashboard chart overlays (model, optimizer, study arm); other varying keys pick the chart."""
    return key in ("model", "optim") or key.startswith("arm/")


def write_dashboard(sweep_dir: Path, groups: list[dict], common: set[str]) -> None:
    """A TensorBoard run `tb_summary/` with each group's mean curves and a custom-scalars layout
    with one chart per value of the other varying keys (e.g. one chart per learning rate,
    overlaying bn and nobn). `tensorboard --logdir <sweep>` shows it beside the jobs' own runs."""
    from torch.utils.tensorboard import SummaryWriter

    charts = defaultdict(dict)
    with SummaryWriter(str(sweep_dir / "tb_summary")) as writer:
        for group in (g for g in groups if g["n"]):
            varying = [o for o in group["key"] if o not in common]
            line = " ".join(o for o in varying if is_line_key(override_key(o))) or "all"
            panel = " ".join(o for o in varying if not is_line_key(override_key(o))) or "all"
            for metric in ("val_acc", "train_loss"):
                per_epoch = defaultdict(list)
                for job in group["jobs"]:
                    for e in job["metrics"].get("epochs") or []:
                        if e.get(metric) is not None:
                            per_epoch[e["epoch"]].append(e[metric])
                for epoch, values in sorted(per_epoch.items()):
                    writer.add_scalar(f"{metric}/{panel}/{line}", statistics.fmean(values), epoch)
                chart = f"{metric}: {panel} (mean over seeds)"
                charts[metric][chart] = ["Multiline", [re.escape(f"{metric}/{panel}/") + ".*"]]
        writer.add_custom_scalars({metric.replace("_", " "): dict(c) for metric, c in charts.items()})


def report(sweep_dir: Path, trains_above: float = 0.9) -> dict:
    """Write report.md and the plots into `sweep_dir`; returns the numbers behind them."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a folder")
    if next(sweep_dir.rglob(METRICS_FILE), None) is None:
        raise FileNotFoundError(f"no {METRICS_FILE} under {sweep_dir}")
    jobs = find_jobs(sweep_dir)
    groups, common = build_groups(jobs)
    series = lr_study(jobs, common, trains_above)
    result = {
        "dir": str(sweep_dir),
        "commands": sweep_commands(sweep_dir),
        "counts": dict(Counter(j["status"] for j in jobs).most_common()),
        "groups": groups,
        "not_finished": [j for j in jobs if j["status"] != "completed"],
        "lr_series": series,
        "bn_ratios": bn_ratios(series),
        "plots": [],
    }
    if plot_curves([(g["label"], g["jobs"]) for g in groups if g["n"]], sweep_dir / "curves.png"):
        result["plots"].append("curves.png")
    if series:
        plot_test_acc_vs_lr(series, sweep_dir / "test_acc_vs_lr.png")
        plot_stability(series, trains_above, sweep_dir / "stability.png")
        result["plots"] += ["test_acc_vs_lr.png", "stability.png"]
    result["landscape"] = landscape_stats(groups)
    if plot_landscape(groups, sweep_dir / "landscape.png"):
        result["plots"].append("landscape.png")
    write_dashboard(sweep_dir, groups, common)
    result["report"] = write_markdown(sweep_dir, result, common, trains_above)
    return result


def archive(sweep_dir: Path, dest: Path) -> Path:
    """Copy the sweep's records (RECORDS) to dest/<sweep folder name>/ and return dest. A study too long for
    one sitting is run in slices (a few arms each), each archived into the same dest and reported as one."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a folder")
    for pattern in RECORDS:
        for path in sweep_dir.glob(pattern):
            copy = Path(dest) / sweep_dir.name / path.relative_to(sweep_dir)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
    return Path(dest)


def latest_sweep(root: Path = MULTIRUN) -> Path:
    """The folder of job folders with metrics.json most recently written under `root` (any nesting)."""
    newest = defaultdict(float)
    for path in Path(root).rglob(METRICS_FILE):
        sweep = path.parent.parent
        newest[sweep] = max(newest[sweep], path.stat().st_mtime, sweep.stat().st_mtime)
    if not newest:
        raise FileNotFoundError(f"no {METRICS_FILE} under {root}/: run a sweep first (python -m cnnstudy.train -m ...)")
    return max(newest, key=newest.get)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cnnstudy.report", description=__doc__.split("\n")[0])
    parser.add_argument("dir", nargs="?", type=Path, help="a sweep folder, e.g. multirun/<timestamp>")
    parser.add_argument("--latest", action="store_true", help=f"the newest sweep under {MULTIRUN}/")
    parser.add_argument("--trains-above", type=float, default=0.9, help="last val acc that counts as training")
    parser.add_argument(
        "--archive", type=Path, metavar="DEST", help="copy the sweep's records to DEST/<sweep name>/ and report on DEST"
    )
    args = parser.parse_args(argv)
    if (args.dir is None) == (not args.latest):
        fail("give a sweep folder or --latest (one of them)")
    try:
        sweep_dir = latest_sweep() if args.latest else args.dir
        if args.archive:
            sweep_dir = archive(sweep_dir, args.archive)
        result = report(sweep_dir, args.trains_above)
    except OSError as e:
        fail(str(e))
    print(result["report"])
    for g in result["groups"]:
        if g["n"]:
            stats = g["stats"]
            test, val = fmt(stats["test_acc"], True), fmt(stats["best_val_acc"], True)
            print(f"{g['label']}: n={g['n']} test acc {test} %, best val acc {val} %")
    if result["not_finished"]:
        print(f"not finished: {len(result['not_finished'])} job(s), listed in {REPORT_FILE}")


if __name__ == "__main__":
    main(sys.argv[1:])
