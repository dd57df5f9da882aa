"""A stopped sweep stops everything it started, a dead run is never shown as running, and a launcher typo is one
line: real sweep commands on a real MNIST subset, signalled while their jobs train, their processes followed by
pid in /proc (docs/reliability.md)."""

import fcntl
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnstudy.record import read_record, status_of
from cnnstudy.report.jobs import read_job
from cnnstudy.sweep_outcomes import outcomes_block

from conftest import ROOT, run_cli

SMALL = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def command(data_root: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "cnnstudy.train", *overrides, f"data.root={data_root}", *SMALL]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"the command ended first: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def started(pid: int) -> str | None:
    """The process's start time (/proc/<pid>/stat field 22), None once it has ended (or is a zombie): a pid
    taken again by a new process has another start time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every live process under `root`, by pid, with its start time."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(Path(entry, "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if (time_started := started(child)) is not None:
                found[child] = time_started
            todo.append(child)
    return found


def checkpoint(job: Path) -> Path:
    return job / "checkpoints" / "last.ckpt"


def epochs(job: Path) -> list[int]:
    return [entry["epoch"] for entry in read_record(job)["epochs"]]


LAUNCHERS = [("parallel", signal.SIGTERM), ("parallel", signal.SIGHUP), ("submitit_local", signal.SIGTERM)]


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="follows processes in /proc (Linux)")
@pytest.mark.parametrize(("launcher", "signum"), LAUNCHERS, ids=[f"{name}-{s.name}" for name, s in LAUNCHERS])
def test_a_stopped_sweep_leaves_no_process_and_the_same_command_resumes_it(tmp_path, data_root, launcher, signum):
    sweep = tmp_path / "sweep"
    args = command(data_root, "-m", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", "model=bn,nobn")
    process = start(args)
    jobs = [sweep / "0", sweep / "1"]
    wait_for(lambda: all(checkpoint(job).exists() for job in jobs), process)  # both jobs train, mid-sweep
    tree = descendants(process.pid)
    assert len(tree) >= 2, tree  # the jobs' processes (and the launcher's helpers)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=180)

    assert process.returncode == 128 + signum, stderr[-3000:]
    assert (
        stderr.strip().splitlines()[-1]
        == f"error: sweep {sweep} stopped by {signum.name}; run the same command to resume"
    )
    # loky's resource trackers included: the command ends them before its last line, which their warnings precede
    alive = [pid for pid, t in tree.items() if started(pid) == t]
    assert not alive, [Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in alive]
    for job in jobs:
        record = read_record(job)
        assert record["status"] == "interrupted", job
        assert record["error"] == f"stopped by {signum.name}"
        assert epochs(job) == list(range(len(epochs(job)))) and len(epochs(job)) >= 1

    resumed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for job in jobs:
        assert read_record(job)["status"] == "completed"
        assert epochs(job) == [0, 1, 2]  # every epoch once: none lost, none trained twice


# A semaphore collected after the trackers have ended: its finalizer unregisters it, which would start a new
# tracker that knows no such name and prints a KeyError after the sweep's last line (CI, stop 47)
COLLECTED_AFTER_THE_TRACKERS = """
import gc, os, sys
from joblib.externals.loky.backend.synchronize import Lock
from cnnstudy.launchers import end_resource_trackers, is_resource_tracker, process_tree
lock = Lock()
end_resource_trackers()
del lock
gc.collect()
print(sum(map(is_resource_tracker, process_tree(os.getpid()))), flush=True)
print("last line", file=sys.stderr, flush=True)
os._exit(0)
"""


@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="follows processes in /proc (Linux)")
def test_no_resource_tracker_starts_again_once_a_stopped_sweep_has_ended_them():
    result = subprocess.run([sys.executable, "-c", COLLECTED_AFTER_THE_TRACKERS], capture_output=True, text=True)
    assert result.stdout == "0\n", result.stderr
    assert result.stderr.strip().splitlines()[-1] == "last line", result.stderr


@pytest.mark.subprocess
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="follows processes in /proc (Linux)")
def test_a_second_signal_ends_the_whole_sweep_at_once(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    process = start(command(data_root, "-m", "hydra/launcher=parallel", f"hydra.sweep.dir={sweep}", "model=bn,nobn"))
    wait_for(lambda: all(checkpoint(sweep / job).exists() for job in ("0", "1")), process)
    tree = descendants(process.pid)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)  # two signals at once would be handled as one
    process.send_signal(signal.SIGINT)  # Ctrl-C twice: the launcher gives its jobs no time
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "stopped by SIGINT; run the same command" not in stderr  # the end of a first signal's stop: not reached
    deadline = time.time() + 5
    while [pid for pid, t in tree.items() if started(pid) == t] and time.time() < deadline:
        time.sleep(0.05)
    assert not [pid for pid, t in tree.items() if started(pid) == t]
    for job in ("0", "1"):  # killed while running, or recorded in the moment between the signals
        assert status_of(sweep / job, read_record(sweep / job)) == "interrupted"


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_running_record_whose_process_is_gone_reads_interrupted_and_resumes(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    job = sweep / "0"
    process = start(command(data_root, f"hydra.run.dir={job}", "model=bn"))
    wait_for(lambda: (read_record(job) or {}).get("epochs") and checkpoint(job).exists(), process)
    live = read_record(job)
    assert live["status"] == "running" and status_of(job, live) == "running"  # its process trains: running
    assert live["owner"] == {"host": socket.gethostname(), "pid": process.pid}

    process.kill()  # SIGKILL: nothing of the run can record its end
    process.communicate(timeout=60)
    assert read_record(job)["status"] == "running"  # what the file says
    recorded = len(epochs(job))
    assert status_of(job, read_record(job)) == "interrupted"
    note = f"{job} was recorded running, but pid {process.pid} on {socket.gethostname()} is gone"
    assert read_job(job, sweep).status == "interrupted"
    assert read_job(job, sweep).detail.startswith(note)
    outcomes = outcomes_block(sweep)
    assert "  interrupted     1  0" in outcomes.splitlines()
    assert "  running" not in outcomes
    assert f"0 was recorded running, but pid {process.pid}" in outcomes

    resumed = run_cli("cnnstudy.train", *command(data_root, f"hydra.run.dir={job}", "model=bn")[3:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{note}: interrupted after {recorded} epoch(s); resuming it" in (job / "train.log").read_text()
    assert epochs(job) == [0, 1, 2] and read_record(job)["status"] == "completed"


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("group", "choice", "named"),
    [
        ("hydra/launcher", "nonexistent", "parallel, slurm, submitit_local"),
        ("hydra/sweeper", "optunax", "basic, optuna"),
    ],
)
def test_a_typo_in_a_hydra_group_is_one_line_naming_the_options(tmp_path, group, choice, named):
    result = run_cli("cnnstudy.train", "-m", f"{group}={choice}", "model=bn,nobn", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]  # one line
    assert result.stderr.startswith(f"error: Could not find '{group}/{choice}'; Available options in '{group}': ")
    assert named in result.stderr
    assert not list(tmp_path.iterdir())  # nothing started


def test_a_running_record_reads_running_only_while_its_run_dir_is_locked(tmp_path):
    """A record written by hand: the lock a live process holds (cnnstudy.run.Run.lock) makes `running`."""
    job = tmp_path / "0"
    job.mkdir()
    (job / "metrics.json").write_text(json.dumps({"status": "running", "epochs": [{"epoch": 0}]}))
    assert status_of(job, read_record(job)) == "interrupted"  # no process ever locked this dir
    with open(job / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a training process does
        assert status_of(job, read_record(job)) == "running"
    assert status_of(job, read_record(job)) == "interrupted"  # released, as when its process ends
