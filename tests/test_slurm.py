"""Sweeps through `hydra/launcher=slurm` on a real SLURM cluster (`make slurm-up` starts a one-node one).

Skipped, with the reason, where no cluster answers `sinfo`. Each job asks 1 CPU and runs 1 thread, so a
2-core node runs two at once. What these cover and what they do not: docs/scaling.md.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli

pytestmark = [pytest.mark.slurm, pytest.mark.subprocess, pytest.mark.slow]

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
# two epochs long enough (a few seconds each) to interrupt a job between them
TWO_EPOCHS = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=25",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


@pytest.fixture(scope="module")
def cluster() -> str:
    """The default partition's node state, e.g. 'idle'; skips the test where no cluster answers."""
    if shutil.which("sinfo") is None:
        pytest.skip("no SLURM cluster: sinfo not found (make slurm-up starts a local one, as root)")
    result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        pytest.skip(f"no SLURM cluster answers: sinfo: {(result.stderr or 'no nodes').strip()} (make slurm-up)")
    return result.stdout.split()[0]


def sweep(sweep_dir: Path, data_root: Path, *overrides: str) -> list[str]:
    return [
        "cnnstudy.train",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        "threads=1",
        f"hydra.sweep.dir={sweep_dir}",
        f"data.root={data_root}",
        *overrides,
    ]


def jobs(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def slurm_job_id(job_dir: Path) -> str:
    """The SLURM job id the job ran under (submitit's, as Hydra recorded it), e.g. '12_1'."""
    return yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]


def start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def wait_for_epoch(job_dir: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    """Until the job has recorded its first epoch and saved last.ckpt (and has epochs left to run)."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        metrics = job_dir / "metrics.json"
        if metrics.exists() and (job_dir / "checkpoints" / "last.ckpt").exists():
            if json.loads(metrics.read_text()).get("epochs"):
                return
        time.sleep(0.05)
    raise AssertionError(f"{job_dir} recorded no epoch in time (sweep exit status {process.poll()})")


def test_the_sweep_runs_as_an_sbatch_array_and_reports(cluster, tmp_path, data_root):
    result = run_cli(*sweep(tmp_path, data_root, "model=bn,nobn", "optim.lr=1e-3,1e-2", *TINY))
    assert result.returncode == 0, result.stderr[-3000:]
    found = jobs(tmp_path)
    assert sorted(found) == ["0", "1", "2", "3"] and all(m["status"] == "completed" for m in found.values())
    assert {(m["choices"]["model"], m["config"]["optim"]["lr"]) for m in found.values()} == {
        (model, lr) for model in ("bn", "nobn") for lr in (1e-3, 1e-2)
    }
    # one sbatch array of 4 tasks, each job ran as one of its tasks, with the preset's settings
    (script,) = tmp_path.glob(".submitit/*/*_submission.sh")
    array = script.name.split("_")[0]
    sbatch = script.read_text()
    for flag in ("--array=0-3%4", "--cpus-per-task=1", "--mem=4GB", "--time=120", "--signal=USR2@120"):
        assert f"#SBATCH {flag}" in sbatch
    assert {slurm_job_id(tmp_path / job) for job in found} == {f"{array}_{i}" for i in range(4)}
    assert f"slurm: submitted 4 job(s) as {array}" in result.stdout
    assert f"RUNNING: {array}_[" in result.stdout and f"slurm: done: {array}_[0-3]" in result.stdout
    for job in found:
        assert len(list((tmp_path / job / "tb").glob("*/events.out.tfevents.*"))) >= 1

    report = run_cli("cnnstudy.report", str(tmp_path))
    assert report.returncode == 0, report.stderr[-3000:]
    text = (tmp_path / "report.md").read_text()
    assert "nobn" in text and "0.01" in text


def test_a_request_no_node_can_run_stops_the_sweep_with_one_line_before_submitting(cluster, tmp_path, data_root):
    cores = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0])
    result = run_cli(*sweep(tmp_path, data_root, f"hydra.launcher.cpus_per_task={cores + 1}", *TINY))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: each job asks {cores + 1} CPUs (cpus_per_task={cores + 1} x tasks_per_node=1)")
    assert f"has {cores} CPUs" in line and "would never start" in line
    assert not (tmp_path / ".submitit").exists()  # nothing was submitted


def test_a_failing_and_a_diverging_job_are_recorded_and_the_array_completes(cluster, tmp_path, data_root):
    # data.batch_size=0 passes the override check and fails in the job, where the data is built
    args = sweep(tmp_path, data_root, "model=nobn", "optim=sgd", "optim.lr=1e6", "data.batch_size=0,100", *TINY)
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    found = jobs(tmp_path)
    assert (found["0"]["status"], found["1"]["status"]) == ("failed", "diverged")
    assert "data.batch_size=0 must be a positive whole number" in found["0"]["error"]
    assert found["1"]["diverged_epoch"] == 0


def test_a_cancelled_job_resumes_from_its_checkpoint_when_the_sweep_is_run_again(cluster, tmp_path, data_root):
    args = sweep(tmp_path, data_root, "model=bn,nobn", *TWO_EPOCHS)
    first = start(args, tmp_path / "first.log")
    wait_for_epoch(tmp_path / "1", first)
    job_id = slurm_job_id(tmp_path / "1")
    subprocess.run(["scancel", job_id], check=True)
    assert first.wait(timeout=240) == 1
    log = (tmp_path / "first.log").read_text()
    assert f"error: sweep job(s) #1 ({job_id} CANCELLED) ended without a result" in log
    assert jobs(tmp_path)["0"]["status"] == "completed" and jobs(tmp_path)["1"]["status"] != "completed"
    completed_stamp = (tmp_path / "0" / "metrics.json").stat().st_mtime_ns
    epochs_before = len(jobs(tmp_path)["1"]["epochs"])

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    final = jobs(tmp_path)
    assert all(m["status"] == "completed" for m in final.values())
    assert (tmp_path / "0" / "metrics.json").stat().st_mtime_ns == completed_stamp  # not retrained
    assert [e["epoch"] for e in final["1"]["epochs"]] == [0, 1]  # no epoch lost or repeated
    train_log = (tmp_path / "1" / "train.log").read_text()
    assert train_log.count("resuming from") == 1 and epochs_before == 1


def test_one_run_on_two_slurm_tasks_with_plain_ddp(cluster, tmp_path, data_root):
    """SLURM starts the 2 processes (srun), Lightning reads ranks and world size from SLURM's environment."""
    ddp = ["trainer=ddp", "trainer.strategy=ddp", "hydra.launcher.tasks_per_node=2", "model=nobn"]
    subset = ["trainer.max_epochs=1", "trainer.limit_train_batches=20", "trainer.limit_val_batches=2"]
    result = run_cli(*sweep(tmp_path, data_root, *ddp, *subset, "trainer.limit_test_batches=4"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    metrics = jobs(tmp_path)["0"]
    assert (metrics["status"], metrics["processes"]) == ("completed", 2)
    assert metrics["config"]["trainer"]["strategy"] == "ddp" and metrics["test_acc"] > 0.5
    (script,) = tmp_path.glob(".submitit/*/*_submission.sh")
    assert "#SBATCH --ntasks-per-node=2" in script.read_text()


def test_a_preempted_job_is_requeued_and_finishes_from_its_checkpoint(cluster, tmp_path, data_root):
    """USR2 is what SLURM sends `signal_delay_s` before the time limit (--signal) and what submitit
    treats as preemption: its handler requeues the job (scontrol requeue) and exits; the requeued job
    runs the same config in the same dir, so cnnstudy resumes it from last.ckpt."""
    args = sweep(tmp_path, data_root, "model=nobn", *TWO_EPOCHS)
    process = start(args, tmp_path / "sweep.log")
    wait_for_epoch(tmp_path / "0", process)
    job_id = slurm_job_id(tmp_path / "0")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    assert process.wait(timeout=300) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    metrics = jobs(tmp_path)["0"]
    assert metrics["status"] == "completed"
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]  # no epoch lost or repeated
    assert (tmp_path / "0" / "train.log").read_text().count("resuming from") == 1
    submitit_log = "".join(p.read_text() for p in tmp_path.glob(".submitit/*/*_log.out"))
    assert f"Requeued job {job_id}" in submitit_log
    job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Restarts=1" in job
