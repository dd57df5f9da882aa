"""module.eval_also_in_train_mode: validation and test measured a second time in train mode, as the source
did, recorded beside the eval-mode numbers, without changing what the run trains."""

import json

import pytest
import torch
from torch import nn

from cnnstudy.module import Classifier

from conftest import run_cli

SHORT = [
    "model=deep_cnn_bn",  # BN and dropout: the two things train mode changes
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.deterministic=true",
]


def test_train_mode_pass_restores_bn_buffers_rng_and_modes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(64, 2))
    module = Classifier(model, optimizer=None, num_classes=2, eval_also_in_train_mode=True).eval()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    rng = torch.get_rng_state()
    with torch.inference_mode(), module._in_train_mode():
        assert all(m.training for m in model.modules())
        module(torch.randn(8, 1, 6, 6) + 3.0)
        assert model[1].num_batches_tracked.item() == 1  # the pass did use (and update) batch statistics
    assert not any(m.training for m in module.modules())
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.subprocess
def test_setting_records_train_mode_numbers_and_leaves_training_unchanged(tmp_path, data_root):
    def run(name: str, *extra: str) -> dict:
        run_dir = tmp_path / name
        result = run_cli("cnnstudy.train", f"hydra.run.dir={run_dir}", f"data.root={data_root}", *SHORT, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((run_dir / "metrics.json").read_text())

    plain = run("plain")
    both = run("both", "module.eval_also_in_train_mode=true")

    eval_keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
    assert [{k: e[k] for k in eval_keys} for e in both["epochs"]] == plain["epochs"]
    assert (both["test_acc"], both["test_loss"]) == (plain["test_acc"], plain["test_loss"])
    assert "val_acc_train_mode" not in plain["epochs"][0] and "test_acc_train_mode" not in plain

    for epoch in both["epochs"]:
        assert 0.0 <= epoch["val_acc_train_mode"] <= 1.0
        assert epoch["val_loss_train_mode"] > 0.0
        # dropout on and batch statistics give other numbers than the eval-mode model
        assert epoch["val_loss_train_mode"] != epoch["val_loss"]
    assert 0.0 <= both["test_acc_train_mode"] <= 1.0
    assert both["test_loss_train_mode"] != both["test_loss"]
