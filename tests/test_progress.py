"""The progress output: tqdm's bar on a terminal, one line per epoch in a file (a SLURM log, CI)."""

import os
import re
import subprocess
import sys

from conftest import ROOT

EPOCH_LINE = re.compile(
    r"\[cnnstudy\]\[INFO\] - epoch (\d)/2: train loss [\d.]+, acc [\d.]+ %; val loss [\d.]+, acc [\d.]+ %; [\d.]+ s$"
)


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


def test_a_terminal_gets_the_tqdm_bar_and_a_pipe_the_epoch_lines():
    probe = "from cnnstudy.callbacks import progress_bar; print(type(progress_bar(20)).__name__)"
    piped = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert piped.stdout.split() == ["EpochLines"]
    leader, follower = os.openpty()  # a pseudo-terminal as stdout, as an interactive shell gives
    try:
        subprocess.run([sys.executable, "-c", probe], cwd=ROOT, stdout=follower, check=True, timeout=120)
        output = os.read(leader, 1000).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert output.split() == ["TQDMProgressBar"]
