"""Re-train one archived job and say whether its epochs come out bit for bit the same:
`python -m cnnstudy.rerun <job dir or its metrics.json> [--epochs N] [--out DIR]`.

The job is re-trained through `python -m cnnstudy.train` from the resolved config its metrics.json
recorded (same seed, same thread count), into a fresh dir. Keys the record lacks (added to cnnstudy
after it ran) take today's defaults of the record's config groups; where the data and the curves
go (data.root, data.download, the checkpoint dir, the logger) are this machine's. `--epochs N`
trains only the first N epochs (the recorded schedule unchanged: its resolved T_max, total steps)
and compares those. One line per epoch: bit for bit, or the first key that differs with both
values; then what differs between the two runs' code, libraries, CPU and threads, where the
record says (its `provenance`), as the likely reason.

Exit status: 0 all compared epochs match, 1 they differ (or the re-run failed), 2 bad input.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from cnnstudy.errors import fail
from cnnstudy.record import METRICS_FILE, read_record, without
from cnnstudy.report.groups import flatten

# Where a run reads its data and writes its checkpoints and curves: this machine's, not the archived run's.
# None of them changes what a run computes (cnnstudy.record.RUNTIME_KEYS).
MACHINE_KEYS = ("data.root", "data.download", "callbacks.model_checkpoint.dirpath", "logger")
# Config groups whose recorded choice is composed for the keys the record lacks; hparams_search is the
# sweep's search, not part of one job.
NOT_A_JOB_GROUP = ("hparams_search",)
# Provenance entries that are no reason for different bits: times, an earlier session of a resumed run, and why
# the precision was chosen (a rerun asks for the recorded precision itself, the same one).
NOT_A_REASON = ("started", "ended", "resumed_from", "precision_rule")


def load_job(path: Path) -> tuple[Path, dict]:
    """(the job's metrics.json, its record), or one line and exit 2 for something that is not a rerunnable job."""
    metrics = path / METRICS_FILE if path.is_dir() else path
    if not metrics.is_file():
        fail(f"{path} is neither a job dir holding {METRICS_FILE} nor a {METRICS_FILE}")
    record = read_record(metrics.parent) if metrics.name == METRICS_FILE else None
    if record is None:
        fail(f"{metrics} is not a cnnstudy run record (unreadable or not {METRICS_FILE})")
    if not isinstance(record.get("config"), dict) or not record.get("epochs"):
        fail(f"{metrics} records no resolved config or no epoch (status {record.get('status')}): nothing to re-train")
    return metrics, record


def rerun_config(record: dict, epochs: int | None) -> dict:
    """The recorded resolved config, as a config that overrides everything the train config composes."""
    config = without(record["config"], MACHINE_KEYS)
    if epochs is not None:
        config["trainer"]["max_epochs"] = epochs
    return config


def group_overrides(record: dict) -> list[str]:
    """The recorded config group choices, so that keys the record lacks get those groups' defaults."""
    choices = record.get("choices") or {}
    return [f"{group}={option}" for group, option in choices.items() if option and group not in NOT_A_JOB_GROUP]


def train_again(record: dict, epochs: int | None, out: Path) -> tuple[dict | None, str]:
    """Run `cnnstudy.train` on the recorded config in `out`: (its metrics.json, its console output)."""
    configs = out / ".rerun"  # a config group of one option, applied after every other config
    (configs / "rerun").mkdir(parents=True)
    text = "# @package _global_\n" + OmegaConf.to_yaml(OmegaConf.create(rerun_config(record, epochs)))
    (configs / "rerun" / "recorded.yaml").write_text(text)
    command = [sys.executable, "-m", "cnnstudy.train", "--config-dir", str(configs)]
    command += [*group_overrides(record), "+rerun=recorded", f"hydra.run.dir={out}"]
    done = subprocess.run(command, capture_output=True, text=True)
    console = done.stdout + done.stderr
    (out / "rerun.log").write_text(" ".join(command) + "\n" + console)
    return read_record(out), console


def compare_epochs(archived: list[dict], rerun: list[dict], epochs: int) -> bool:
    """One line per compared epoch; whether all of them match."""
    matched = True
    for number in range(epochs):
        if number >= len(rerun):
            print(f"epoch {number}: missing from the rerun (it recorded {len(rerun)} epochs)")
            matched = False
            continue
        difference = first_difference(archived[number], rerun[number])
        only = sorted(archived[number].keys() ^ rerun[number].keys())
        note = f" (not compared, in one of them only: {', '.join(only)})" if only else ""
        print(f"epoch {number}: " + (f"differs, first at {difference}" if difference else "bit for bit") + note)
        matched = matched and difference is None
    return matched


def first_difference(archived: dict, rerun: dict) -> str | None:
    """The first key, in the archived entry's order, whose value differs in the rerun's entry; keys only one
    of the two has are not compared (a key added to the record since). JSON keeps a float's every bit:
    Python writes the shortest text that reads back as the same double."""
    for key, value in archived.items():
        if key in rerun and rerun[key] != value:
            return f"{key}: archived {value!r}, rerun {rerun[key]!r}"
    return None


def provenance_differences(archived: dict, rerun: dict) -> list[str]:
    """What differs between the two runs' code version, libraries, hardware (CPU, GPU) and threads, as far as
    both records say (their `provenance`, cnnstudy.provenance): 'name: archived -> rerun'."""
    old, new = flatten(archived.get("provenance") or {}), flatten(rerun.get("provenance") or {})
    old["threads"] = archived["config"].get("threads", "not recorded")
    new["threads"] = rerun["config"].get("threads")
    return [
        f"{key}: {old[key]} -> {new[key]}"
        for key in sorted(old.keys() & new.keys())
        if old[key] != new[key] and not key.startswith(NOT_A_REASON)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path, help="an archived job's dir, or its metrics.json")
    parser.add_argument("--epochs", type=int, help="re-train and compare only the first N epochs (default all)")
    parser.add_argument("--out", type=Path, help="an empty or new dir for the rerun (default: new, under outputs/)")
    parser.error = fail  # a bad option: one line on stderr and exit 2, as every cnnstudy mistake
    args = parser.parse_args()
    metrics, record = load_job(args.job)
    archived = record["epochs"]
    if args.epochs is not None and not 1 <= args.epochs <= len(archived):
        fail(f"--epochs {args.epochs}: the job recorded {len(archived)} epochs, choose 1 to {len(archived)}")
    epochs = args.epochs or len(archived)
    if args.out is not None and args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        fail(f"--out {args.out} is not empty: choose a new or empty dir")
    out = args.out or Path(tempfile.mkdtemp(prefix="rerun-", dir=Path("outputs").resolve()))
    out.mkdir(parents=True, exist_ok=True)
    threads = record["config"].get("threads")
    print(
        f"re-training {metrics} for {epochs} of {len(archived)} epochs in {out}, "
        + (f"{threads} threads as recorded" if threads else "threads not recorded: the default for this machine")
    )
    rerun, console = train_again(record, args.epochs, out)
    if rerun is None or not rerun.get("epochs"):
        print(f"the rerun failed before its first epoch (log: {out / 'rerun.log'}):\n{console.strip()[-2000:]}")
        return 1
    if not threads:
        print(f"threads used by the rerun: {rerun['config'].get('threads')}")
    matched = compare_epochs(archived, rerun["epochs"], epochs)
    if rerun.get("status") != "completed":
        print(f"the rerun ended {rerun.get('status')}: {rerun.get('error', '')}")
    if not matched:
        reasons = provenance_differences(record, rerun)
        if reasons:
            print("differs from the archived run: " + "; ".join(reasons))
        if not record.get("provenance"):
            print("the archived run recorded no provenance (code version, torch, CPU): cannot say what changed")
    return 0 if matched else 1


if __name__ == "__main__":
    sys.exit(main())
