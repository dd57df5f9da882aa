"""What ran a run: the `provenance` of its metrics.json.

The code version (the git commit and whether the checkout had uncommitted changes, or the installed version
outside a checkout), the Python, torch, lightning and numpy versions, the hardware (cnnstudy.hardware), the
torch threads and when the run started and ended. A resumed run records the session that resumed it, with the
earlier session's provenance under `resumed_from`. No path of the machine is recorded.
"""

import functools
import importlib.metadata
import platform
import subprocess
from dataclasses import asdict
from pathlib import Path

import lightning
import numpy
import torch

from cnnstudy.hardware import Hardware
from cnnstudy.record import utc_now

PACKAGE_DIR = Path(__file__).resolve().parent


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.strip()


@functools.cache
def code_version() -> dict:
    """{"commit", "dirty"} where cnnstudy runs from a git checkout, else {"version"}: the installed package's.
    Taken once per process: the code a process runs is the code it imported."""
    try:
        git("ls-files", "--error-unmatch", "__init__.py")  # tracked there: not a copy installed under a checkout
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        try:
            return {"version": importlib.metadata.version("cnnstudy")}
        except importlib.metadata.PackageNotFoundError:
            return {"version": "unknown"}


def library_versions() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
    }


def run_provenance(hardware: Hardware, precision_rule: str, resumed_from: dict | None = None) -> dict:
    """This session's provenance; `ended` is set when the run ends (cnnstudy.record.RunRecord.write)."""
    provenance = {"code": code_version(), **library_versions(), "hardware": asdict(hardware)}
    provenance |= {"threads": torch.get_num_threads(), "precision_rule": precision_rule}
    provenance |= {"started": utc_now(), "ended": None}
    if resumed_from:
        provenance["resumed_from"] = resumed_from
    return provenance
