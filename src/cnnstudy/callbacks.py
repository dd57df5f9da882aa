"""Lightning callbacks of cnnstudy."""

import time
from pathlib import Path

import lightning as L
import torch

from cnnstudy.results import write_json_atomic

EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


class MetricsFile(L.Callback):
    """Keeps metrics.json up to date: one record per epoch, written atomically after each epoch.

    Its state (epoch records, seconds trained) goes into every checkpoint, so a resumed run
    continues the same file as if it had never stopped. Under DDP only global rank 0 writes.
    """

    def __init__(self, path: Path, header: dict):
        self.path, self.header = Path(path), header
        self.epochs: list[dict] = []
        self.seconds = 0.0
        self.writes = True  # until setup says this process is not rank 0
        self._started = None

    @property
    def record(self) -> dict:
        best = max((e["val_acc"] for e in self.epochs if e.get("val_acc") is not None), default=None)
        return {**self.header, "best_val_acc": best, "seconds": round(self.seconds, 3), "epochs": self.epochs}

    def write(self, **fields) -> dict:
        record = {**self.record, **fields}
        if self.writes:
            write_json_atomic(self.path, record)
        return record

    def setup(self, trainer, pl_module, stage):
        self.writes = trainer.is_global_zero

    def on_train_epoch_start(self, trainer, pl_module):
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds += time.perf_counter() - self._started
        metrics = trainer.callback_metrics
        entry = {"epoch": trainer.current_epoch}
        for key in EPOCH_KEYS:
            value = metrics.get(key)
            entry[key] = float(value) if isinstance(value, torch.Tensor) else value
        self.epochs.append(entry)
        self.write(status="running")

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs, self.seconds = list(state_dict["epochs"]), state_dict["seconds"]
