"""Provenance: what a run record says ran it (code, libraries, hardware, times), archives without the machine's
paths, and the report's warning when a group's runs ran on different versions."""

import json
import platform
import re
import subprocess
from pathlib import Path

import lightning
import numpy
import pytest
import torch

from cnnstudy import provenance
from cnnstudy.hardware import detect_hardware
from cnnstudy.record import RunRecord
from cnnstudy.report import archive, report

from conftest import ROOT, run_cli


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_the_code_version_is_the_checkouts_commit_and_whether_it_has_changes():
    version = provenance.code_version.__wrapped__()  # uncached: the tree as it is now
    assert version == {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def test_outside_a_checkout_the_code_version_is_the_installed_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path)  # where a wheel's copy would be: no git checkout
    installed = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)[1]
    assert provenance.code_version.__wrapped__() == {"version": installed}


def absolute_paths(value) -> list[str]:
    """Every string in a record that is an absolute path, or an override of one."""
    if isinstance(value, dict):
        return [p for item in value.values() for p in absolute_paths(item)]
    if isinstance(value, list):
        return [p for item in value for p in absolute_paths(item)]
    is_path = isinstance(value, str) and (value.startswith("/") or "=/" in value)
    return [value] if is_path else []


def test_a_record_says_what_ran_it_and_when_it_ended(tmp_path):
    hardware = detect_hardware()
    record = RunRecord(tmp_path, {"provenance": provenance.run_provenance(hardware, "auto: fp32: no bf16 units")})
    record.write("running")
    running = json.loads((tmp_path / "metrics.json").read_text())["provenance"]
    assert running["ended"] is None and running["started"].endswith("+00:00")
    record.write("completed")
    written = json.loads((tmp_path / "metrics.json").read_text())["provenance"]
    assert written["started"] == running["started"] <= written["ended"]
    assert written["code"] == provenance.code_version()
    assert (written["python"], written["torch"]) == (platform.python_version(), torch.__version__)
    assert (written["lightning"], written["numpy"]) == (lightning.__version__, numpy.__version__)
    assert written["threads"] == torch.get_num_threads() and written["hardware"]["cpu"] == hardware.cpu
    assert absolute_paths(written) == []


def write_run(run_dir: Path, **fields) -> None:
    """A job's record with the paths train.py writes: the data root, checkpoints and curves of that machine."""
    data_root = "/data/of/that/machine"
    config = {
        "seed": 0,
        "data": {"root": data_root, "batch_size": 100},
        "callbacks": {"model_checkpoint": {"dirpath": f"{run_dir}/checkpoints", "filename": "best-{epoch:02d}"}},
        "logger": {"tensorboard": {"save_dir": str(run_dir), "name": "tb"}},
    }
    record = {
        "overrides": ["model=bn", f"data.root={data_root}"],
        "config": config,
        "status": "completed",
        "best_ckpt": f"{run_dir}/checkpoints/best-epoch=01.ckpt",
        "error": f"StorageError: {run_dir}/x: No space left on device",  # a message: not a path
        **fields,
    }
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(record, indent=2))


def test_archive_keeps_paths_inside_the_run_dir_relative_to_it_and_drops_the_others(tmp_path):
    run_dir = tmp_path / "multirun" / "sweep" / "0"
    write_run(run_dir)
    original = json.loads((run_dir / "metrics.json").read_text())
    archived = json.loads((archive(run_dir.parent, tmp_path / "records") / "sweep" / "0" / "metrics.json").read_text())
    assert archived["best_ckpt"] == "checkpoints/best-epoch=01.ckpt"
    assert archived["config"]["callbacks"]["model_checkpoint"]["dirpath"] == "checkpoints"
    assert archived["config"]["logger"]["tensorboard"]["save_dir"] == "."
    assert archived["config"]["data"] == {"batch_size": 100}  # no root
    assert archived["overrides"] == ["model=bn"]
    assert archived["error"] == original["error"]
    assert absolute_paths(archived) == [] and len(absolute_paths(original)) == 5
    for key in ("config", "best_ckpt", "overrides"):
        original.pop(key), archived.pop(key)
    assert archived == original  # nothing else changed


def session(code: str = "abc1234", torch_version: str = "2.14.1", **more) -> dict:
    return {"code": {"commit": code + "0" * 33, "dirty": False}, "python": "3.11.7", "torch": torch_version} | {
        "lightning": "2.6.6",
        "numpy": "2.4.6",
        **more,
    }


def write_job(sweep: Path, number: int, overrides: list[str], test_acc: float, provenance=None, precision=None):
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    values = dict(o.split("=", 1) for o in overrides)
    trainer = {"max_epochs": 1} | ({"precision": precision} if precision else {})
    config = {"seed": int(values["seed"]), "optim": {"lr": float(values["optim.lr"])}, "trainer": trainer}
    epochs = [{"epoch": 0, "train_loss": 0.5, "train_acc": 0.9, "val_loss": 0.3, "val_acc": 0.95}]
    record = {"status": "completed", "overrides": overrides, "config": config, "test_acc": test_acc}
    record |= {"best_val_acc": 0.95, "epochs": epochs, "params": 10}
    if provenance:
        record["provenance"] = provenance
    (job / "metrics.json").write_text(json.dumps(record))


def warnings_of(sweep: Path) -> list[str]:
    report(sweep)
    return [line for line in (sweep / "report.md").read_text().splitlines() if line.startswith("**warning:**")]


def test_the_report_names_a_group_whose_runs_ran_on_different_versions(tmp_path):
    jobs = [
        ("optim.lr=0.1", session(), session(torch_version="2.15.0")),  # another torch
        ("optim.lr=0.2", session(), session(code="def5678")),  # another commit
        ("optim.lr=0.3", session(), None),  # one from before provenance was recorded
        ("optim.lr=0.4", session(), session(torch_version="2.14.1", resumed_from=session(torch_version="2.13.0"))),
        ("optim.lr=0.5", session(), session()),  # the same: no warning
    ]
    number = 0
    for lr, *sessions in jobs:
        for seed, provenance_of_seed in enumerate(sessions):
            write_job(tmp_path, number, [lr, f"seed={seed}"], 0.9, provenance_of_seed)
            number += 1
    assert warnings_of(tmp_path) == [
        "**warning:** group `optim.lr=0.1` ran on different versions: torch 2.14.1 / 2.15.0",
        "**warning:** group `optim.lr=0.2` ran on different versions: code abc1234 / def5678",
        "**warning:** group `optim.lr=0.3` ran on different versions: provenance not recorded for 1 of 2 runs",
        "**warning:** group `optim.lr=0.4` ran on different versions: torch 2.13.0 / 2.14.1",
    ]


def test_records_without_provenance_report_as_before(tmp_path):
    for seed in range(2):
        write_job(tmp_path, seed, ["optim.lr=0.1", f"seed={seed}"], 0.9)
    assert warnings_of(tmp_path) == []


def test_groups_of_different_precisions_are_named_and_a_missing_precision_is_32_true(tmp_path):
    write_job(tmp_path, 0, ["optim.lr=0.1", "seed=0"], 0.9, precision=None)  # archived before trainer.precision
    write_job(tmp_path, 1, ["optim.lr=0.1", "seed=1"], 0.9, precision="32-true")
    write_job(tmp_path, 2, ["optim.lr=0.1", "trainer.precision=bf16-mixed", "seed=0"], 0.9, precision="bf16-mixed")
    assert warnings_of(tmp_path) == [
        "**warning:** the groups train at different precisions: 32-true: `optim.lr=0.1`; "
        "bf16-mixed: `trainer.precision=bf16-mixed`"
    ]
    assert "| optim.lr=0.1 | 2 |" in (tmp_path / "report.md").read_text()  # the fp32 runs are one group


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_real_runs_record_has_its_provenance_and_its_archive_no_machine_path(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "cnnstudy.train",
        f"hydra.run.dir={sweep / '0'}",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=10",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((sweep / "0" / "metrics.json").read_text())
    written = record["provenance"]
    assert written["code"] == provenance.code_version() and written["torch"] == torch.__version__
    assert written["threads"] >= 1 and written["started"] <= written["ended"]
    assert absolute_paths(written) == [] and absolute_paths(record) != []  # the data root, checkpoints
    archived = json.loads((archive(sweep, tmp_path / "records") / "sweep" / "0" / "metrics.json").read_text())
    assert absolute_paths(archived) == []
    assert (sweep / "0" / archived["best_ckpt"]).is_file() and archived["provenance"] == written
