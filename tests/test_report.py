"""The sweep report: numbers on hand-written sweeps, the CLI's errors, and one tiny real sweep."""

import fcntl
import json
import math
import os
import re
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from cnnstudy.record import write_json_atomic
from cnnstudy.report import archive, latest_sweep, main, report
from cnnstudy.report.compare import arm_levels
from cnnstudy.report.edge import edge_ratio, edge_text, estimate_edge, fine_pass, ratio_text
from cnnstudy.report.stats import welch

from conftest import ROOT, run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RESULTS = ROOT / "docs" / "results"
# studies whose records are archived in the repo: docs/results/<study>/<sweep>/<job>/metrics.json
ARCHIVED_STUDIES = sorted({path.parents[2].name for path in RESULTS.glob("*/*/*/metrics.json")})


# conf/model's presets, as far as the report tells them apart
MODEL_PRESETS = {"bn": {"norm": "bn", "head_norm": True}, "nobn": {"norm": "none", "head_norm": True}}


def set_dotted(config: dict, key: str, value) -> None:
    *sections, leaf = key.split(".")
    for section in sections:
        config = config.setdefault(section, {})
    config[leaf] = value


def config_of(overrides: list[str]) -> dict:
    """The resolved config train.py records for these overrides (the part of it the report reads)."""
    config = {"seed": 0, "optim": {"lr": 1e-3}}
    for key, value in (o.split("=", 1) for o in overrides):
        if key == "model":
            config["model"] = {**MODEL_PRESETS[value], **config.get("model", {})}
        elif "/" not in key:  # a config group's choice (arm/<study>=...) is no config key
            set_dotted(config, key, yaml.safe_load(value) if key != "optim.lr" else float(value))
    return config


def write_job(sweep: Path, number: int, overrides: list[str], status: str = "completed", **fields) -> Path:
    """A job folder as train.py leaves it: .hydra/overrides.yaml and (unless metrics=None) metrics.json."""
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    values = dict(o.split("=", 1) for o in overrides)
    record = {
        "status": status,
        "overrides": overrides,
        "choices": {"model": values.get("model", "bn"), "optim": "adam", "data": "mnist"},
        "config": config_of(overrides),
        "params": 1000 if values.get("model") == "bn" else 900,
        "seconds": 1.0,
        **fields,
    }
    (job / "metrics.json").write_text(json.dumps(record))
    return job


def epochs(first_loss: float, val_accs: list[float]) -> list[dict]:
    """Per-epoch records: train loss halves each epoch, train acc = val acc - 0.01."""
    return [
        {"epoch": i, "train_loss": first_loss / 2**i, "train_acc": acc - 0.01, "val_loss": 0.1, "val_acc": acc}
        for i, acc in enumerate(val_accs)
    ]


def completed(test_acc: float, seed: int, val_accs=(0.90, 0.95, 0.97)) -> dict:
    return {
        "test_acc": test_acc,
        "test_loss": 0.1,
        "best_val_acc": max(val_accs),
        "epochs": epochs(0.5 + 0.1 * seed, val_accs),
    }


# (model, lr override) -> test_acc of seeds 0, 1, 2, with their mean and sample std worked out by hand
TEST_ACC = {
    ("bn", "1e-3"): ([0.97, 0.98, 0.99], 0.98, 0.01),
    ("bn", "1e-2"): ([0.90, 0.92, 0.94], 0.92, 0.02),
    ("nobn", "1e-3"): ([0.95, 0.95, 0.98], 0.96, 0.01 * 3**0.5),  # deviations -1, -1, 2 (x0.01): sqrt(6/2)
    ("nobn", "1e-2"): ([0.80, 0.85, 0.90], 0.85, 0.05),
}


@pytest.fixture
def synthetic_sweep(tmp_path) -> Path:
    """2 models x 2 lrs x 3 seeds completed, plus a diverged, a failed, a running, an unreadable and a new job."""
    sweep = tmp_path / "sweep"
    number = 0
    for (model, lr), (accs, _, _) in TEST_ACC.items():
        for seed, acc in enumerate(accs):
            write_job(sweep, number, [f"model={model}", f"optim.lr={lr}", f"seed={seed}"], **completed(acc, seed))
            number += 1
    diverged = {"diverged_epoch": 1, "error": "train loss is nan", "epochs": epochs(2.0, [0.5])}
    write_job(sweep, 12, ["model=nobn", "optim.lr=1e-2", "seed=3"], "diverged", **diverged)
    failed_overrides = ["model=bn", "optim.lr=1e-3", "seed=3"]
    failed = {"status": "failed", "error": "RuntimeError: out of memory", "overrides": failed_overrides, "choices": {}}
    (write_job(sweep, 13, failed_overrides) / "metrics.json").write_text(json.dumps(failed))  # all a failed job has
    # A running job would pull every mean down (best val 10%) if it were counted.
    running = {"best_val_acc": 0.10, "epochs": epochs(9.0, [0.10])}
    running_job = write_job(sweep, 14, ["model=bn", "optim.lr=1e-2", "seed=3"], "running", **running)
    unreadable = write_job(sweep, 15, ["model=nobn", "optim.lr=1e-3", "seed=3"])
    (unreadable / "metrics.json").write_text('{"status": "compl')  # cut off mid-write
    (write_job(sweep, 16, ["model=bn", "optim.lr=1e-3", "seed=4"]) / "metrics.json").unlink()
    with open(running_job / ".lock", "w") as lock:  # held, as by a training process: the job still runs
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield sweep


def table_row(markdown: str, group: str) -> list[str]:
    (line,) = [line for line in markdown.splitlines() if line.startswith(f"| {group} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_means_and_sample_stds_over_completed_seeds(synthetic_sweep):
    result = report(synthetic_sweep)
    groups = {g.label: g for g in result.groups}
    # numeric order: 1e-3 before 1e-2 (as strings "1e-2" < "1e-3")
    labels = [
        "model=bn optim.lr=1e-3",
        "model=bn optim.lr=1e-2",
        "model=nobn optim.lr=1e-3",
        "model=nobn optim.lr=1e-2",
    ]
    assert list(groups) == labels
    for (model, lr), (_, mean, std) in TEST_ACC.items():
        group = groups[f"model={model} optim.lr={lr}"]
        assert group.n == 3 and sorted(group.seeds) == [0, 1, 2]
        assert group.stats["test_acc"].mean == pytest.approx(mean, abs=1e-12)
        assert group.stats["test_acc"].std == pytest.approx(std, abs=1e-12)
        # the running job (best val 10%, 1 epoch) is not in any mean
        assert group.stats["best_val_acc"].mean == pytest.approx(0.97)
        assert group.stats["epoch1_train_loss"].mean == pytest.approx(0.6)  # 0.5, 0.6, 0.7
        assert group.stats["epoch1_train_loss"].std == pytest.approx(0.1)
        assert group.stats["last_train_loss"].mean == pytest.approx(0.15)  # quartered
        assert group.stats["last_train_acc"].mean == pytest.approx(0.96)
    assert result.counts == {
        "completed": 12,
        "diverged": 1,
        "failed": 1,
        "running": 1,
        "unreadable": 1,
        "no metrics.json": 1,
    }

    markdown = (synthetic_sweep / "report.md").read_text()
    row = table_row(markdown, "model=bn optim.lr=1e-3")
    assert row[:6] == ["model=bn optim.lr=1e-3", "3", "1,000", "0.6000 ± 0.1000", "89.00 ± 0.00", "0.1500 ± 0.0250"]
    assert row[6:] == ["96.00 ± 0.00", "97.00 ± 0.00", "98.00 ± 1.00"]
    assert table_row(markdown, "model=nobn optim.lr=1e-3")[-1] == "96.00 ± 1.73"
    assert table_row(markdown, "model=nobn optim.lr=1e-2")[-1] == "85.00 ± 5.00"


def test_unfinished_jobs_are_listed_not_dropped(synthetic_sweep):
    report(synthetic_sweep)
    markdown = (synthetic_sweep / "report.md").read_text()
    unfinished = markdown.split("## Not finished")[1].split("##")[0]
    rows = {row[0]: row for row in (line.strip("|").split("|") for line in unfinished.splitlines() if "|" in line)}
    rows = {k.strip(): [c.strip() for c in v] for k, v in rows.items()}
    assert rows["12"][1:] == ["diverged", "model=nobn optim.lr=1e-2 seed=3", "epoch 1: train loss is nan"]
    assert rows["13"][1:] == ["failed", "model=bn optim.lr=1e-3 seed=3", "RuntimeError: out of memory"]
    assert rows["14"][1:] == ["running", "model=bn optim.lr=1e-2 seed=3", "1 epoch(s) so far"]
    assert rows["15"][1:3] == ["unreadable", "model=nobn optim.lr=1e-3 seed=3"]  # overrides from .hydra
    assert rows["15"][3].startswith("JSONDecodeError")
    assert rows["16"][1] == "no metrics.json"


def test_plots_are_valid_pngs(synthetic_sweep):
    result = report(synthetic_sweep)
    assert result.plots == ["curves.png", "test_acc_vs_lr.png", "stability.png"]
    for name in result.plots:
        path = synthetic_sweep / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 10_000
        height, width, _ = imread(path).shape
        assert 300 <= height <= 1000 and 500 <= width <= 1500
        assert f"![{path.stem}]({name})" in (synthetic_sweep / "report.md").read_text()


def test_no_plots_for_one_epoch_and_one_lr(tmp_path):
    for seed in (0, 1):
        write_job(tmp_path, seed, [f"seed={seed}"], **completed(0.9 + seed / 100, seed, val_accs=[0.9]))
    result = report(tmp_path)
    assert result.plots == [] and not list(tmp_path.glob("*.png"))
    (group,) = result.groups
    assert group.n == 2 and group.label == "defaults"
    assert table_row((tmp_path / "report.md").read_text(), "defaults")[-1] == "90.50 ± 0.71"


def write_landscape(job: Path, loss_min: list[float], loss_max: list[float], beta: list[float]) -> None:
    """probes.json as the LandscapeProbe records it (steps 0, 10, 20, ...), and TensorBoard events beside it, which
    the report does not read."""
    from torch.utils.tensorboard import SummaryWriter

    probes = {f"landscape/{tag}": {} for tag in ("loss_min", "loss_max", "beta_smoothness")}
    with SummaryWriter(str(job / "tb" / "run")) as writer:
        for i, (low, high, b) in enumerate(zip(loss_min, loss_max, beta, strict=True)):
            for tag, value in [("loss_min", low), ("loss_max", high), ("beta_smoothness", b)]:
                probes[f"landscape/{tag}"][str(10 * i)] = value
                writer.add_scalar(f"landscape/{tag}", 99.0, 10 * i)
    (job / "probes.json").write_text(json.dumps(probes))


def test_landscape_table_and_plot_from_the_jobs_probes_json(tmp_path):
    # per job: mean over steps of (loss_max - loss_min) and of beta; then mean ± std over the two seeds
    ranges = {"bn": ([0.1, 0.3], [0.2, 0.4]), "none": ([1.0, 2.0], [3.0, 4.0])}  # seed 0, seed 1 per step
    for number, (norm, seed) in enumerate([("bn", 0), ("bn", 1), ("none", 0), ("none", 1)]):
        job = write_job(tmp_path, number, [f"model.norm={norm}", f"seed={seed}"], **completed(0.9, seed))
        widths = ranges[norm][seed]
        write_landscape(job, [2.0, 1.0], [2.0 + widths[0], 1.0 + widths[1]], [10.0 * (seed + 1), 30.0 * (seed + 1)])
    result = report(tmp_path)
    assert "landscape.png" in result.plots
    assert (tmp_path / "landscape.png").read_bytes()[:8] == PNG_SIGNATURE
    markdown = (tmp_path / "report.md").read_text()
    section = markdown.split("## Optimisation landscape")[1]
    # bn: ranges 0.2 (seed 0) and 0.3 (seed 1) -> 0.25 ± 0.0707; beta 20 and 40 -> 30 ± 14.1421
    assert table_row(section, "model.norm=bn")[:5] == ["model.norm=bn", "2", "2", "0.2500 ± 0.0707", "–"]
    assert table_row(section, "model.norm=bn")[5] == "30.0000 ± 14.1421"
    # none: ranges 1.5 and 3.5 -> 2.5 ± 1.4142
    assert table_row(section, "model.norm=none")[3] == "2.5000 ± 1.4142"
    # BN minus no BN, Welch over the two seeds: loss range 0.25 - 2.5; beta 30 vs 30, no difference
    tests = table_row(section, "`model.norm=bn` vs `model.norm=none`")
    assert tests[1] == "-2.25, p = 0.27: not resolved at n = 2 vs 2"
    assert tests[3] == "+0, p = 1: not resolved at n = 2 vs 2"
    # archived: probes.json kept, no event files, the same table
    archived = archive(tmp_path, tmp_path.parent / "archive") / tmp_path.name
    assert not list(archived.rglob("events.out.tfevents.*")) and len(list(archived.rglob("probes.json"))) == 4
    report(archived)
    assert (archived / "report.md").read_text().split("## Optimisation landscape")[1] == section


def test_layer_stats_table_tests_and_plot_count_diverged_jobs(tmp_path):
    # (norm, seed, status) -> grad norm and act std of features.0.0 at steps 0, 5, 10 (nan: the step it diverged)
    jobs = {
        ("bn", 0, "completed"): ([1.0, 2.0, 0.5], [0.5, 1.0, 1.0]),
        ("bn", 1, "completed"): ([1.0, 4.0, 1.0], [0.5, 2.0, 2.0]),
        ("none", 0, "completed"): ([0.1, 10.0, 100.0], [0.5, 5.0, 50.0]),
        ("none", 1, "diverged"): ([0.1, 1000.0, math.nan], [0.5, 500.0, math.nan]),
        ("none", 2, "failed"): ([0.1, 1e9, 1e9], [0.5, 1e9, 1e9]),  # failed: says nothing, left out
    }
    for number, ((norm, seed, status), (grad, act)) in enumerate(jobs.items()):
        fields = completed(0.9, seed) if status == "completed" else {"epochs": epochs(2.0, [0.5])}
        job = write_job(tmp_path, number, [f"model.norm={norm}", f"seed={seed}"], status, **fields)
        probes = {"grad_norm/features.0.0": grad, "act_std/features.0.0": act, "act_mean/features.0.0": act}
        probes = {tag: {str(5 * i): value for i, value in enumerate(values)} for tag, values in probes.items()}
        write_json_atomic(job / "probes.json", probes)  # as a run writes it (cnnstudy.record)
    result = report(tmp_path)
    assert "layer_stats.png" in result.plots
    assert (tmp_path / "layer_stats.png").read_bytes()[:8] == PNG_SIGNATURE
    section = (tmp_path / "report.md").read_text().split("## Per-layer norms")[1].split("## Plots")[0]
    # bn: grad max 2 and 4 -> 3 ± 1.4142; act max 1 and 2 -> 1.5 ± 0.7071
    bn = ["model.norm=bn", "features.0.0", "2", "3", "1.0000 ± 0.0000", "3.0000 ± 1.4142", "0.5000 ± 0.0000"]
    assert table_row(section, "model.norm=bn") == [*bn, "1.5000 ± 0.7071"]
    # none: the completed and the diverged job (its nan step left out), not the failed one: 100 and 1000
    assert table_row(section, "model.norm=none")[2:6] == ["2", "3", "0.1000 ± 0.0000", "550.0000 ± 636.3961"]
    # Welch on log10 of the largest values: grad [log 2, log 4] vs [2, 3]
    p = welch_p([math.log10(2), math.log10(4)], [2.0, 3.0])
    (tests,) = [line for line in section.splitlines() if line.startswith("| `model.norm=bn` vs")]
    grad_test = tests.split("|")[3].strip()
    assert grad_test == f"{math.log10(8) / 2 - 2.5:+.3g}, p = {p:.2g}: " + (
        "lower" if p < 0.05 else "not resolved at n = 2 vs 2"
    )


def test_no_landscape_without_probes(synthetic_sweep):
    result = report(synthetic_sweep)
    assert result.probe_sections == [] and "landscape.png" not in result.plots
    assert "Optimisation landscape" not in (synthetic_sweep / "report.md").read_text()


def arm_job(sweep: Path, number: int, arm: str, activation: str, lr: float, seed: int, test_acc: float, *extra) -> None:
    """A job of an arm that sets its own model and lr (as a study's `arms:` do), not on the command line."""
    config = {"seed": seed, "model": {"activation": activation}, "optim": {"lr": lr}, "data": {"shuffle_seed": seed}}
    for key, value in (o.split("=", 1) for o in extra):
        set_dotted(config, key, yaml.safe_load(value))
    record = completed(test_acc, seed, val_accs=(test_acc,))
    write_job(sweep, number, [f"arm/study={arm}", *extra, f"seed={seed}"], config=config, **record)


def test_arms_of_different_models_at_one_lr_each_make_no_lr_study(tmp_path):
    # deeper_cnn: plain at 1e-3, bn at 3e-3 -- two learning rates in the sweep, but one per model
    arm_job(tmp_path, 0, "plain", "relu", 1e-3, 0, 0.99)
    arm_job(tmp_path, 1, "bn", "tanh", 3e-3, 0, 0.99)
    result = report(tmp_path)
    assert result.lr_series == [] and "test_acc_vs_lr.png" not in result.plots
    assert "Largest learning rate" not in (tmp_path / "report.md").read_text()


def test_arms_that_differ_only_in_lr_are_one_lr_series(tmp_path):
    # cifar10_cnn: relu at 1e-3, lr_too_low and lr_too_high the same model at 1e-5 and 1e-1; tanh another model
    arms = [("relu", "relu", 1e-3, 0.75), ("lr_too_low", "relu", 1e-5, 0.6), ("lr_too_high", "relu", 1e-1, 0.1)]
    arms.append(("tanh", "tanh", 1e-3, 0.7))
    for number, (arm, activation, lr, test_acc) in enumerate(arms * 2):
        seed = number // len(arms)
        arm_job(tmp_path, number, arm, activation, lr, seed, test_acc + 0.01 * seed)
    # the same arm with another command-line override is another series, not a third relu seed at 1e-3
    arm_job(tmp_path, len(arms) * 2, "relu", "relu", 1e-3, 0, 0.5, "trainer.max_epochs=3")
    result = report(tmp_path, trains_above=0.5)
    (series,) = result.lr_series
    assert series.label == "arm/study=lr_too_low|relu|lr_too_high"
    assert [(p.lr, p.test_acc.mean, p.trained) for p in series.points] == [
        (1e-5, pytest.approx(0.605), 2), (1e-3, pytest.approx(0.755), 2), (1e-1, pytest.approx(0.105), 0)
    ]  # fmt: skip
    assert series.largest_lr == 1e-3 and "test_acc_vs_lr.png" in result.plots


def lr_grid(sweep: Path, last_val_acc) -> None:
    """bn and nobn over lr 1e-4 .. 1, 2 seeds; last_val_acc(model, lr, seed) -> float, or None for diverged."""
    number = 0
    for model in ("bn", "nobn"):
        for lr in ("1e-4", "1e-3", "1e-2", "1e-1", "1"):
            for seed in (0, 1):
                overrides = [f"model={model}", f"optim.lr={lr}", f"seed={seed}", "trainer.max_epochs=2"]
                acc = last_val_acc(model, float(lr), seed)
                if acc is None:
                    write_job(sweep, number, overrides, "diverged", diverged_epoch=0, error="nan", epochs=[])
                else:
                    write_job(sweep, number, overrides, **completed(acc, seed, val_accs=[0.3, acc]))
                number += 1


def bn_to_1e_1_nobn_to_1e_2(model: str, lr: float, seed: int) -> float | None:
    if lr == 1:
        return None  # both diverge
    if model == "nobn" and lr == 0.1:
        return 0.95 if seed == 0 else 0.5  # one seed of two still trains: not "all seeds"
    return 0.97


def test_largest_lr_that_still_trains_and_bn_ratio(tmp_path):
    lr_grid(tmp_path, bn_to_1e_1_nobn_to_1e_2)
    result = report(tmp_path)
    largest = {s.label: s.largest_lr for s in result.lr_series}
    assert largest == {"model=bn": 0.1, "model=nobn": 0.01}
    (ratio,) = result.bn_ratios
    assert ratio.ratio == pytest.approx(10)
    nobn = result.lr_series[1].points
    assert [(p.lr, p.trained, p.decided, p.diverged) for p in nobn][-2:] == [(0.1, 1, 2, 0), (1.0, 0, 2, 2)]
    markdown = (tmp_path / "report.md").read_text()
    assert "BN / no BN: `model=bn` vs `model=nobn`: ratio 10×" in markdown
    assert table_row(markdown, "model=nobn")[1:] == ["0.01", "0.0001: 2/2, 0.001: 2/2, 0.01: 2/2, 0.1: 1/2, 1: 0/2"]
    assert "same in every group: `trainer.max_epochs=2`" in markdown
    # a lower bar: both seeds of nobn at 0.1 now train
    lowered = report(tmp_path, trains_above=0.4)
    assert [s.largest_lr for s in lowered.lr_series] == [0.1, 0.1] and lowered.bn_ratios[0].ratio == 1


def test_latest_picks_the_newest_sweep_at_any_depth(tmp_path, monkeypatch, capsys):
    old, new = tmp_path / "multirun" / "2024-01-01_00-00-00", tmp_path / "multirun" / "lr_study" / "2024-01-02_00-00-00"
    for i, sweep in enumerate((old, new)):
        job = write_job(sweep, 0, ["seed=0"], **completed(0.9, 0))
        for path in (job / "metrics.json", sweep):
            os.utime(path, (1_000_000 + i, 1_000_000 + i))
    monkeypatch.chdir(tmp_path)
    assert latest_sweep() == Path("multirun/lr_study/2024-01-02_00-00-00")
    main(["--latest"])
    assert capsys.readouterr().out.splitlines() == [
        "multirun/lr_study/2024-01-02_00-00-00/report.md",
        "defaults: n=1 test acc 90.00 ± – %, best val acc 97.00 ± – %",
    ]
    assert (new / "report.md").exists() and not (old / "report.md").exists()


def test_slices_archived_into_one_folder_are_reported_as_one_study(tmp_path, capsys):
    # one study in two sittings: seeds 0, 1 of both models, then seed 2 (the TEST_ACC values)
    slices = {"part-a": (0, 1), "part-b": (2,)}
    records = tmp_path / "records"
    expected = set()
    for name, seeds in slices.items():
        sweep = tmp_path / "multirun" / name
        sweep.mkdir(parents=True)
        (sweep / "multirun.yaml").write_text("hydra: {}\n")
        expected.add(f"{name}/multirun.yaml")
        for number, (model, seed) in enumerate((m, s) for m in ("bn", "nobn") for s in seeds):
            overrides = [f"model={model}", "optim.lr=1e-3", f"seed={seed}"]
            job = write_job(sweep, number, overrides, **completed(TEST_ACC[(model, "1e-3")][0][seed], seed))
            (job / "checkpoints").mkdir()
            (job / "checkpoints" / "last.ckpt").write_bytes(b"weights")
            expected |= {f"{name}/{number}/metrics.json", f"{name}/{number}/.hydra/overrides.yaml"}
        main([str(sweep), "--archive", str(records)])
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "model=bn: n=3 test acc 98.00 ± 1.00 %, best val acc 97.00 ± 0.00 %",
        "model=nobn: n=3 test acc 96.00 ± 1.73 %, best val acc 97.00 ± 0.00 %",
    ]
    copied = {str(p.relative_to(records)) for name in slices for p in (records / name).rglob("*") if p.is_file()}
    assert copied == expected  # the records only: no checkpoints
    assert "jobs: 6 (6 completed)" in (records / "report.md").read_text()


@pytest.mark.parametrize("study", ARCHIVED_STUDIES)
def test_committed_results_are_what_their_records_give(tmp_path, study):
    """docs/results/<study>/report.md is what the records committed beside it give, not a hand edit."""
    generated = ("report.md", "*.png", "tb_summary")
    records = shutil.copytree(RESULTS / study, tmp_path / study, ignore=shutil.ignore_patterns(*generated))
    threshold = re.search(r"last-epoch val acc ≥ ([\d.]+)%", (RESULTS / study / "report.md").read_text())
    report(records, **({"trains_above": float(threshold[1]) / 100} if threshold else {}))  # as committed

    def results(path: Path) -> str:
        return path.read_text().split("## Results per group")[1].split("## Plots")[0]

    assert results(records / "report.md") == results(RESULTS / study / "report.md")


@pytest.mark.subprocess
@pytest.mark.parametrize("case", ["missing", "empty"])
def test_cli_errors_in_one_line(tmp_path, case):
    folder = tmp_path / case
    if case == "empty":
        folder.mkdir()
    result = run_cli("cnnstudy.report", str(folder))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0], result.stderr


@pytest.mark.subprocess
def test_tiny_real_sweep(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "cnnstudy.train",
        "-m",
        "model=bn,nobn",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli("cnnstudy.report", str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == str(sweep / "report.md") and len(lines) == 3
    markdown = (sweep / "report.md").read_text()
    assert "command: `python -m cnnstudy.train -m model=bn,nobn seed=0,1 " in markdown
    assert "jobs: 4 (4 completed)" in markdown
    for model in ("bn", "nobn"):
        test_accs = []
        for path in sweep.glob("*/metrics.json"):
            metrics = json.loads(path.read_text())
            if metrics["choices"]["model"] == model:
                test_accs.append(metrics["test_acc"])
        assert len(test_accs) == 2
        row = table_row(markdown, f"model={model}")
        assert row[1] == "2"
        expected = f"{statistics.fmean(test_accs) * 100:.2f} ± {statistics.stdev(test_accs) * 100:.2f}"
        assert row[-1] == expected
        assert any(line.startswith(f"model={model}: n=2 test acc {expected} %") for line in lines)


def run_sweep(sweep: Path, data_root: Path, *overrides: str) -> None:
    """A real sweep through the train entry point: one epoch of two batches per job."""
    result = run_cli(
        "cnnstudy.train", "-m", *overrides, f"hydra.sweep.dir={sweep}", f"data.root={data_root}",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.subprocess
def test_bn_comparisons_come_from_the_resolved_configs(tmp_path, data_root):
    # The book builds NetBatchNorm on NetWidth's 32 channels: its BN-free twin is net_width, not net.
    # deep_cnn_bn adds dropout to deep_cnn besides BN: a pair, but not a BN comparison. (One sweep for both.)
    run_sweep(tmp_path, data_root, "data=cifar2", "model=net,net_width,net_batchnorm,deep_cnn,deep_cnn_bn")
    result = report(tmp_path)
    pairs = {(c.with_bn.label, c.without_bn.label): (c.bn, c.keys) for c in result.comparisons}
    assert pairs == {
        ("model=net_batchnorm", "model=net_width"): (True, ["model.norm"]),
        ("model=deep_cnn_bn", "model=deep_cnn"): (False, ["model.dropout", "model.norm"]),
    }
    markdown = (tmp_path / "report.md").read_text()
    assert "| `model=net_batchnorm` vs `model=net_width` | yes | model.norm: bn vs none |" in markdown
    deep = "| `model=deep_cnn_bn` vs `model=deep_cnn` | no | model.dropout: 0.5 vs 0.0; model.norm: bn vs none |"
    assert deep in markdown
    assert "vs `model=net` " not in markdown


@pytest.mark.subprocess
def test_two_optimizers_at_three_lrs_are_two_lr_series(tmp_path, data_root):
    run_sweep(tmp_path, data_root, "data=cifar2", "model=net", "optim=adam,sgd", "optim.lr=1e-3,1e-2,1e-1")
    result = report(tmp_path)
    series = [(s.label, [p.lr for p in s.points], [p.decided for p in s.points]) for s in result.lr_series]
    assert series == [("optim=adam", [1e-3, 1e-2, 1e-1], [1, 1, 1]), ("optim=sgd", [1e-3, 1e-2, 1e-1], [1, 1, 1])]
    assert result.comparisons == [] and result.series_comparisons == []  # no BN on either side
    assert "test_acc_vs_lr.png" in result.plots


def welch_p(a: list[float], b: list[float]) -> float:
    """Welch's two-sided p worked out from its formula: t and the Welch-Satterthwaite degrees of freedom."""
    from scipy.stats import t as student_t

    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / (va + vb) ** 0.5
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return 2 * student_t.sf(abs(t), df)


def test_bn_comparisons_get_welch_tests_and_the_verdict_rule(tmp_path):
    # bn vs nobn at 1e-3: 98 ± 1 vs 96 ± 1.73, p ~ 0.2 -> not resolved; at 1e-2 nobn is far below -> better
    test_accs = {("bn", "1e-3"): [0.97, 0.98, 0.99], ("nobn", "1e-3"): [0.95, 0.95, 0.98]}
    test_accs |= {("bn", "1e-2"): [0.90, 0.91, 0.92], ("nobn", "1e-2"): [0.50, 0.60, 0.55]}
    number = 0
    for (model, lr), accs in test_accs.items():
        for seed, acc in enumerate(accs):
            write_job(tmp_path, number, [f"model={model}", f"optim.lr={lr}", f"seed={seed}"], **completed(acc, seed))
            number += 1
    result = report(tmp_path)
    tests = {c.with_bn.label: c.welch for c in result.comparisons}
    assert set(tests) == {"model=bn optim.lr=1e-3", "model=bn optim.lr=1e-2"}
    for lr in ("1e-3", "1e-2"):
        expected = welch_p(test_accs["bn", lr], test_accs["nobn", lr])
        assert tests[f"model=bn optim.lr={lr}"].p == pytest.approx(expected, rel=1e-9)
    assert 0.05 < tests["model=bn optim.lr=1e-3"].p and tests["model=bn optim.lr=1e-2"].p < 0.05
    markdown = (tmp_path / "report.md").read_text()
    p_low, p_high = tests["model=bn optim.lr=1e-2"].p, tests["model=bn optim.lr=1e-3"].p
    assert f"| 3 vs 3 | {p_high:.2g} | not resolved at n = 3 vs 3 |" in markdown
    assert f"| 3 vs 3 | {p_low:.2g} | better |" in markdown
    # the lr series' BN comparison repeats the tests per lr
    per_lr = f"per lr (Welch): 0.001: not resolved at n = 3 vs 3 (p {p_high:.2g}); 0.01: better (p {p_low:.2g})"
    assert per_lr in markdown


def test_each_nets_best_lr_is_chosen_on_validation_among_lrs_where_every_seed_completed(tmp_path):
    # (model, lr) -> (val accs per epoch, test accs of seeds 0-2): the best val acc never has the best test acc
    arms = {("bn", "1e-3"): ((0.90, 0.97), [0.97, 0.98, 0.99]), ("bn", "1e-2"): ((0.90, 0.99), [0.90, 0.91, 0.92])}
    arms |= {("nobn", "1e-3"): ((0.90, 0.96), [0.95, 0.95, 0.98]), ("nobn", "1e-2"): ((0.90, 0.995), [0.5, 0.6, 0.55])}
    number = 0
    for (model, lr), (val_accs, accs) in arms.items():
        for seed, acc in enumerate(accs):
            overrides = [f"model={model}", f"optim.lr={lr}", f"seed={seed}"]
            write_job(tmp_path, number, overrides, **completed(acc, seed, val_accs))
            number += 1
    diverged = {"diverged_epoch": 1, "error": "train loss is nan", "epochs": epochs(2.0, [0.5])}
    write_job(tmp_path, number, ["model=nobn", "optim.lr=1e-2", "seed=3"], "diverged", **diverged)

    (comparison,) = report(tmp_path).series_comparisons
    bn_lr, nobn_lr, test = comparison.at_best_lrs()
    assert (bn_lr, nobn_lr) == (1e-2, 1e-3)  # no BN's 1e-2 has the highest val acc but a diverged seed
    assert test.p == pytest.approx(welch_p([0.90, 0.91, 0.92], [0.95, 0.95, 0.98]), rel=1e-9)
    markdown = (tmp_path / "report.md").read_text()
    assert (
        f"BN at 0.01 vs no BN at 0.001, test acc {100 * test.difference:+.3g} points, p = {test.p:.2g}: worse"
        in markdown
    )


def test_welch_is_not_resolved_below_two_seeds_a_side(synthetic_sweep):
    result = report(synthetic_sweep)
    for c in result.comparisons:  # 3 completed seeds a side: tests run, none resolved at these spreads
        assert c.welch.n == (3, 3) and c.welch.p is not None and c.welch.verdict == "not resolved at n = 3 vs 3"
    assert welch([0.9], [0.1, 0.2]).verdict == "not resolved at n = 1 vs 2" and welch([0.9], [0.1, 0.2]).p is None


GRID = [10**x for x in np.arange(-4, 0.01, 0.5)]  # 1e-4 .. 1 in half-decades, as lr_range


def outcomes(log_edge: float, seeds: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Seeds that train per GRID lr when P(train) falls from 1 to 0 around 10**log_edge (logistic, 0.15 decades)."""
    p_train = [1 / (1 + np.exp((np.log10(lr) - log_edge) / 0.15)) for lr in GRID]
    return [int(rng.binomial(seeds, p)) for p in p_train], [seeds] * len(GRID)


def test_the_edge_estimate_is_close_to_a_known_edge_and_its_interval_covers_it():
    rng = np.random.default_rng(1)
    bn = estimate_edge(GRID, *outcomes(-0.8, 30, rng), np.random.default_rng(0))
    nobn = estimate_edge(GRID, *outcomes(-1.8, 30, rng), np.random.default_rng(1))
    for edge, truth in ((bn, -0.8), (nobn, -1.8)):
        assert abs(edge.log_lr - truth) < 0.15 and edge.interval[0] <= truth <= edge.interval[1]
        assert edge.interval[1] - edge.interval[0] < 0.5  # 30 seeds pin it within a grid step
    ratio = edge_ratio(bn, nobn)  # known: 10x
    assert abs(ratio.log_ratio - 1) < 0.2 and ratio.interval[0] <= 1 <= ratio.interval[1] and ratio.undefined == 0
    assert re.fullmatch(r"\d+(\.\d+)?× \[\d+(\.\d+)?, \d+(\.\d+)?\]", ratio_text(bn, nobn))
    # repeatable: the same generator seed gives the same interval
    again = estimate_edge(GRID, *outcomes(-0.8, 30, np.random.default_rng(1)), np.random.default_rng(0))
    assert again.interval == bn.interval


def test_interpolation_between_the_last_lr_at_half_or_more_and_the_next():
    # fractions 1, 1, 2/3, 0 at 1e-3 .. 1 (decades): from 2/3 at 0.1 to 0 at 1 crosses 1/2 at log10 = -1 + 1/4
    edge = estimate_edge([1e-3, 1e-2, 1e-1, 1.0], [3, 3, 2, 0], [3, 3, 3, 3], np.random.default_rng(0))
    assert edge.log_lr == pytest.approx(-0.75) and edge_text(edge)[0] == f"{10**-0.75:.3g}"


def test_a_series_that_trains_everywhere_is_stated_above_the_grid():
    edge = estimate_edge(GRID, [3] * len(GRID), [3] * len(GRID), np.random.default_rng(0))
    assert edge.log_lr == np.inf and edge_text(edge) == ("above the grid: > 1", "[> 1, > 1]")
    never = estimate_edge(GRID, [0] * len(GRID), [3] * len(GRID), np.random.default_rng(0))
    assert edge_text(never)[0] == "below the grid: < 0.0001"
    # BN above its grid, no BN at a known edge: the ratio is a lower bound at BN's grid end
    nobn = estimate_edge([1e-2, 1e-1, 1.0], [3, 0, 0], [3, 3, 3], np.random.default_rng(0))  # 10**-1.5
    assert ratio_text(edge, nobn).startswith(f"> {1 / 10**-1.5:.3g}× [")
    assert ratio_text(edge, edge) == "undefined (both edges beyond their grids)"


def test_the_fine_pass_is_quarter_decades_inside_the_bracket_or_the_grid_extended():
    # fractions 1, 1, 2/3, 0 at 1e-3 .. 1: the edge lies between 0.1 and 1
    edge = estimate_edge([1e-3, 1e-2, 1e-1, 1.0], [3, 3, 2, 0], [3, 3, 3, 3], np.random.default_rng(0))
    assert edge.bracket == (0.1, 1.0)
    assert fine_pass(edge) == "optim.lr=0.178,0.316,0.562; more seeds at 0.1, 1"
    half_decades = estimate_edge([1e-2, 10**-1.5, 0.1], [3, 2, 0], [3, 3, 3], np.random.default_rng(0))
    assert fine_pass(half_decades) == "optim.lr=0.0562; more seeds at 0.0316, 0.1"
    everywhere = estimate_edge(GRID, [3] * len(GRID), [3] * len(GRID), np.random.default_rng(0))
    assert everywhere.bracket is None and fine_pass(everywhere) == "extend: optim.lr=3.16,10"
    never = estimate_edge(GRID, [0] * len(GRID), [3] * len(GRID), np.random.default_rng(0))
    assert fine_pass(never) == "extend: optim.lr=3.16e-05,1e-05"


def test_the_edge_is_plotted_against_the_budget_for_series_that_differ_only_in_it(tmp_path):
    """bn and nobn, each at 100 and 500 steps, 5 lrs, 3 seeds: four lr series, two lines of two budgets each."""
    number = 0
    for model, budget, edge in (("bn", 100, 0.5), ("bn", 500, 0.05), ("nobn", 100, 0.005), ("nobn", 500, 5e-4)):
        for lr in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
            for seed in range(3):
                val = 0.97 if lr < edge else 0.1
                overrides = [
                    f"model={model}",
                    f"optim.lr={lr}",
                    f"seed={seed}",
                    f"trainer.limit_train_batches={budget}",
                ]
                write_job(tmp_path, number, overrides, steps=budget, **completed(val, seed, val_accs=(val,)))
                number += 1
    result = report(tmp_path)
    assert len(result.lr_series) == 4 and "edge_vs_budget.png" in result.plots
    edges = {s.label: 10**s.edge.log_lr for s in result.lr_series}
    assert sorted(edges.values()) == pytest.approx([10**-3.5, 10**-2.5, 10**-1.5, 10**-0.5], rel=1e-6)
    image = imread(tmp_path / "edge_vs_budget.png")[..., :3]
    assert len({tuple(px) for px in image.reshape(-1, 3)[::7]}) > 10  # drawn, not blank
    one_budget = tmp_path / "one_budget"
    for job in [p for p in tmp_path.iterdir() if p.name.isdigit() and int(p.name) < 15]:  # bn at 100 steps only
        shutil.copytree(job, one_budget / job.name)
    assert "edge_vs_budget.png" not in report(one_budget).plots


def test_run_time_overrides_neither_split_nor_name_groups(tmp_path):
    """A sweep resumed with threads=1 (or another logger, data.root): the same groups, named as before."""
    for number, (model, extra) in enumerate([("bn", []), ("bn", ["threads=1"]), ("nobn", ["logger=csv"])]):
        overrides = [f"model={model}", f"seed={number}", *extra]
        write_job(tmp_path, number, overrides, **completed(0.9, number))
    assert [(g.label, g.n) for g in report(tmp_path).groups] == [("model=bn", 2), ("model=nobn", 1)]


# Arms that are levels of one setting (a batch size with its lr and steps) and arms that each change another thing.
BATCH_ARMS = {
    "b2": {"data.batch_size": 2, "optim.lr": 0.01 * 2 / 128, "trainer.limit_train_batches": 7680},
    "b8": {"data.batch_size": 8, "optim.lr": 0.01 * 8 / 128, "trainer.limit_train_batches": 1920},
    "b128": {"data.batch_size": 128, "optim.lr": 0.01, "trainer.limit_train_batches": 120},
}
ABLATION_ARMS = {"base": {}, "no_dropout": {"model.dropout": 0.0}, "gap": {"model.head": "gap"}}


def write_arm_sweep(sweep: Path, study: str, arms: dict, test_accs: dict) -> None:
    """`arm/<study>=<arm>` x model.norm bn, gn x seeds 0-2; each arm's keys set in the recorded config."""
    number = 0
    for arm, keys in arms.items():
        for norm in ("bn", "gn"):
            for seed, acc in enumerate(test_accs[arm, norm]):
                config = {"seed": seed, "optim": {"lr": 1e-3}, "model": {"norm": norm, "dropout": 0.5, "head": "fc"}}
                for key, value in keys.items():
                    set_dotted(config, key, value)
                overrides = [f"arm/{study}={arm}", f"model.norm={norm}", f"seed={seed}"]
                choices = {f"arm/{study}": arm, "model": "cifar_cnn", "logger": "tensorboard"}
                write_job(sweep, number, overrides, config=config, choices=choices, **completed(acc, seed))
                number += 1


def test_arms_that_are_levels_of_one_setting_are_compared_and_ablation_arms_are_not(tmp_path):
    accs = {(arm, norm): [0.60 + 0.01 * seed for seed in range(3)] for arm in BATCH_ARMS for norm in ("bn", "gn")}
    accs["b2", "bn"] = [0.40, 0.42, 0.44]  # BN at batch 2: mean 42 %, 19 points below the others (61 %)
    write_arm_sweep(tmp_path / "levels", "norm_batch_size", BATCH_ARMS, accs)
    result = report(tmp_path / "levels")
    by_arm = {(c.first.label, c.second.label): c for c in result.one_factor if c.key == "arm/norm_batch_size"}
    assert len(by_arm) == 6  # b2, b8, b128 pairwise (3) at each norm (2)
    c = by_arm["arm/norm_batch_size=b128 model.norm=bn", "arm/norm_batch_size=b2 model.norm=bn"]
    assert c.values == ("b128", "b2") and c.moved == ("data.batch_size", "optim.lr", "trainer.limit_train_batches")
    assert c.welch("test_acc").difference == pytest.approx(0.19)
    by_norm = [c for c in result.one_factor if c.key == "model.norm"]
    assert len(by_norm) == 3  # bn vs gn at each batch size, as before
    row = table_row(
        (tmp_path / "levels" / "report.md").read_text().split("## One-factor comparisons")[1],
        "`arm/norm_batch_size=b128 model.norm=gn` vs `arm/norm_batch_size=b2 model.norm=gn`",
    )
    assert row[1] == (
        "arm/norm_batch_size: b128 vs b2 (data.batch_size: 128 vs 2; optim.lr: 0.01 vs 0.00015625; "
        "trainer.limit_train_batches: 120 vs 7680)"
    )
    assert row[2] == "+0 points, p = 1: not resolved at n = 3 vs 3"
    # the plot's lines: test accuracy per norm against the batch size the arms set, in batch order
    levels = arm_levels(result.one_factor)
    assert (levels.arm, levels.key) == ("arm/norm_batch_size", "data.batch_size")
    means = {name: [g.stats["test_acc"].mean for g in line.values()] for name, line in levels.lines.items()}
    batches = {name: list(line) for name, line in levels.lines.items()}
    assert batches == {"model.norm=bn": [2, 8, 128], "model.norm=gn": [2, 8, 128]}
    assert means == {"model.norm=bn": pytest.approx([0.42, 0.61, 0.61]), "model.norm=gn": pytest.approx([0.61] * 3)}
    assert "test_acc_by_arm.png" in result.plots

    # no_dropout vs gap changes two things at once: not a one-factor comparison; each vs base is one key
    ablation_accs = {(arm, norm): [0.6, 0.61, 0.62] for arm in ABLATION_ARMS for norm in ("bn", "gn")}
    write_arm_sweep(tmp_path / "ablation", "deeper", ABLATION_ARMS, ablation_accs)
    keys = {(c.first.label, c.second.label): c.key for c in report(tmp_path / "ablation").one_factor}
    assert keys["arm/deeper=base model.norm=bn", "arm/deeper=no_dropout model.norm=bn"] == "model.dropout"
    assert ("arm/deeper=gap model.norm=bn", "arm/deeper=no_dropout model.norm=bn") not in keys
    assert "arm/deeper" not in keys.values()


def test_one_factor_comparisons_pair_groups_differing_in_one_key_besides_the_lr(synthetic_sweep):
    result = report(synthetic_sweep)
    # bn vs nobn at each lr differ in model.norm only; bn at 1e-3 vs bn at 1e-2 only in the lr: not paired
    found = {(c.first.label, c.second.label, c.key) for c in result.one_factor}
    assert found == {
        ("model=bn optim.lr=1e-3", "model=nobn optim.lr=1e-3", "model.norm"),
        ("model=bn optim.lr=1e-2", "model=nobn optim.lr=1e-2", "model.norm"),
    }
    section = (synthetic_sweep / "report.md").read_text().split("## One-factor comparisons")[1]
    row = table_row(section, "`model=bn optim.lr=1e-2` vs `model=nobn optim.lr=1e-2`")
    # test acc 92 ± 2 vs 85 ± 5 %: +7 points, Welch p = 0.12; epoch-1 losses equal (0.5, 0.6, 0.7 both)
    assert row[1:] == [
        "model.norm: bn vs none",
        "+7 points, p = 0.12: not resolved at n = 3 vs 3",
        "+0, p = 1: not resolved at n = 3 vs 3",
        "+0, p = 1: not resolved at n = 3 vs 3",
    ]
