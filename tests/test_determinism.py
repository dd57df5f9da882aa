"""Repeatability: the same command with the same seed, run twice in fresh output dirs, records the same epochs
byte for byte. Default settings (no trainer.deterministic override): that is what a study gets."""

import json
from pathlib import Path

from conftest import run_cli

SHORT = [
    "model=deep_cnn_bn",  # BN and dropout: batch statistics and the RNG stream both have to repeat
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def fresh_run(run_dir: Path, data_root: Path) -> dict:
    result = run_cli("cnnstudy.train", f"hydra.run.dir={run_dir}", f"data.root={data_root}", *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def test_two_fresh_runs_record_byte_identical_epochs(tmp_path, data_root):
    first = fresh_run(tmp_path / "first", data_root)
    second = fresh_run(tmp_path / "second", data_root)
    assert first["config"]["trainer"]["deterministic"] == "warn"  # the default, recorded in the resolved config
    assert len(first["epochs"]) == 2
    assert json.dumps(first["epochs"]) == json.dumps(second["epochs"])
    assert (first["test_acc"], first["test_loss"]) == (second["test_acc"], second["test_loss"])
