"""Reading a sweep: each job's record (metrics.json, Hydra's overrides, the probes' scalars: probes.json), the
sweep commands, and copying the records that a report needs (`archive`), without the machine's paths."""

import json
import shlex
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from cnnstudy.record import (
    METRICS_FILE,
    PROBES_FILE,
    read_probes_file,
    read_record,
    stale_note,
    status_of,
    write_json_atomic,
)

MULTIRUN = Path("multirun")
# What a sweep's results are, without checkpoints or events: what `archive` keeps.
RECORDS = (f"**/{METRICS_FILE}", f"**/{PROBES_FILE}", "**/.hydra/overrides.yaml", "**/multirun.yaml")


@dataclass
class Job:
    dir: str  # relative to the sweep folder
    status: str  # a metrics.json status, or "no metrics.json" / "unreadable"
    overrides: list[str]
    detail: str = ""  # error, diverged epoch or progress: why it is not completed
    metrics: dict = field(default_factory=dict)
    probes: dict[str, dict[int, float]] = field(default_factory=dict)  # tag -> {step: value}

    @property
    def config(self) -> dict | None:
        """The resolved config; a failed job's record may hold none."""
        return self.metrics.get("config") or None

    @property
    def epochs(self) -> list[dict]:
        return self.metrics.get("epochs") or []

    @property
    def completed(self) -> bool:
        return self.status == "completed"


def read_job(job_dir: Path, sweep_dir: Path) -> Job:
    job = Job(str(job_dir.relative_to(sweep_dir)), "no metrics.json", [])
    try:  # Hydra's own record: the overrides of a job whose metrics.json is missing or unreadable
        job.overrides = list(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    except Exception:  # noqa: BLE001 - a missing or broken record only costs the overrides column
        pass
    path = job_dir / METRICS_FILE
    if not path.exists():  # started, but its first epoch has not ended (or it was killed before)
        job.detail = "no epoch has ended yet"
        return job
    try:
        metrics = json.loads(path.read_text())
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        job.status, job.detail = "unreadable", f"{type(e).__name__}: {e}"
        return job
    job.metrics, job.status, job.probes = metrics, status_of(job_dir, metrics), read_probes_file(job_dir)
    job.overrides = list(metrics.get("overrides") or job.overrides)
    if job.status == "diverged":
        job.detail = f"epoch {metrics.get('diverged_epoch')}: {metrics.get('error', '')}"
    elif job.status == "running":
        job.detail = f"{len(job.epochs)} epoch(s) so far"
    elif job.status != "completed":
        stale = metrics.get("status") == "running"  # read as interrupted: its process is gone
        job.detail = stale_note(job_dir, metrics) if stale else str(metrics.get("error", ""))
    return job


def find_jobs(sweep_dir: Path) -> list[Job]:
    job_dirs = {p.parent for p in sweep_dir.rglob(METRICS_FILE)}
    job_dirs |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    return [read_job(d, sweep_dir) for d in sorted(job_dirs, key=numbers_first)]


def numbers_first(path: Path) -> list[tuple]:
    """Job folders in number order (2 before 10)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]


def sweep_commands(sweep_dir: Path) -> list[str]:
    """The command of each sweep under the dir, from Hydra's multirun.yaml."""
    commands = []
    for path in sorted(sweep_dir.rglob("multirun.yaml")):
        try:
            hydra = OmegaConf.to_container(OmegaConf.load(path).hydra)
            extra = [o for o in hydra["overrides"]["hydra"] if o != "hydra.mode=MULTIRUN"]
            args = shlex.join(hydra["overrides"]["task"] + extra)
            commands.append(f"python -m cnnstudy.{hydra['job']['name']} -m {args}".rstrip())
        except Exception:  # noqa: BLE001 - the header just goes without the command
            pass
    return commands


DROPPED = object()  # what `portable` leaves out


def portable(value, run_dir: Path):
    """A record (or part of one) without the machine's absolute paths: a path inside `run_dir` (the checkpoints,
    best_ckpt, the curves) relative to it, any other (the data root) left out; an override `key=<path>` likewise.
    A run dir moved since the run leaves its paths out too. Text with spaces (an error message) is kept as it is."""
    if isinstance(value, dict):
        kept = {key: portable(item, run_dir) for key, item in value.items()}
        return {key: item for key, item in kept.items() if item is not DROPPED}
    if isinstance(value, list):
        return [item for item in (portable(item, run_dir) for item in value) if item is not DROPPED]
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return value
    if Path(value).is_absolute():
        return str(Path(value).relative_to(run_dir)) if Path(value).is_relative_to(run_dir) else DROPPED
    key, equals, path = value.partition("=")
    if equals and Path(path).is_absolute():  # an override key=<path>
        path = portable(path, run_dir)
        return DROPPED if path is DROPPED else f"{key}={path}"
    return value


def archive(sweep_dir: Path, dest: Path) -> Path:
    """Copy the sweep's records (RECORDS) to dest/<sweep folder name>/ and return dest; a metrics.json without the
    machine's paths (`portable`). A study too long for one sitting is run in slices (a few arms each), each archived
    into the same dest and reported as one."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a folder")
    for pattern in RECORDS:
        for path in sweep_dir.glob(pattern):
            copy = Path(dest) / sweep_dir.name / path.relative_to(sweep_dir)
            copy.parent.mkdir(parents=True, exist_ok=True)
            record = read_record(path.parent) if path.name == METRICS_FILE else None
            if record is not None:
                write_json_atomic(copy, portable(record, path.parent.absolute()))
            else:  # not a record, or unreadable: reported as it is
                shutil.copyfile(path, copy)
    return Path(dest)


def latest_sweep(root: Path = MULTIRUN) -> Path:
    """The folder of job folders with metrics.json most recently written under `root` (any nesting)."""
    newest = defaultdict(float)
    for path in Path(root).rglob(METRICS_FILE):
        sweep = path.parent.parent
        newest[sweep] = max(newest[sweep], path.stat().st_mtime, sweep.stat().st_mtime)
    if not newest:
        raise FileNotFoundError(f"no {METRICS_FILE} under {root}/: run a sweep first (python -m cnnstudy.train -m ...)")
    return max(newest, key=newest.get)
