"""Classifier: the one LightningModule that trains any nn.Module classifier in cnnstudy."""

import re

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from cnnstudy.checkpoints import CONFIG_KEY


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
        run_info: dict | None = None,
    ):
        """`optimizer` and `scheduler` are partials (Hydra `_partial_: true`) that take params / optimizer.

        `run_info` ({"config": ..., "choices": ...}) goes into every checkpoint, so a checkpoint says
        what produced it and `cnnstudy.evaluate` can rebuild the model from it alone.
        """
        super().__init__()
        self.run_info = run_info or {}
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
        if getattr(self.scheduler_factory, "func", None) is torch.optim.lr_scheduler.OneCycleLR:
            scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        else:
            scheduler = self.scheduler_factory(optimizer)
        interval = "step" if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) else "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning does not keep the global RNG; dropout and augmentation draw from it, and an
        # exactly resumed run needs them to continue the same random stream.
        checkpoint[CONFIG_KEY] = self.run_info
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states", {})
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
