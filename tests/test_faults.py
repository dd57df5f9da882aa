"""Fault injection on real runs (real processes, a real MNIST subset): each fault at several points of a run,
and every time the same invariants: the exit status, one line on stderr, the recorded status, the epochs
recorded equal to the epochs the last checkpoint holds, and a resume that reaches the uninterrupted run's
final metrics bit for bit (the runs are deterministic). Storage faults need root (a small tmpfs, another user)."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnstudy.checkpoints import load_checkpoint

from conftest import ROOT

SMALL = [
    "model=deep_cnn_bn",  # dropout and BN: the RNG stream and BN buffers must both resume exactly
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=30",
    "trainer.limit_val_batches=3",
    "trainer.limit_test_batches=3",
    "trainer.deterministic=true",
]
FINAL = ("status", "test_acc", "test_loss", "best_val_acc", "epochs")
# root ignores permission bits; without these capabilities it is held to them like any user
WITHOUT_DAC_OVERRIDE = ("setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override,-dac_read_search", "--")
as_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("mount"), reason="needs root (mount a tmpfs, run as another user)"
)


def start(
    run_dir: Path, data_root: Path, umask: int | None = None, wrapper: tuple = (), overrides: tuple = ()
) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "cnnstudy.train",
        f"hydra.run.dir={run_dir}",
        f"data.root={data_root}",
        *SMALL,
        *overrides,
    ]
    return subprocess.Popen(
        [*wrapper, *command],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=None if umask is None else (lambda: os.umask(umask)),
    )


def run(run_dir: Path, data_root: Path) -> subprocess.CompletedProcess:
    process = start(run_dir, data_root)
    _, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended first: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def final(run_dir: Path) -> dict:
    return {key: record(run_dir)[key] for key in FINAL}


def recorded_epochs(run_dir: Path) -> int:
    path = run_dir / "metrics.json"
    return len(record(run_dir)["epochs"]) if path.exists() else 0


def checkpointed_epochs(run_dir: Path) -> int:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.exists():
        return 0
    (state,) = [v for k, v in load_checkpoint(last)["callbacks"].items() if k.startswith("RunRecorder")]
    return len(state["epochs"])


def assert_one_line(stderr: str, *words: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    assert all(word in lines[0] for word in words), lines[0]


def assert_no_partial_files(run_dir: Path) -> None:
    assert not [*run_dir.glob(".*.tmp"), *run_dir.glob("checkpoints/.*.tmp")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    process = start(run_dir, data_root, umask=0o027)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return run_dir


@pytest.mark.subprocess
def test_files_get_the_mode_the_umask_gives(uninterrupted):
    for path in (uninterrupted / "metrics.json", uninterrupted / "checkpoints" / "last.ckpt"):
        assert path.stat().st_mode & 0o777 == 0o640, path  # umask 027: group may read, others nothing


# (signal, when): at start-up (before the first epoch), right after the first checkpoint, and at a random
# moment of the last epoch's training, drawn from a fixed seed so a failure can be replayed.
MOMENTS = [
    (signal.SIGTERM, "start-up"),
    (signal.SIGTERM, "first checkpoint"),
    (signal.SIGTERM, "random"),
    (signal.SIGINT, "random"),
]


@pytest.mark.subprocess
@pytest.mark.parametrize(("signum", "moment"), MOMENTS, ids=[f"{s.name}-{m}" for s, m in MOMENTS])
def test_a_signal_interrupts_records_and_resumes_to_the_same_metrics(
    tmp_path, data_root, uninterrupted, signum, moment
):
    run_dir = tmp_path / "run"
    process = start(run_dir, data_root)
    if moment == "start-up":  # the handlers are in place once the config is logged
        log = run_dir / "train.log"
        wait_for(lambda: log.exists() and "config:" in log.read_text(errors="ignore"), process)
    elif moment == "first checkpoint":
        wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), process)
    else:  # a random fraction of the last epoch, timed by how long the epoch before it took in this run
        wait_for(lambda: recorded_epochs(run_dir) == 1, process)
        first_recorded = time.perf_counter()
        wait_for(lambda: recorded_epochs(run_dir) == 2, process)
        epoch_seconds = time.perf_counter() - first_recorded
        time.sleep(random.Random(signum.name).uniform(0.1, 0.9) * epoch_seconds)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)

    # the random moment fell after the run's end (exit 0), or while the finished process was exiting, after
    # its handlers were gone (killed by the signal): nothing was interrupted
    if process.returncode in (0, -signum) and record(run_dir)["status"] == "completed":
        assert final(run_dir) == final(uninterrupted)
        return
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert_one_line(stderr, "interrupted", signum.name, "resume")
    interrupted = record(run_dir)
    assert interrupted["status"] == "interrupted"
    # <= 3: if the last epoch ran faster than the one before, the random moment falls after its checkpoint,
    # while the run tests; the resume then only tests
    assert len(interrupted["epochs"]) == checkpointed_epochs(run_dir) <= 3
    assert_no_partial_files(run_dir)

    resumed = run(run_dir, data_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert final(run_dir) == final(uninterrupted)


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MB tmpfs: room for the run, until the test fills it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` up to `leave` free bytes; returns the filler file."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free - leave
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(free, 0))
    return filler


@pytest.mark.subprocess
@as_root
@pytest.mark.parametrize("when", ["first checkpoint", "later checkpoint"])
def test_disk_full_fails_in_one_line_keeps_what_was_recorded_and_resumes(small_disk, data_root, uninterrupted, when):
    run_dir = small_disk / "run"
    if when == "first checkpoint":
        filler = fill(small_disk, leave=1 << 20)  # 1 MB: metrics.json fits, a 2.5 MB checkpoint does not
        process = start(run_dir, data_root)
    else:
        process = start(run_dir, data_root)
        wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), process)
        filler = fill(small_disk, leave=1 << 20)
    _, stderr = process.communicate(timeout=300)

    assert process.returncode == 1, stderr[-3000:]
    assert_one_line(stderr, "cannot write", str(run_dir / "checkpoints"), "No space left on device")
    failed = record(run_dir)
    assert failed["status"] == "failed" and "No space left" in failed["error"]
    assert len(failed["epochs"]) >= checkpointed_epochs(run_dir)  # the epoch whose checkpoint failed is listed
    assert_no_partial_files(run_dir)
    if when == "later checkpoint":
        assert checkpointed_epochs(run_dir) >= 1  # the previous last.ckpt is intact and loadable

    filler.unlink()
    resumed = run(run_dir, data_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert final(run_dir) == final(uninterrupted)


@pytest.mark.subprocess
@as_root
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux)")
def test_write_permission_lost_mid_run_fails_in_one_line_and_resumes(tmp_path, data_root, uninterrupted):
    """The run dir made read-only after the first checkpoint; the run without root's power to ignore that."""
    run_dir = tmp_path / "run"
    process = start(run_dir, data_root, wrapper=WITHOUT_DAC_OVERRIDE)
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), process)
    for folder in (run_dir, run_dir / "checkpoints"):
        folder.chmod(0o555)
    _, stderr = process.communicate(timeout=300)
    for folder in (run_dir, run_dir / "checkpoints"):
        folder.chmod(0o755)

    assert process.returncode == 1, stderr[-3000:]
    assert_one_line(stderr, "cannot write", str(run_dir), "Permission denied")
    assert record(run_dir)["status"] == "running"  # metrics.json could not be written: it keeps its last state
    assert checkpointed_epochs(run_dir) >= 1
    assert_no_partial_files(run_dir)
    resumed = run(run_dir, data_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert final(run_dir) == final(uninterrupted)


@pytest.mark.subprocess
def test_a_second_process_in_the_same_dir_is_refused(tmp_path, data_root):
    run_dir = tmp_path / "run"
    # the first run must outlast the second's start-up (seconds under load), or it would find a finished run
    first = start(run_dir, data_root, overrides=("trainer.max_epochs=1000",))
    wait_for(lambda: (run_dir / "metrics.json").exists(), first)
    second = run(run_dir, data_root)
    assert first.poll() is None, "the first run ended before the second was refused"
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=300)
    assert second.returncode == 2
    assert_one_line(second.stderr, str(run_dir), "in use by another cnnstudy process")


@pytest.mark.subprocess
def test_leftovers_of_a_crash_do_not_stop_the_resume(tmp_path, data_root, uninterrupted):
    """SIGKILL after the first checkpoint, then what a crash inside a write leaves: a partial temp checkpoint
    and a metrics.json that is not JSON (written by something else; cnnstudy's own writes are atomic)."""
    run_dir = tmp_path / "run"
    process = start(run_dir, data_root)
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), process)
    process.kill()
    process.communicate()
    (run_dir / "checkpoints" / ".last.ckpt.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    (run_dir / "metrics.json").write_text('{"status": "runn')

    resumed = run(run_dir, data_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert final(run_dir) == final(uninterrupted)
    assert_no_partial_files(run_dir)
