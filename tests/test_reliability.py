"""Exact resume, safe checkpoints, and one clear line for every bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnstudy.checkpoints import load_checkpoint
from cnnstudy.errors import UserError

from conftest import ROOT, run_cli

SMALL = [
    "model=deep_cnn_bn",  # dropout and BN: the RNG stream and BN buffers must both resume exactly
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=40",
    "trainer.limit_val_batches=3",
    "trainer.limit_test_batches=3",
    "trainer.deterministic=true",
]


def train_args(run_dir: Path, data_root: Path, *extra: str) -> list[str]:
    return ["cnnstudy.train", f"hydra.run.dir={run_dir}", f"data.root={data_root}", *SMALL, *extra]


def results(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {key: metrics[key] for key in ("status", "test_acc", "test_loss", "best_val_acc", "epochs")}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli(*train_args(run_dir, data_root))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.subprocess
def test_killed_run_resumes_to_bitwise_equal_metrics(tmp_path, data_root, finished_run):
    run_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", *train_args(run_dir, data_root)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # mid-epoch 1, right after epoch 0 was checkpointed
    process.wait()
    interrupted = json.loads((run_dir / "metrics.json").read_text())
    assert interrupted["status"] == "running" and len(interrupted["epochs"]) < 3

    resumed = run_cli(*train_args(run_dir, data_root))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    assert results(run_dir) == results(finished_run)
    assert [e["epoch"] for e in results(run_dir)["epochs"]] == [0, 1, 2]


@pytest.mark.subprocess
def test_completed_run_is_reported_not_retrained(finished_run, data_root):
    before = (finished_run / "metrics.json").stat().st_mtime_ns
    again = run_cli(*train_args(finished_run, data_root))
    assert again.returncode == 0 and "already completed" in again.stdout
    assert (finished_run / "metrics.json").stat().st_mtime_ns == before


@pytest.mark.subprocess
def test_evaluate_reproduces_the_reported_test_accuracy(finished_run, data_root):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    result = run_cli("cnnstudy.evaluate", f"ckpt_path={metrics['best_ckpt']}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"test_acc={metrics['test_acc']} test_loss={metrics['test_loss']}" in result.stdout


@pytest.mark.subprocess
def test_checkpoints_load_as_weights_only_and_say_what_made_them(finished_run):
    checkpoint = load_checkpoint(finished_run / "checkpoints" / "last.ckpt")
    assert checkpoint["cnnstudy"]["choices"]["model"] == "deep_cnn_bn"
    assert checkpoint["cnnstudy"]["config"]["trainer"]["max_epochs"] == 3
    assert not list(finished_run.glob("checkpoints/.*.tmp")), "temp files of atomic writes are left behind"


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {}, "cnnstudy": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match="was refused"):
        load_checkpoint(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()


def bad_inputs(tmp: Path, finished: Path, data_root: Path) -> dict:
    """name -> (command args, a piece of the one line it must print)."""
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "a_file").write_text("")
    (tmp / "not.ckpt").write_text("{}")
    torch.save({"state_dict": {}, "cnnstudy": Evil()}, tmp / "evil.ckpt")
    best = json.loads((finished / "metrics.json").read_text())["best_ckpt"]
    run = ["cnnstudy.train", f"hydra.run.dir={tmp / 'run'}", f"data.root={data_root}"]
    return {
        "unknown model": ([*run, "model=bnn"], "Available options in 'model': bn, cifar_cnn"),
        "unknown data": ([*run, "data=fashion"], "Could not find 'data/fashion'"),
        "unknown optimizer": ([*run, "optim=adamw"], "Available options in 'optim': adam, sgd"),
        "misspelled key": ([*run, "optim.lrr=0.1"], "Key 'lrr' is not in struct"),
        "override without =": ([*run, "model"], "Error parsing override 'model'"),
        "sweep without -m": ([*run, "model=bn,nobn"], "add -m (--multirun)"),
        "non-numeric lr": ([*run, "optim.lr=fast"], "optim.lr='fast' must be a positive number"),
        "non-positive lr": ([*run, "optim.lr=0"], "optim.lr=0 must be a positive number"),
        "batch size 0": ([*run, "data.batch_size=0"], "data.batch_size=0 must be a positive whole number"),
        "batch larger than split": ([*run, "data.batch_size=60000"], "is larger than the training split"),
        "negative epochs": ([*run, "trainer.max_epochs=-1"], "trainer.max_epochs=-1 must be a positive whole number"),
        "empty data root": ([*run[:2], f"data.root={tmp / 'empty'}", "data.download=false"], "mnist not found"),
        "unwritable output dir": (["cnnstudy.train", f"hydra.run.dir={tmp / 'a_file' / 'run'}"], "cannot be written"),
        "unknown activation": ([*run, "model.activation=swishy"], "model.activation='swishy' is unknown"),
        "scheduler settings without a scheduler": ([*run, "+scheduler.step_size=5"], "names no scheduler"),
        "checkpoint of another model": (
            ["cnnstudy.evaluate", f"ckpt_path={best}", "model=bn"],
            "does not fit model=bn",
        ),
        "checkpoint of another dataset": (
            ["cnnstudy.evaluate", f"ckpt_path={best}", "data=cifar10", f"data.root={data_root}"],
            "trained as model=deep_cnn_bn data=mnist",
        ),
        "not a checkpoint": (["cnnstudy.evaluate", f"ckpt_path={tmp / 'not.ckpt'}"], "is not a checkpoint"),
        "malicious checkpoint": (["cnnstudy.evaluate", f"ckpt_path={tmp / 'evil.ckpt'}"], "was refused"),
        "missing checkpoint": (["cnnstudy.evaluate", f"ckpt_path={tmp / 'nope.ckpt'}"], "does not exist"),
    }


BAD = [
    "unknown model", "unknown data", "unknown optimizer", "misspelled key", "override without =", "sweep without -m",
    "non-numeric lr", "non-positive lr", "batch size 0", "batch larger than split", "negative epochs",
    "empty data root", "unwritable output dir", "unknown activation", "scheduler settings without a scheduler",
    "checkpoint of another model",
    "checkpoint of another dataset", "not a checkpoint", "malicious checkpoint", "missing checkpoint",
]  # fmt: skip


@pytest.mark.subprocess
@pytest.mark.parametrize("case", BAD)
def test_bad_input_gets_one_clear_line(case, tmp_path, finished_run, data_root):
    args, expected = bad_inputs(tmp_path, finished_run, data_root)[case]
    result = run_cli(*args, env={"HYDRA_FULL_ERROR": ""})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert expected in lines[0]
    metrics = tmp_path / "run" / "metrics.json"
    assert not metrics.exists() or json.loads(metrics.read_text())["status"] != "completed"


@pytest.mark.subprocess
def test_a_different_config_in_a_used_dir_is_refused(finished_run, data_root):
    result = run_cli(*train_args(finished_run, data_root, "optim.lr=0.01"))
    assert result.returncode == 2 and "holds a run of a different config" in result.stderr
    assert json.loads((finished_run / "metrics.json").read_text())["config"]["optim"]["lr"] == 0.001


@pytest.mark.subprocess
def test_a_failed_job_without_a_checkpoint_is_retried_with_the_config_given_now(tmp_path, data_root):
    # as a sweep records a job that raised before its first checkpoint, under a config since fixed
    tmp_path.joinpath("metrics.json").write_text(json.dumps({"status": "failed", "config": {"seed": 99}}))
    result = run_cli(*train_args(tmp_path, data_root, "trainer.max_epochs=1"))
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["config"]["seed"] == 0 and len(metrics["epochs"]) == 1
