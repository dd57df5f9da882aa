"""The block a sweep ends with, whatever launched its jobs: how many completed, diverged, failed or were
interrupted, which job dirs those are, where the sweep is and the report command to run next.

A Hydra callback (`hydra.callbacks.sweep_outcomes` in conf/train.yaml): Hydra calls `on_multirun_end` in the
launching process once the launcher has returned, for the basic, joblib, submitit and SLURM launchers and the
Optuna sweeper alike. It reads each job's metrics.json (cnnstudy.record), so it says what the jobs recorded,
not what the launcher believes.
"""

import re
from collections import defaultdict
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnstudy.record import read_record, stale, stale_note, status_of

# Statuses in the order they are listed; "no record" is a job dir without a readable metrics.json (a job
# killed before its first write), "running" one whose process still runs (one that is gone, killed without a
# signal it could catch, is listed interrupted, with a line: cnnstudy.record.stale).
ORDER = ("completed", "diverged", "failed", "interrupted", "running", "no record")


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job's output dir under the sweep: the dirs Hydra wrote a .hydra/ into, or that hold a metrics.json."""
    marks = [*sweep_dir.rglob(".hydra"), *sweep_dir.rglob("metrics.json")]
    dirs = {mark.parent for mark in marks if mark.parent != sweep_dir}
    return sorted(dirs, key=lambda d: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(d))])


def compact(names: list[str]) -> str:
    """'0-3,7,9-10' for consecutive job numbers; other names as they are."""
    numbers = sorted(int(n) for n in names if n.isdigit())
    others = [n for n in names if not n.isdigit()]
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    spans = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]
    return ",".join(spans + others)


def outcomes_block(sweep_dir: Path) -> str:
    sweep_dir = Path(sweep_dir)
    by_status = defaultdict(list)
    errors, notes = {}, []
    for job in job_dirs(sweep_dir):
        record = read_record(job) or {}
        status = status_of(job, record) if record else "no record"
        name = str(job.relative_to(sweep_dir))
        by_status[status].append(name)
        if status == "failed":  # what to fix; a diverged job's cause is its lr, an interrupted one resumes
            errors[name] = record.get("error") or ""
        elif stale(job, record):
            notes.append(f"  {stale_note(name, record)}")
    total = sum(len(names) for names in by_status.values())
    lines = [f"sweep {sweep_dir}: {total} job(s)"]
    for status in [*ORDER, *sorted(set(by_status) - set(ORDER))]:
        names = by_status.get(status, [])
        if names or status in ORDER[:4]:
            lines.append(f"  {status:<12} {len(names):>4}  {compact(names)}".rstrip())
    for name, error in errors.items():
        lines.append(f"  {name} failed: {error.splitlines()[0] if error else 'no error recorded'}")
    lines += notes
    lines.append(f"next: python -m cnnstudy.report {sweep_dir}")
    return "\n".join(lines)


class SweepOutcomes(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        print(outcomes_block(Path(config.hydra.sweep.dir)), flush=True)
