"""Lightning callbacks of cnnstudy."""

import itertools
import logging
import os
import signal
import sys
import threading
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from torch.optim.swa_utils import update_bn

from cnnstudy import checks
from cnnstudy.checkpoints import CONFIG_KEY
from cnnstudy.errors import Interrupted
from cnnstudy.launchers import SIGNALS_FORWARDED_ENV, STOP_SIGNALS
from cnnstudy.record import RunRecord
from cnnstudy.rng import rng_kept, rng_state, set_rng_state

EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")
# Recorded only by runs with module.eval_also_in_train_mode=true: validation and test measured a second time
# with the model in train mode, as the source did (cnnstudy.module.Classifier).
TRAIN_MODE_EPOCH_KEYS = ("val_loss_train_mode", "val_acc_train_mode")
TRAIN_MODE_TEST_KEYS = ("test_loss_train_mode", "test_acc_train_mode")


class RunRecorder(L.Callback):
    """Records the run into its RunRecord (cnnstudy.run.Run makes it): one metrics.json entry per epoch, and in
    every checkpoint the run's config (so a checkpoint says what produced it and `cnnstudy.evaluate` can rebuild
    the model from it alone) and the global RNG state (cnnstudy.rng).

    Its state (epoch records, seconds trained, the probes' scalars) goes into every checkpoint too, so a resumed run
    continues the same metrics.json and probes.json as if it had never stopped. Under DDP only global rank 0 writes.
    """

    def __init__(self, record: RunRecord, run_info: dict):
        self.record, self.run_info = record, run_info
        self._started = None

    @staticmethod
    def of(trainer: L.Trainer) -> "RunRecorder | None":
        """The Trainer's recorder; None for a Trainer outside a cnnstudy run (a test's, a notebook's)."""
        return next((c for c in trainer.callbacks if isinstance(c, RunRecorder)), None)

    def setup(self, trainer, pl_module, stage):
        self.record.writes = trainer.is_global_zero

    def on_train_epoch_start(self, trainer, pl_module):
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        entry = {"epoch": trainer.current_epoch}
        for key in EPOCH_KEYS:
            entry[key] = as_number(metrics.get(key))
        entry.update({key: as_number(metrics[key]) for key in TRAIN_MODE_EPOCH_KEYS if key in metrics})
        self.record.add_epoch(entry, time.perf_counter() - self._started)

    def state_dict(self) -> dict:
        return self.record.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.record.load_state_dict(state_dict)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.run_info
        checkpoint["rng_states"] = rng_state()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        set_rng_state(checkpoint.get("rng_states", {}))


def as_number(value):
    return float(value) if isinstance(value, torch.Tensor) else value


class StopOnSignal(L.Callback):
    """SIGTERM, SIGINT and SIGHUP end the run at the next batch boundary, never inside a write: `check()` raises
    Interrupted there, and the last checkpoint (saved at the end of the previous epoch) is intact. A second
    signal ends the process at once, as the signal would without this handler; not in a job of a launcher that
    passes signals on (the job may get one from the terminal and the same from the launcher, which itself
    ends its jobs on a second signal).

    A context manager, so that the handlers cover the whole run: loading data, fitting and testing.
    """

    SIGNALS = STOP_SIGNALS

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # signals can only be handled there
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.received is not None and SIGNALS_FORWARDED_ENV not in os.environ:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        if self.received is None:  # the run was stopped by the first (a launcher may send SIGTERM after it)
            self.received = signum

    def check(self) -> None:
        if self.received is not None:
            raise Interrupted(self.received)

    def on_train_batch_end(self, *args) -> None:
        self.check()

    def on_validation_batch_end(self, *args) -> None:
        self.check()

    def on_test_batch_end(self, *args) -> None:
        self.check()


class RecalibrateBN(L.Callback):
    """Before every validation and test, re-estimates each BatchNorm's running statistics on `batches`
    training batches: torch.optim.swa_utils.update_bn (model in train mode, no gradient, momentum=None), so
    they become the plain average of those batches' statistics under the current weights.

    Why: evaluation normalises by the running statistics, an exponential average (momentum 0.1) over the last
    ~10 training batches, taken while the weights still moved. At batch 2 that is about 20 images' worth, so
    a small-batch BN is judged partly by how noisy that estimate is; re-estimating on many batches is the
    usual control. The batches are the first `batches` of the training order of epoch 0 (the same ones each
    time), augmented as in training. The global RNG is restored afterwards, so training goes on exactly as
    without this callback: only the evaluations (and hence the best checkpoint) differ. torch's BatchNorm
    classes only (model.norm bn, noisy_bn): update_bn does not see model.norm=bn_scratch's.
    """

    def __init__(self, batches: int):
        self.batches = checks.whole("callbacks.bn_recalibrate.batches", batches)

    def recalibrate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        with rng_kept():  # a DataLoader's iterator draws its seed from the global RNG too
            loader = itertools.islice(datamodule.train_dataloader(), self.batches)
            images = (datamodule.normalize(x.to(pl_module.device), augment=True) for x, _ in loader)
            update_bn(images, pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.recalibrate(trainer, pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self.recalibrate(trainer, pl_module)


def progress_bar(refresh_rate: int) -> ProgressBar:
    """tqdm's bar when stdout is a terminal; otherwise (a file, a SLURM log, CI) one line per epoch, since every
    redraw of the bar would be written into the file."""
    return TQDMProgressBar(refresh_rate=refresh_rate) if sys.stdout.isatty() else EpochLines()


class EpochLines(ProgressBar):
    """The progress without a terminal: after each training epoch (its validation included) one line on the
    `cnnstudy` logger (stdout and train.log): epoch, train and val loss and accuracy, the epoch's seconds."""

    def __init__(self):
        super().__init__()
        self.enabled = True
        self._started = None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer, pl_module):
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if not (self.enabled and trainer.is_global_zero):
            return
        shown = {}
        for key in EPOCH_KEYS:
            value = as_number(trainer.callback_metrics.get(key))
            shown[key] = "–" if value is None else f"{value * 100:.2f} %" if key.endswith("acc") else f"{value:.4f}"
        logging.getLogger("cnnstudy").info(
            "epoch %d/%d: train loss %s, acc %s; val loss %s, acc %s; %.1f s",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            shown["train_loss"],
            shown["train_acc"],
            shown["val_loss"],
            shown["val_acc"],
            time.perf_counter() - self._started,
        )
