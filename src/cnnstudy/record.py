"""The run record, metrics.json: the results contract that the report and every other tool read.

This module is its only writer. Keys: status, test_acc, test_loss, best_val_acc, params, processes
(training processes: > 1 under DDP), seconds, steps (optimizer steps taken, once the run has ended),
overrides, choices, config (resolved; its trainer.precision the one the run ran at, `auto` resolved), precision (the
same), provenance (cnnstudy.provenance: code and library versions, hardware, threads, start and end times), epochs
(per epoch: train/val loss and accuracy), owner (host and pid of the process that trains it), and error /
diverged_epoch where they apply. Accuracies are fractions.
With module.eval_also_in_train_mode=true also val_loss_train_mode / val_acc_train_mode per epoch and
test_loss_train_mode / test_acc_train_mode: the same splits measured with the model in train mode
(cnnstudy.callbacks.TRAIN_MODE_EPOCH_KEYS, TRAIN_MODE_TEST_KEYS).

Beside it, probes.json: the probes' scalars (cnnstudy.probes), tag -> {step: value}, whatever the run's loggers;
written with metrics.json, only by a run with probes.

Status transitions: a run is `running` from its first epoch on and ends `completed`, `diverged` (its
training loss became NaN/inf), `failed` (it raised, or its files could not be written) or `interrupted`
(SIGTERM/SIGINT/SIGHUP: stopped at a safe point, resumable). A resumed run goes back to `running`. A `running`
record whose process is gone (SIGKILL, power loss) is read as `interrupted` (`status_of`).

Which config keys identify a run is written here once: RUNTIME_KEYS say where and how fast a run goes
or what it measures on the side (a resumed run may change them); SEED_KEYS pick one draw of a setup.
"""

import copy
import fcntl
import json
import logging
import os
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from cnnstudy.errors import StorageError

log = logging.getLogger("cnnstudy")

METRICS_FILE = "metrics.json"
PROBES_FILE = "probes.json"
STATUSES = ("running", "completed", "diverged", "failed", "interrupted")
# Not what a run computes: a resumed run may change them (the probes are tested to leave the trajectory unchanged).
RUNTIME_KEYS = (
    "threads",
    "keep_freed_memory",
    "data.root",
    "data.num_workers",
    "data.download",
    "probes",
    "callbacks.model_checkpoint.dirpath",  # inside the run dir, wherever that is
    "callbacks.progress_bar",  # how progress is shown (a bar on a terminal, a line per epoch in a log)
    "require_bf16_units",  # a study's refusal to run on emulated bf16 (experiment=precision): not what a job computes
    "logger",  # where the curves are written (their run names hold the seed)
    "precision_proven",  # which precision `auto` picks: the resolved trainer.precision is the identity
    "arms",  # a study's table of arms (conf/experiment/<study>.yaml): the chosen arm's values are in the config
)
# One draw of a setup: the jobs of a group differ only in these (the shuffle order follows the seed).
SEED_KEYS = ("seed", "data.shuffle_seed")


def without(config: dict, keys: tuple[str, ...]) -> dict:
    """A copy of the nested `config` without the dotted `keys`."""
    config = copy.deepcopy(config)
    for key in keys:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return config


# Lightning's older spellings of a precision, in its current names.
PRECISION_NAMES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}


def precision_of(config: dict) -> str:
    """The precision a recorded config ran at, in Lightning's current names: a record from before cnnstudy had
    trainer.precision (or with 32, Lightning's old name) ran at 32-true, as new fp32 runs do."""
    precision = str((config.get("trainer") or {}).get("precision", "32-true"))
    return PRECISION_NAMES.get(precision, precision)


# Config keys added to cnnstudy after records existed, each with the value every run before it ran as: a record
# without one is the same run as a new record with it at that value (the report groups them together).
ADDED_KEYS = {
    # noisy_bn_paper (2026-12-05) added the paper's per-activation noise; until then the channel noise was the only kind
    "model.noise_kind": "channel",
    "model.noise_mean_max": 0.5,
    "model.noise_std_max": 1.25,
    # norm_batch_size (2026-12-05) named the lr at batch 128 to tune it; it was 0.01. Every other study's records
    # read as 0.01 too, the same for all of them, so it tells none of their runs apart
    "lr_at_batch_128": 0.01,
}


def run_identity(config: dict) -> dict:
    """What a run computes: two configs with the same identity are the same run (resume, skip)."""
    identity = without(config, RUNTIME_KEYS)
    identity["trainer"] = {**(identity.get("trainer") or {}), "precision": precision_of(config)}
    for key, value in ADDED_KEYS.items():
        section, _, leaf = key.rpartition(".")
        if not section:
            identity.setdefault(leaf, value)
        elif isinstance(identity.get(section), dict):
            identity[section].setdefault(leaf, value)
    return identity


def same_run(recorded: dict, config: dict) -> bool:
    """Whether `config` is the run `recorded` (a metrics.json's or checkpoint's config) is of: equal run identity,
    except for keys only one of them has (a key added to cnnstudy after the run was recorded, at its default)."""

    def common(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            return all(common(a[k], b[k]) for k in a.keys() & b.keys())
        return a == b

    return common(run_identity(recorded), run_identity(config))


def setup_identity(config: dict) -> dict:
    """What a group of seeds shares: the run identity without the seed."""
    return without(run_identity(config), SEED_KEYS)


def run_name(overrides: list[str]) -> str:
    """A run's name from its overrides (e.g. 'model=nobn,optim.lr=0.01'), usable as a folder name."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "data.root"))]
    return ",".join(sorted(kept)).replace("/", "_") or "defaults"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temp file in the same folder, then rename: a kill never leaves a truncated file.
    The file gets the mode any new file gets under the process umask (mkstemp's would be 0600)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise StorageError.of(path, e) from e
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise StorageError.of(path, e) from e
        raise


def read_record(run_dir: Path) -> dict | None:
    """The dir's metrics.json; None if there is none, or if it is unreadable (not written by cnnstudy, whose
    writes are atomic: the run's checkpoint holds its epochs, and the next write replaces the file)."""
    path = Path(run_dir) / METRICS_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s): ignored", path, e)
        return None
    return record if isinstance(record, dict) else None


def read_probes_file(run_dir: Path) -> dict[str, dict[int, float]]:
    """The dir's probes.json, tag -> {step: value}; {} if there is none."""
    path = Path(run_dir) / PROBES_FILE
    if not path.exists():
        return {}
    stored = json.loads(path.read_text())
    return {tag: {int(step): value for step, value in steps.items()} for tag, steps in stored.items()}


def stale(run_dir: Path, record: dict) -> bool:
    """Whether a `running` record's process is gone (killed without a signal it could catch, or its machine
    lost): nobody holds the run dir's lock (cnnstudy.run.Run.lock), which the kernel releases when the
    process ends, however it ends. False where that cannot be told (a file system without locks)."""
    if record.get("status") != "running":
        return False
    try:
        with open(Path(run_dir) / ".lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when closed, at once
    except FileNotFoundError:  # no process ever locked this copy of the dir
        return True
    except BlockingIOError:  # the run's process holds it: it runs
        return False
    except OSError:
        return False
    return True


def status_of(run_dir: Path, record: dict) -> str:
    """The record's status as tools show it: a stale `running` one (see `stale`) is `interrupted`."""
    return "interrupted" if stale(run_dir, record) else record.get("status", "unknown")


def stale_note(run_dir: Path, record: dict) -> str:
    """One line on a stale `running` record."""
    owner = record.get("owner") or {}
    process = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "its process"
    epochs = len(record.get("epochs") or [])
    return f"{run_dir} was recorded running, but {process} is gone: interrupted after {epochs} epoch(s)"


class RunRecord:
    """One run's metrics.json: the header (what ran, and `owner`: the host and pid of the process that trains it),
    the epochs so far and the seconds trained; and its probes.json, the probes' scalars so far."""

    def __init__(self, run_dir: Path, header: dict, writes: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        self.header = {**header, "owner": {"host": socket.gethostname(), "pid": os.getpid()}}
        self.epochs: list[dict] = []
        self.seconds = 0.0
        self.probes: dict[str, dict[int, float]] = {}  # tag -> {step: value}
        self.writes = writes  # False on every process but global rank 0 under DDP

    @property
    def best_val_acc(self) -> float | None:
        return max((e["val_acc"] for e in self.epochs if e.get("val_acc") is not None), default=None)

    def as_dict(self, status: str, **fields) -> dict:
        assert status in STATUSES, status
        record = {**self.header, "best_val_acc": self.best_val_acc, "seconds": round(self.seconds, 3)}
        return {**record, "epochs": self.epochs, "status": status, **fields}

    def write(self, status: str, **fields) -> dict:
        if status != "running" and "provenance" in self.header:
            self.header["provenance"]["ended"] = utc_now()
        record = self.as_dict(status, **fields)
        if self.writes:
            if self.probes:  # first: a metrics.json is never ahead of its probes.json
                write_json_atomic(self.path.with_name(PROBES_FILE), self.probes)
            write_json_atomic(self.path, record)
        return record

    def add_epoch(self, entry: dict, seconds: float) -> None:
        self.epochs.append(entry)
        self.seconds += seconds
        self.write("running")

    def add_probes(self, step: int, scalars: dict[str, float]) -> None:
        """A probe's scalars at training step `step`; written with the next epoch (or the run's end)."""
        for tag, value in scalars.items():
            self.probes.setdefault(tag, {})[step] = value

    def continue_from(self, previous: dict, probes: dict | None = None) -> None:
        """Go on from a metrics.json (and probes.json) this run wrote before (resumed, or recorded failed)."""
        self.load_state_dict(
            {"epochs": previous.get("epochs") or [], "seconds": previous.get("seconds") or 0.0, "probes": probes or {}}
        )

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "seconds": self.seconds, "probes": self.probes}

    def load_state_dict(self, state: dict) -> None:
        self.epochs, self.seconds = list(state["epochs"]), state["seconds"]
        # a checkpoint from before probes.json holds none: the file's are kept
        self.probes = {tag: dict(steps) for tag, steps in state.get("probes", self.probes).items()}


def record_failure(run_dir: Path, header: dict, error: str) -> None:
    """Mark a job failed, keeping the epochs it recorded; another run's file in that dir is left alone."""
    existing = read_record(run_dir)
    if existing is not None and existing.get("overrides") != header.get("overrides"):
        return
    outcome = ("status", "epochs", "best_val_acc", "seconds", "error")  # rewritten by the failed record
    kept = {k: v for k, v in (existing or {}).items() if k not in outcome}
    record = RunRecord(run_dir, {**header, **kept})
    record.continue_from(existing or {})
    record.write("failed", error=error)
