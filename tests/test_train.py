"""End to end through `python -m cnnstudy.train`, on the real data."""

import json
from pathlib import Path

import pytest

from cnnstudy.record import run_name

from conftest import run_cli

CONTRACT = {"status", "test_acc", "test_loss", "best_val_acc", "params", "seconds", "overrides", "epochs"}
EPOCH = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc"}


def event_files(run_dir: Path) -> list[Path]:
    return list((run_dir / "tb").glob("*/events.out.tfevents.*"))


@pytest.mark.subprocess
def test_short_real_training_on_mnist_reaches_97_percent_and_records_every_epoch(tmp_path, data_root):
    result = run_cli(
        "cnnstudy.train",
        f"hydra.run.dir={tmp_path}",
        f"data.root={data_root}",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=75",  # 7,500 training images per epoch
        "optim.lr=2e-3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert CONTRACT <= metrics.keys() and metrics["status"] == "completed"
    assert metrics["params"] == 422_090
    assert metrics["test_acc"] >= 0.97, metrics["test_acc"]
    assert [set(e) for e in metrics["epochs"]] == [EPOCH, EPOCH]
    assert 0 <= metrics["epochs"][0]["train_acc"] <= 1 and metrics["best_val_acc"] >= 0.97
    assert (tmp_path / "checkpoints" / "last.ckpt").exists() and event_files(tmp_path)
    # Lightning's messages reach Hydra's console handler (stdout) once, not also its own stderr handler
    assert result.stdout.count("GPU available") == 1 and "GPU available" not in result.stderr
    assert "GPU available" in (tmp_path / "train.log").read_text()


@pytest.mark.subprocess
def test_two_by_two_multirun_writes_four_results(tmp_path, data_root):
    result = run_cli(
        "cnnstudy.train",
        "-m",
        "model=bn,nobn",
        "optim.lr=1e-3,1e-2",
        f"hydra.sweep.dir={tmp_path}",
        f"data.root={data_root}",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        # "best" = lowest val acc, so the tested checkpoint is an early one: testing it must not roll
        # metrics.json back to that epoch.
        "callbacks.model_checkpoint.mode=min",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent for p in tmp_path.glob("*/metrics.json"))
    assert [r.name for r in runs] == ["0", "1", "2", "3"]
    seen = set()
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert CONTRACT <= metrics.keys() and metrics["status"] == "completed"
        assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
        (tb_run,) = {p.parent.name for p in event_files(run)}
        assert tb_run == run_name(metrics["overrides"])
        assert "data.root" not in tb_run and "model=" in tb_run and "optim.lr=" in tb_run
        seen.add((metrics["choices"]["model"], metrics["config"]["optim"]["lr"]))
    assert seen == {(m, lr) for m in ("bn", "nobn") for lr in (1e-3, 1e-2)}


@pytest.mark.subprocess
def test_missing_data_stops_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("cnnstudy.train", f"hydra.run.dir={tmp_path / 'run'}", f"data.root={empty}", "data.download=false")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(empty) in lines[0] and "CNNSTUDY_DATA_DIR" in lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
