"""cnnstudy.rerun re-trains an archived job through the real entry points and compares its epochs bit for bit."""

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import run_cli

TINY_JOB = [
    "model=bn",
    "data=mnist",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=5",
    "trainer.limit_test_batches=5",
    "threads=1",
]


@pytest.fixture(scope="module")
def archived_job(tmp_path_factory, data_root):
    """A finished tiny MNIST job (2 epochs of 20 batches), as a study would archive it."""
    job = tmp_path_factory.mktemp("archive") / "job"
    done = run_cli("cnnstudy.train", *TINY_JOB, f"hydra.run.dir={job}", env={"CNNSTUDY_DATA_DIR": str(data_root)})
    assert done.returncode == 0, done.stderr
    return job


def rerun(*args, data_root):
    return run_cli("cnnstudy.rerun", *map(str, args), env={"CNNSTUDY_DATA_DIR": str(data_root)})


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_rerun_of_a_job_matches_its_epochs_bit_for_bit(archived_job, data_root, tmp_path):
    done = rerun(archived_job, "--out", tmp_path / "again", data_root=data_root)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "for 2 of 2 epochs" in lines[0] and "1 threads as recorded" in lines[0]
    assert lines[1:] == ["epoch 0: bit for bit", "epoch 1: bit for bit"]
    archived = json.loads((archived_job / "metrics.json").read_text())
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["epochs"] == archived["epochs"] and again["test_acc"] == archived["test_acc"]


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_record_one_bit_off_is_found_and_named(archived_job, data_root, tmp_path):
    """One epoch value moved by one float32 ulp in a copy of the record, which also says it ran on another torch:
    --epochs 1 re-trains one epoch, names that key with both values and torch as the likely reason, exits 1."""
    record = json.loads((archived_job / "metrics.json").read_text())
    true_loss = record["epochs"][0]["val_loss"]
    record["epochs"][0]["val_loss"] = true_loss + math.ulp(true_loss) * 2**29  # one ulp of a float32
    record["provenance"]["torch"] = "2.0.0"  # as if it had run on another torch
    altered = tmp_path / "altered" / "metrics.json"
    altered.parent.mkdir()
    altered.write_text(json.dumps(record))
    done = rerun(altered, "--epochs", 1, "--out", tmp_path / "again", data_root=data_root)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "for 1 of 2 epochs" in lines[0]
    off_by_one_bit = record["epochs"][0]["val_loss"]
    assert lines[1] == f"epoch 0: differs, first at val_loss: archived {off_by_one_bit!r}, rerun {true_loss!r}"
    # the likely reason, from the records' provenance (code.commit too, if a commit landed in between)
    assert lines[2].startswith("differs from the archived run: ") and len(lines) == 3
    assert f"torch: 2.0.0 -> {torch.__version__}" in lines[2] and "threads" not in lines[2]
    assert len(json.loads((tmp_path / "again" / "metrics.json").read_text())["epochs"]) == 1


@pytest.mark.subprocess
def test_what_is_not_a_rerunnable_job_is_answered_in_one_line(tmp_path):
    def record(name: str, **fields) -> Path:
        path = tmp_path / name / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"status": "completed", "overrides": [], **fields}))
        return path

    failed_early = record("failed", status="failed", epochs=[], error="bad config")
    job = record("job", config={"seed": 0}, epochs=[{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.5}])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    cases = {
        (tmp_path / "missing",): "is neither a job dir",
        (tmp_path / "full",): "is neither a job dir",
        (failed_early,): "records no resolved config or no epoch",
        (job, "--epochs", 3): "--epochs 3: the job recorded 2 epochs",
        (job, "--out", tmp_path / "full"): "is not empty",
        (job, "--epochs", "two"): "invalid int value",
    }
    for args, message in cases.items():
        done = run_cli("cnnstudy.rerun", *map(str, args))
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and message in done.stderr and done.stderr.count("\n") == 1
        assert done.stdout == ""
