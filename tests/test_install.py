"""A plain (non-editable) install works from any directory: the wheel carries conf/, and a user's own
configs (an experiment, a model from their own module, a data config) come in through --config-dir."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.wheel, pytest.mark.subprocess, pytest.mark.slow]

FEW_BATCHES = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
# What the wheel is built from: the files an sdist holds (MANIFEST.in), nothing else of the checkout.
BUILD_INPUTS = ("src", "conf", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")

USER_MODEL = """
from torch import nn


class TinyMLP(nn.Module):
    def __init__(self, in_channels: int, image_size: int, num_classes: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size**2, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x):
        return self.net(x)
"""
USER_CONFIGS = {
    "model/tiny_mlp.yaml": "_target_: mymodels.TinyMLP\nhidden: 32\n",
    "data/mnist_b50.yaml": "defaults:\n  - mnist\n  - _self_\nbatch_size: 50\n",
    "experiment/mlp_width.yaml": (
        "# @package _global_\n"
        "defaults:\n  - override /model: tiny_mlp\n  - override /data: mnist_b50\n"
        "trainer:\n  max_epochs: 1\n"
        "hydra:\n  sweeper:\n    params:\n      model.hidden: 16,64\n"
    ),
}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the built wheel; the dependencies are read from this venv's site-packages
    (a path in a .pth file: that folder's own .pth files, the editable install's among them, are not run)."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", source], check=True)
    (wheel,) = (tmp / "dist").glob("cnnstudy-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([*pip, "--python", python, "install", "--no-deps", wheel], check=True)
    return python


def run(python: Path, cwd: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_wheel_trains_sweeps_reports_and_takes_user_configs_from_any_directory(installed, tmp_path, data_root):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(installed, elsewhere, "-c", "import cnnstudy.config as c; print(c.__file__); print(c.CONF_DIR)")
    module_file, conf_dir = where.stdout.split()
    venv = installed.parents[1]
    assert Path(module_file).is_relative_to(venv) and Path(conf_dir).is_relative_to(venv), where.stdout
    assert not Path(module_file).is_relative_to(ROOT)

    one = tmp_path / "one"
    run(installed, elsewhere, "-m", "cnnstudy.train", f"hydra.run.dir={one}", f"data.root={data_root}",
        "trainer.max_epochs=1", *FEW_BATCHES)  # fmt: skip
    record = json.loads((one / "metrics.json").read_text())
    assert record["status"] == "completed" and len(record["epochs"]) == 1

    evaluated = run(installed, elsewhere, "-m", "cnnstudy.evaluate", f"ckpt_path={record['best_ckpt']}")
    assert f"test_acc={record['test_acc']}" in evaluated.stdout

    table = run(installed, elsewhere, "-m", "cnnstudy.layer_table", "model=session5")
    assert "model=session5 data=mnist" in table.stdout

    # the user's own configs and model module, outside the package
    user = tmp_path / "user"
    (user / "code").mkdir(parents=True)
    (user / "code" / "mymodels.py").write_text(USER_MODEL)
    for name, text in USER_CONFIGS.items():
        (user / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (user / "conf" / name).write_text(text)
    sweep = tmp_path / "sweep"
    swept = run(installed, elsewhere, "-m", "cnnstudy.train", "-m", "--config-dir", str(user / "conf"),
                "experiment=mlp_width", f"hydra.sweep.dir={sweep}", f"data.root={data_root}", *FEW_BATCHES,
                pythonpath=user / "code")  # fmt: skip
    records = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert [r["status"] for r in records] == ["completed", "completed"], swept.stdout[-2000:]
    # 784 inputs -> hidden -> 10 classes, with biases: the user's model, at the swept widths
    assert [r["params"] for r in records] == [784 * h + h + h * 10 + 10 for h in (16, 64)]
    assert [r["config"]["data"]["batch_size"] for r in records] == [50, 50]

    run(installed, elsewhere, "-m", "cnnstudy.report", str(sweep))
    assert "mean ± std" in (sweep / "report.md").read_text()
