"""Classifier: the one LightningModule that trains any nn.Module classifier in cnnstudy.

It only trains: what a run records (metrics.json, the config and RNG state in checkpoints) is the
RunRecorder callback's job (cnnstudy.callbacks).
"""

import re

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy


class Diverged(Exception):
    """The training loss became NaN or infinite."""

    MESSAGE = re.compile(r"training loss became non-finite at epoch (\d+), step (\d+)")

    def __init__(self, epoch: int, step: int):
        super().__init__(f"training loss became non-finite at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step

    @classmethod
    def behind(cls, error: BaseException) -> "Diverged | None":
        """`error` if it is a Diverged, or the Diverged a DDP worker process raised: torch.multiprocessing
        hands a worker's exception to the main process as the text of its traceback."""
        if isinstance(error, cls):
            return error
        found = cls.MESSAGE.search(str(error))
        return cls(int(found[1]), int(found[2])) if found else None


class Classifier(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        optimizer,
        num_classes: int,
        scheduler=None,
        channels_last: bool = False,
        compile: bool = False,
    ):
        """`optimizer` and `scheduler` are partials (Hydra `_partial_: true`) that take params / optimizer."""
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        if compile:
            self.model.compile()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.channels_last = channels_last
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{kind}": MeanMetric() if kind == "loss" else MulticlassAccuracy(num_classes, average="micro")
                for stage in ("train", "val", "test")
                for kind in ("loss", "acc")
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        if stage == "train" and not torch.isfinite(loss):
            raise Diverged(self.current_epoch, self.global_step)
        loss_metric, acc_metric = self.metrics[f"{stage}_loss"], self.metrics[f"{stage}_acc"]
        loss_metric.update(loss.detach(), weight=len(labels))
        acc_metric.update(logits.detach(), labels)
        self.log(f"{stage}_loss", loss_metric, on_step=False, on_epoch=True, prog_bar=stage != "test")
        self.log(f"{stage}_acc", acc_metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        per_batch = self.steps_per_batch(self.scheduler_factory)
        total = {"total_steps": self.trainer.estimated_stepping_batches} if per_batch else {}
        scheduler = self.scheduler_factory(optimizer, **total)
        interval = "step" if per_batch else "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    @staticmethod
    def steps_per_batch(scheduler_factory) -> bool:
        """A one-cycle schedule steps every batch and needs the run's total steps; the others step per epoch."""
        return getattr(scheduler_factory, "func", None) is torch.optim.lr_scheduler.OneCycleLR
