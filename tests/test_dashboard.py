"""TensorBoard shows every job of a real sweep: scalars, hparams, and the report's overlay layout."""

import json
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from cnnstudy.report import report

from conftest import run_cli, tiny_sweep


def get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"X-XSRF-Protected": "1", "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def tensorboard(tmp_path):
    """Start TensorBoard on 127.0.0.1 (a free port) for a log dir; yields a function of the dir."""
    processes = []

    def start(logdir) -> str:
        process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", "0", "--load_fast", "false", "--reload_interval", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        processes.append(process)
        deadline = time.time() + 60
        while time.time() < deadline:
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", process.stdout.readline())
            if match:
                return f"http://127.0.0.1:{match[1]}"
        raise AssertionError("TensorBoard did not start")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.subprocess
def test_tensorboard_lists_every_job_with_scalars_hparams_and_the_overlay_layout(tmp_path, data_root, tensorboard):
    sweep = tiny_sweep(data_root, tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    diverging = run_cli(
        "cnnstudy.train", "-m", "model=nobn", "optim=sgd", "optim.lr=1e6", f"hydra.sweep.dir={tmp_path / 'diverged'}",
        f"data.root={data_root}", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    )  # fmt: skip
    assert diverging.returncode == 0, diverging.stderr[-3000:]
    report(tmp_path)
    url = tensorboard(tmp_path)

    deadline, tags = time.time() + 90, {}
    while time.time() < deadline:
        tags = get(f"{url}/data/plugin/scalars/tags")
        if sum("acc_loss/val_acc" in t for t in tags.values()) >= 4 and "tb_summary/model=nobn" in tags:
            break
        time.sleep(1)
    job_runs = {run: t for run, t in tags.items() if "/tb/" in run and not run.startswith("diverged")}
    names = {run.split("/tb/")[1].split(",trainer.")[0] for run in job_runs}
    assert names == {f"model={m},optim.lr={lr}" for m in ("bn", "nobn") for lr in ("0.001", "0.01")}
    for run, run_tags in job_runs.items():
        # the epoch curves under one group that TIME SERIES opens on; no `epoch` counter card
        curves = {f"acc_loss/{m}" for m in ("train_loss", "train_acc", "val_loss", "val_acc")}
        assert curves | {"hp/test_acc"} <= set(run_tags) and "epoch" not in run_tags, run
        points = get(f"{url}/data/plugin/scalars/scalars?run={urllib.parse.quote(run)}&tag=acc_loss/val_acc")
        assert len(points) == 2
    # one summary run per overlaid line, so TensorBoard colours bn and nobn apart; a chart's tag is its panel
    for model in ("bn", "nobn"):
        assert {"val_acc/optim.lr=0.001", "val_acc/optim.lr=0.01"} <= set(tags[f"tb_summary/model={model}"])
    run, tag = urllib.parse.quote("tb_summary/model=bn"), urllib.parse.quote("val_acc/optim.lr=0.001")
    steps = [p[1] for p in get(f"{url}/data/plugin/scalars/scalars?run={run}&tag={tag}")]
    assert steps == [1, 2]  # epochs counted from 1, as in curves.png

    experiment = get(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"model", "lr", "seed", "params", "status"} <= hparams and {"hp/test_acc", "hp/best_val_acc"} <= metrics
    assert "optim.lr" not in hparams  # one column per hyperparameter: the override of optim.lr is the lr column
    # one row per job in the HPARAMS table, the diverged job included (with its status, without a test accuracy)
    every_status = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    request = {"experimentName": "", "allowedStatuses": every_status, "startIndex": 0, "sliceSize": 100}
    groups = get(f"{url}/data/plugin/hparams/session_groups", {**request, "colParams": [{"hparam": "status"}]})
    rows = sorted(
        (g["hparams"]["status"], g["hparams"]["lr"], sorted(m["name"]["tag"] for m in g["metricValues"]))
        for g in groups["sessionGroups"]
    )
    completed = ["hp/best_val_acc", "hp/test_acc"]
    assert rows == [("completed", lr, completed) for lr in (1e-3, 1e-3, 1e-2, 1e-2)] + [
        ("diverged", 1e6, ["hp/best_val_acc"])
    ]

    layout = get(f"{url}/data/plugin/custom_scalars/layout")
    charts = [chart["title"] for category in layout["category"] for chart in category["chart"]]
    assert (
        "val_acc: optim.lr=0.001 (mean over seeds)" in charts and "val_acc: optim.lr=0.01 (mean over seeds)" in charts
    )
