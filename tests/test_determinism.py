"""Repeatability: the same command with the same seed, run twice in fresh output dirs, records the same epochs
byte for byte. Default settings (no trainer.deterministic override): that is what a study gets."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from cnnstudy.builders import build_model, configure_process

from conftest import run_cli

MODEL_DATA = [
    ("bn", "mnist"), ("nobn", "mnist"), ("deep_cnn_bn", "mnist"), ("session5_bn", "mnist"), ("cifar_cnn", "cifar10"),
    ("net_batchnorm", "cifar2"), ("net_dropout", "cifar2"), ("net_res_deep", "cifar2"),
]  # fmt: skip

SHORT = [
    "model=deep_cnn_bn",  # BN and dropout: batch statistics and the RNG stream both have to repeat
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def fresh_run(run_dir: Path, data_root: Path) -> dict:
    result = run_cli("cnnstudy.train", f"hydra.run.dir={run_dir}", f"data.root={data_root}", *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.subprocess
def test_two_fresh_runs_record_byte_identical_epochs(tmp_path, data_root):
    first = fresh_run(tmp_path / "first", data_root)
    second = fresh_run(tmp_path / "second", data_root)
    assert first["config"]["trainer"]["deterministic"] == "warn"  # the default, recorded in the resolved config
    assert len(first["epochs"]) == 2
    assert json.dumps(first["epochs"]) == json.dumps(second["epochs"])
    assert (first["test_acc"], first["test_loss"]) == (second["test_acc"], second["test_loss"])


def train_steps(cfg, fill: bool) -> list[torch.Tensor]:
    """Three SGD steps of cfg's model on fixed synthetic batches, deterministic algorithms on, torch's
    NaN-filling of new tensors on or off; the parameters after them."""
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = cfg.data
    generator = torch.Generator().manual_seed(1)
    previous = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = fill
    try:
        for _ in range(3):
            x = torch.randn(4, data.channels, data.image_size, data.image_size, generator=generator)
            y = torch.randint(0, data.num_classes, (4,), generator=generator)
            optimizer.zero_grad()
            F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y).backward()
            optimizer.step()
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = previous[1]
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "overrides",
    [(f"model={model}", f"data={data}") for model, data in MODEL_DATA]
    + [("model=cifar_cnn", "data=cifar10", f"model.norm={norm}") for norm in ("gn", "ln", "noisy_bn", "bn_scratch")]
    + [("model=deep_cnn_bn", "data=mnist", "model.head=gap", "model.norm_placement=after_act")],
)
def test_no_model_reads_memory_it_never_wrote(cfg_for, overrides):
    """cnnstudy turns torch's NaN-filling of new tensors off (builders.configure_process): safe only if no
    model reads uninitialised memory, which would make training differ, or NaN, with the filling on."""
    cfg = cfg_for(*overrides)
    filled, unfilled = train_steps(cfg, fill=True), train_steps(cfg, fill=False)
    assert all(torch.isfinite(p).all() for p in filled)
    assert all(torch.equal(a, b) for a, b in zip(filled, unfilled, strict=True))


def test_a_run_does_not_fill_new_tensors(monkeypatch):
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    configure_process(OmegaConf.create({"threads": None}))
    assert torch.utils.deterministic.fill_uninitialized_memory is False
