"""Classifier: the one LightningModule that trains any nn.Module classifier in cnnstudy.

It only trains: what a run records (metrics.json, the config and RNG state in checkpoints) is the
RunRecorder callback's job (cnnstudy.callbacks).
"""

import contextlib
import re

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from cnnstudy.rng import rng_kept


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
        eval_also_in_train_mode: bool = False,
    ):
        """`optimizer` and `scheduler` are partials (Hydra `_partial_: true`) that take params / optimizer.

        `eval_also_in_train_mode`: validation and test are measured a second time with the model in train
        mode (dropout on, BatchNorm on the batch's statistics), as the source did (the book's `validate()`
        never calls `model.eval()`), logged as `<stage>_loss_train_mode` / `<stage>_acc_train_mode`. These
        passes leave training as it would be without them (see `_in_train_mode`)."""
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        if compile:
            self.model.compile()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.channels_last = channels_last
        self.eval_also_in_train_mode = eval_also_in_train_mode
        stages = ["train", "val", "test"] + (["val_train_mode", "test_train_mode"] if eval_also_in_train_mode else [])
        self._logged: set[str] = set()  # the stages whose metrics went to self.log in the current epoch
        self.metrics = nn.ModuleDict(
            {
                metric_name(stage, kind): MeanMetric()
                if kind == "loss"
                else MulticlassAccuracy(num_classes, average="micro")
                for stage in stages
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
        loss_name, acc_name = metric_name(stage, "loss"), metric_name(stage, "acc")
        loss_metric, acc_metric = self.metrics[loss_name], self.metrics[acc_name]
        loss_metric.update(loss.detach(), weight=len(labels))
        acc_metric.update(logits.detach(), labels)
        if stage not in self._logged:
            # Lightning computes a logged Metric at the end of the epoch and resets it, so handing it to
            # self.log once per epoch is enough; every call moves the metric to the device again (8.2 s of
            # 67 s CPU in a profiled sweep of 100-step jobs, docs/performance.md).
            self.log(loss_name, loss_metric, on_step=False, on_epoch=True, prog_bar=stage in ("train", "val"))
            self.log(acc_name, acc_metric, on_step=False, on_epoch=True, prog_bar=stage in ("train", "val", "test"))
            self._logged.add(stage)
        return loss

    def on_train_epoch_start(self):
        self._logged.clear()

    on_validation_epoch_start = on_test_epoch_start = on_train_epoch_start

    def _evaluate(self, batch, stage: str) -> None:
        self._step(batch, stage)
        if self.eval_also_in_train_mode:
            with self._in_train_mode():
                self._step(batch, f"{stage}_train_mode")

    @contextlib.contextmanager
    def _in_train_mode(self):
        """The model in train mode for one extra evaluation pass that must not change the run: BatchNorm's
        running statistics (and its batch counter) are put back afterwards, and so is the global RNG state
        that dropout and noisy BN draw from, so the next training batch sees the same random numbers."""
        modes = {module: module.training for module in self.model.modules()}
        buffers = {name: buffer.clone() for name, buffer in self.model.named_buffers()}
        self.model.train()
        try:
            with rng_kept():
                yield
        finally:
            for module, training in modes.items():
                module.training = training
            for name, buffer in self.model.named_buffers():
                buffer.copy_(buffers[name])

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

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


def metric_name(stage: str, kind: str) -> str:
    """'val', 'acc' -> 'val_acc'; 'val_train_mode', 'acc' -> 'val_acc_train_mode' (the key in metrics.json)."""
    stage, train_mode, _ = stage.partition("_train_mode")
    return f"{stage}_{kind}{train_mode}"
