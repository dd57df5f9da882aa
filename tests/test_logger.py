"""The `logger` config group: a run logged to CSV or MLflow is read back through that logger's own format
or API, and holds the same per-epoch val_acc as the run's metrics.json."""

import csv
import json

import pytest

from cnnstudy.report import report

from conftest import run_cli

RUN = ["model=nobn", "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
       "trainer.limit_test_batches=1"]  # fmt: skip
RUN_NAME = ",".join(sorted(RUN))  # the logger choice is not part of it


def train(run_dir, data_root, logger: str, *extra: str) -> dict:
    result = run_cli(
        "cnnstudy.train", f"logger={logger}", *RUN, *extra, f"hydra.run.dir={run_dir}", f"data.root={data_root}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.subprocess
def test_csv_logger_holds_the_epochs_val_acc(tmp_path, data_root):
    record = train(tmp_path, data_root, "csv")
    assert not (tmp_path / "tb").exists()
    with open(tmp_path / "csv" / RUN_NAME / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val_acc")]
    assert [(int(r["epoch"]), float(r["val_acc"])) for r in rows] == [
        (e["epoch"], pytest.approx(e["val_acc"], rel=1e-6)) for e in record["epochs"]
    ]
    assert (tmp_path / "csv" / RUN_NAME / "hparams.yaml").read_text().count("status: completed") == 1


@pytest.mark.subprocess
def test_mlflow_logger_holds_the_epochs_val_acc_and_the_hparams(tmp_path, data_root):
    import mlflow  # in the dev extra: `make test` has it

    record = train(tmp_path, data_root, "mlflow")
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("cnnstudy").experiment_id])
    assert run.info.run_name == RUN_NAME and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.value for m in history] == [pytest.approx(e["val_acc"], rel=1e-6) for e in record["epochs"]]
    assert run.data.params["status"] == "completed" and float(run.data.params["lr"]) == record["config"]["optim"]["lr"]
    assert run.data.metrics["hp/test_acc"] == pytest.approx(record["test_acc"], rel=1e-6)


@pytest.mark.subprocess
def test_loggers_combine_and_stay_out_of_the_run_identity(tmp_path, data_root):
    record = train(tmp_path, data_root, "[tensorboard,csv]")
    assert (tmp_path / "tb" / RUN_NAME).is_dir() and (tmp_path / "csv" / RUN_NAME / "metrics.csv").is_file()
    # the same run with another logger is the same run: reported, not retrained, not refused
    again = run_cli("cnnstudy.train", "logger=csv", *RUN, f"hydra.run.dir={tmp_path}", f"data.root={data_root}")
    assert again.returncode == 0 and "already completed" in again.stdout, again.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text()) == record


@pytest.mark.subprocess
def test_a_csv_run_records_its_probes_and_the_report_shows_them(tmp_path, data_root):
    """No TensorBoard: the probes' scalars are in the run record (probes.json), the same numbers the CSV logger
    got, and the report's per-layer section holds them."""
    run_dir = tmp_path / "sweep" / "0"
    record = train(run_dir, data_root, "csv", "probes=layer_stats", "probes.layer_stats.every_n_steps=2")
    assert record["status"] == "completed" and not (run_dir / "tb").exists()
    probes = json.loads((run_dir / "probes.json").read_text())
    layers = {tag.split("/", 1)[1] for tag in probes}
    assert "features.0.0" in layers  # the first conv; every conv and linear layer has the three scalars
    assert set(probes) == {f"{kind}/{layer}" for kind in ("grad_norm", "act_mean", "act_std") for layer in layers}
    assert all(list(steps) == ["0", "2", "4"] for steps in probes.values())  # 6 steps: 2 epochs of 3 batches
    assert all(0 < v < 1e3 for tag, steps in probes.items() if not tag.startswith("act_mean") for v in steps.values())
    (logged_csv,) = run_dir.glob("csv/*/metrics.csv")
    with open(logged_csv) as f:
        logged = {(row["step"], tag): float(row[tag]) for row in csv.DictReader(f) for tag in probes if row.get(tag)}
    assert logged == {(step, tag): pytest.approx(v, rel=1e-9) for tag, s in probes.items() for step, v in s.items()}

    report(tmp_path / "sweep")
    section = (tmp_path / "sweep" / "report.md").read_text().split("## Per-layer norms")[1]
    (row,) = [line for line in section.splitlines() if line.startswith("| ") and "| features.0.0 |" in line]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    grad = list(probes["grad_norm/features.0.0"].values())
    assert cells[2:6] == ["1", "3", f"{grad[0]:.4f} ± –", f"{max(grad):.4f} ± –"]
