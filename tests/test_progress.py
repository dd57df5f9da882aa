"""The progress output: tqdm's bar on a terminal, one line per epoch in a file (a SLURM log, CI)."""

import copy
import json
import os
import re
import subprocess
import sys

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar

from cnnstudy.callbacks import EpochLines, progress_bar
from cnnstudy.record import same_run, setup_identity

from conftest import ROOT

EPOCH_LINE = re.compile(
    r"\[cnnstudy\]\[INFO\] - epoch (\d)/2: train loss [\d.]+, acc [\d.]+ %; val loss [\d.]+, acc [\d.]+ %; [\d.]+ s$"
)


@pytest.mark.subprocess
@pytest.mark.slow
def test_redirected_training_writes_one_line_per_epoch_and_no_carriage_returns(tmp_path, data_root):
    log = tmp_path / "train.out"
    with log.open("w") as out:  # stdout and stderr into one file, as a SLURM job's log
        result = subprocess.run(
            [sys.executable, "-m", "cnnstudy.train", f"hydra.run.dir={tmp_path / 'run'}", f"data.root={data_root}"]
            + ["trainer.max_epochs=2", "trainer.limit_train_batches=10", "trainer.limit_val_batches=5"]
            + ["trainer.limit_test_batches=5"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    text = log.read_text()
    assert result.returncode == 0, text[-3000:]
    assert "\r" not in text
    epochs = [m[1] for line in text.splitlines() if (m := EPOCH_LINE.search(line))]
    assert epochs == ["1", "2"], text[-3000:]
    assert sum("epoch" in line and "val loss" in line for line in text.splitlines()) == 2


def test_a_terminal_gets_the_tqdm_bar_and_a_file_the_epoch_lines(monkeypatch, tmp_path):
    leader, follower = os.openpty()  # a pseudo-terminal, as an interactive shell gives stdout
    try:
        with open(follower, "w", closefd=False) as terminal:
            monkeypatch.setattr(sys, "stdout", terminal)
            assert isinstance(progress_bar(20), TQDMProgressBar) and progress_bar(20).refresh_rate == 20
        with (tmp_path / "log").open("w") as log:
            monkeypatch.setattr(sys, "stdout", log)
            assert isinstance(progress_bar(20), EpochLines)
    finally:
        os.close(leader)
        os.close(follower)


def test_how_progress_is_shown_is_not_part_of_a_runs_identity():
    """A run recorded with tqdm's bar (every archived record) is the same run, and of the same group, as one
    configured with today's progress_bar: a re-run skips or resumes it, the report groups them together."""
    recorded = json.loads((ROOT / "docs/results/norm_batch_size/2026-12-03_a/0/metrics.json").read_text())["config"]
    assert recorded["callbacks"]["progress_bar"]["_target_"] == "lightning.pytorch.callbacks.TQDMProgressBar"
    today = copy.deepcopy(recorded)
    today["callbacks"]["progress_bar"] = {"_target_": "cnnstudy.callbacks.progress_bar", "refresh_rate": 20}
    assert same_run(recorded, today) and setup_identity(recorded) == setup_identity(today)
