import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import cnnstudy.config  # noqa: F401 - registers the studies' arms and conf/'s resolvers, as every composer must

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def data_dir() -> Path | None:
    for candidate in (os.environ.get("CNNSTUDY_DATA_DIR"), ROOT.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "MNIST" / "raw").exists():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real datasets; in CI their absence is a failure, elsewhere a skip."""
    found = data_dir()
    if found is None:
        message = "real datasets not found: set CNNSTUDY_DATA_DIR (see README)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def cfg_for():
    """Compose the train config with overrides, as `python -m cnnstudy.train` would."""

    def compose_train(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("train", overrides=list(overrides))

    return compose_train


# The test being run, set before its fixtures: run_cli checks that it carries the `subprocess` marker.
running_test: pytest.Item | None = None


def pytest_runtest_setup(item: pytest.Item) -> None:
    global running_test
    running_test = item


def run_cli(*args: str, env: dict | None = None, cwd: Path = ROOT, timeout: int = 600):
    """Run a cnnstudy entry point as a user would; returns the CompletedProcess.

    A fresh interpreter costs seconds of imports, so a test that starts one must be marked
    `@pytest.mark.subprocess` (`make check`, the fast loop, leaves those out); an unmarked one fails here."""
    if running_test is not None and running_test.get_closest_marker("subprocess") is None:
        pytest.fail(f"{running_test.nodeid} starts a fresh python: mark it @pytest.mark.subprocess", pytrace=False)
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def tiny_sweep(data_root: Path, sweep_dir: Path):
    """A real 4-job MNIST sweep (bn, nobn × two lrs) of 2 epochs of 3 batches, for tests of what reads sweeps."""
    return run_cli(
        "cnnstudy.train", "-m", "model=bn,nobn", "optim.lr=1e-3,1e-2", f"hydra.sweep.dir={sweep_dir}",
        f"data.root={data_root}", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    )  # fmt: skip
