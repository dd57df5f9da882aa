"""BN's running statistics re-estimated before evaluation (cnnstudy.callbacks.RecalibrateBN), on real CIFAR-10."""

import copy

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from cnnstudy.builders import build, build_module
from cnnstudy.callbacks import RecalibrateBN

from conftest import CONF

BATCHES = 50  # recalibration batches: 100 images at batch 2


def accuracy(module: L.LightningModule, datamodule, images: int = 1000) -> float:
    module.eval()
    with torch.no_grad():
        x, y = datamodule.val_set[:images]
        return (module(datamodule.normalize(x)).argmax(1) == y).float().mean().item()


def bn_inputs_per_batch(module: L.LightningModule, batches: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """What each BatchNorm sees in a train-mode, no-gradient pass over `batches`, batch by batch."""
    probe = copy.deepcopy(module).train()
    seen: dict[str, list[torch.Tensor]] = {}
    for name, layer in probe.named_modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.register_forward_pre_hook(lambda _, args, name=name: seen.setdefault(name, []).append(args[0]))
    with torch.no_grad():
        for x in batches:
            probe(x)
    return seen


@pytest.fixture(scope="module")
def trained_at_batch_2(data_root):
    """cifar_cnn with BN after 100 SGD steps at batch 2 (norm_batch_size's arm b2_recal, its lr), not validated."""
    overrides = ["experiment=norm_batch_size", "arm/norm_batch_size=b2_recal", "model.norm=bn"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"data.root={data_root}", "data.download=false"])
    L.seed_everything(0, verbose=False)
    datamodule = build("data", cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=100, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    assert cfg.callbacks.bn_recalibrate.batches * cfg.data.batch_size == 2048
    return trainer, module, datamodule


@pytest.mark.slow
def test_recalibrated_statistics_are_the_plain_average_over_the_training_batches(trained_at_batch_2):
    trainer, module, datamodule = trained_at_batch_2
    before = accuracy(module, datamodule)
    loader = iter(datamodule.train_dataloader())  # the callback's batches: the first of epoch 0's order
    batches = [datamodule.normalize(next(loader)[0], augment=True) for _ in range(BATCHES)]
    seen = bn_inputs_per_batch(module, batches)
    rng = torch.get_rng_state()

    RecalibrateBN(batches=BATCHES).recalibrate(trainer, module)

    layers = {name: m for name, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(layers) == 3 and set(seen) == set(layers)
    for name, bn in layers.items():
        inputs = [x.double() for x in seen[name]]
        # each batch's mean and unbiased variance per channel (2 images x H x W values), averaged with equal weights
        means = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(0)
        variances = torch.stack([x.var(dim=(0, 2, 3), correction=1) for x in inputs]).mean(0)
        torch.testing.assert_close(bn.running_mean, means.float())
        torch.testing.assert_close(bn.running_var, variances.float())
        assert bn.num_batches_tracked.item() == BATCHES and bn.momentum == 0.1  # restored after the average
    assert not module.training
    assert torch.equal(torch.get_rng_state(), rng)  # training after it draws what it would have drawn
    after = accuracy(module, datamodule)
    assert abs(after - before) >= 0.005, (before, after)  # at least 5 of the 1,000 images change


@pytest.mark.parametrize("batch", [2, 4, 8])
def test_recal_arms_train_as_their_plain_arm_and_recalibrate_on_2048_images(cfg_for, batch):
    plain = cfg_for("experiment=norm_batch_size", f"arm/norm_batch_size=b{batch}", "model.norm=bn")
    recal = cfg_for("experiment=norm_batch_size", f"arm/norm_batch_size=b{batch}_recal", "model.norm=bn")
    assert OmegaConf.to_container(recal.callbacks.bn_recalibrate, resolve=True) == {
        "_target_": "cnnstudy.callbacks.RecalibrateBN",
        "batches": 2048 // batch,
    }
    recal_settings = OmegaConf.to_container(recal)
    del recal_settings["callbacks"]["bn_recalibrate"]
    assert recal_settings == OmegaConf.to_container(plain)


def test_recalibration_batches_must_be_a_positive_whole_number():
    with pytest.raises(Exception, match="callbacks.bn_recalibrate.batches=0 must be a positive whole number"):
        RecalibrateBN(batches=0)
