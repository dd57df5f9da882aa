"""metrics.json: the per-run results contract that the report and other tools read.

Keys: status ("running" | "completed" | "diverged" | "failed"), test_acc, test_loss, best_val_acc,
params, processes (training processes: > 1 under DDP), seconds, overrides, choices, config, epochs
(per-epoch train/val loss and accuracy), and error / diverged_epoch where they apply. Accuracies are
fractions in [0, 1].
"""

import json
import os
import tempfile
from pathlib import Path

METRICS_FILE = "metrics.json"


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temp file in the same folder, then rename: a kill never leaves a truncated file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metrics(run_dir: Path) -> dict | None:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def run_name(overrides: list[str]) -> str:
    """A run's name from its overrides (e.g. 'model=nobn,optim.lr=0.01'), usable as a folder name."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "data.root"))]
    return ",".join(sorted(kept)).replace("/", "_") or "defaults"
