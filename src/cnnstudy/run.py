"""One training run in its output dir: cnnstudy.train builds a Run once and trains through it.

The Run owns what the dir holds about the run: the lock (one process per dir), what a re-run resumes from (or
that the run already completed), the record (metrics.json and probes.json, cnnstudy.record) and the run's end:
its final status, written once, and the loggers' hyperparameters. Nothing else writes the record: the
RunRecorder callback it makes adds the epochs and the probes' scalars.
"""

import contextlib
import fcntl
import logging
import os
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cnnstudy.callbacks import TRAIN_MODE_TEST_KEYS, RunRecorder
from cnnstudy.checkpoints import CONFIG_KEY, load_checkpoint
from cnnstudy.errors import Interrupted, StorageError, UserError
from cnnstudy.hardware import detect_hardware, run_precision
from cnnstudy.loggers import hparams, log_hyperparams
from cnnstudy.module import Diverged
from cnnstudy.provenance import run_provenance
from cnnstudy.record import RunRecord, read_probes_file, read_record, record_failure, same_run, stale_note

log = logging.getLogger("cnnstudy")


class Run:
    def __init__(self, cfg: DictConfig, output_dir: Path, overrides: list[str], choices: dict):
        self.cfg, self.dir, self.overrides, self.choices = cfg, Path(output_dir), overrides, choices
        self.precision = run_precision(cfg, choices.get("model"))
        self.record = RunRecord(self.dir, {"overrides": overrides, "choices": choices})
        self.config: dict = {}  # resolved, by open()
        self.resume_from: Path | None = None  # the last.ckpt a re-run goes on from
        self.resumed: dict | None = None  # the provenance of the session it goes on from
        self.trainer: L.Trainer | None = None
        self.params = 0

    @contextlib.contextmanager
    def lock(self):
        """One process at a time in the run dir (a second run of the same command while the first still runs would
        interleave two trainings' checkpoints). Temp files a crash left behind are removed under the lock.
        DDP ranks other than 0 share rank 0's dir and take no lock."""
        if any(int(os.environ.get(var, 0)) for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID")):
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{self.dir} is in use by another cnnstudy process: wait for it or stop it") from None
            for stale in [*self.dir.glob(".*.tmp"), *self.dir.glob("checkpoints/.*.tmp")]:
                stale.unlink(missing_ok=True)
            yield

    def open(self) -> dict | None:
        """Under the lock: check the dir against this config and pick up where a run of it stopped. Returns the
        dir's record if the run already completed (nothing to train), else None."""
        self.config = OmegaConf.to_container(self.cfg, resolve=True)
        self.config["trainer"]["precision"] = self.precision.value  # what it trains at (identity, resume), not `auto`
        previous, self.resume_from = previous_run(self.dir, self.config)
        if previous is not None and previous.get("status") == "running":  # we hold its lock: its process is gone
            log.warning("%s; resuming it", stale_note(self.dir, previous))
        if previous is not None and previous.get("status") == "completed":
            log.info("%s: already completed, test_acc=%.4f (not retrained)", self.dir, previous["test_acc"])
            return previous
        self.record.header |= {"config": self.config, "precision": self.precision.value}
        if self.resume_from and previous:
            self.record.continue_from(previous, read_probes_file(self.dir))
            self.resumed = previous.get("provenance")
        return None

    def recorder(self) -> RunRecorder:
        return RunRecorder(self.record, run_info={"config": self.config, "choices": self.choices})

    def start(self, trainer: L.Trainer, params: int) -> None:
        """The rest of what ran: the parameter count, provenance, training processes (> 1 under DDP)."""
        self.trainer, self.params = trainer, params
        provenance = run_provenance(detect_hardware(), self.precision.rule, self.resumed)
        self.record.header |= {"params": params, "provenance": provenance, "processes": trainer.world_size}

    def fit(self, module: L.LightningModule, datamodule: L.LightningDataModule) -> Diverged | None:
        """Train (from last.ckpt on a re-run); the Diverged that ended it, if it did."""
        if self.resume_from:
            log.info("resuming from %s", self.resume_from)
        ckpt_path = self.resume_from and str(self.resume_from)
        try:
            self.trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            diverged = None
        except Exception as e:
            if (diverged := Diverged.behind(e)) is None:
                raise
        if isinstance(self.trainer.strategy.launcher, _MultiProcessingLauncher) and (written := read_record(self.dir)):
            # ddp_spawn trained in worker processes: their rank 0 recorded the epochs and probes, this process none
            self.record.continue_from(written, read_probes_file(self.dir))
        if diverged is not None:
            log.warning("%s: %s", self.dir, diverged)
        return diverged

    def test(self, module: L.LightningModule, datamodule: L.LightningDataModule) -> dict:
        """The best checkpoint's test numbers, as the final record holds them."""
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        if best:
            # Load the weights only: trainer.test(ckpt_path=...) would also restore the callbacks' state
            # of that epoch, rolling metrics.json back to the best epoch.
            module.load_state_dict(load_checkpoint(best)["state_dict"])
        (test,) = self.trainer.test(module, datamodule=datamodule, verbose=False)
        train_mode = {key: test[key] for key in TRAIN_MODE_TEST_KEYS if key in test}  # eval_also_in_train_mode
        return {"test_acc": test["test_acc"], "test_loss": test["test_loss"], **train_mode, "best_ckpt": best}

    def finish(self, status: str, **fields) -> dict:
        """The run's final record (metrics.json), and its hyperparameters and final metrics to every logger."""
        metrics = {"hp/test_acc": fields["test_acc"]} if "test_acc" in fields else {}
        metrics["hp/best_val_acc"] = self.record.best_val_acc or 0.0
        for logger in self.trainer.loggers:
            log_hyperparams(logger, hparams(self.cfg, self.choices, self.overrides, self.params, status), metrics)
            logger.finalize("success" if status == "completed" else "failed")
        final = self.record.write(status, steps=self.trainer.global_step, **fields)
        if status == "completed":
            log.info("%s: test_acc=%.4f test_loss=%.4f", self.dir, final["test_acc"], final["test_loss"])
        return final

    @contextlib.contextmanager
    def ending(self):
        """A run stopped by a signal is recorded `interrupted` (and raises Interrupted: re-running resumes it); one
        whose files cannot be written `failed`, where the record still can be."""
        try:
            yield
        except (Interrupted, SIGTERMException) as e:  # SIGTERMException: Lightning's own handler got there first
            interrupted = e if isinstance(e, Interrupted) else Interrupted(signal.SIGTERM)
            self.finish("interrupted", error=str(interrupted))
            raise interrupted from None
        except StorageError as e:
            with contextlib.suppress(StorageError):  # the record too may be unwritable
                self.record.write("failed", error=str(e))
            raise

    def fail(self, message: str) -> None:
        """Record a job of a sweep failed by an error (the sweep goes on), keeping the epochs it recorded."""
        record_failure(self.dir, {"overrides": self.overrides, "choices": self.choices}, message)


def previous_run(output_dir: Path, config: dict) -> tuple[dict | None, Path | None]:
    """(the dir's metrics.json, the last.ckpt to resume from), refusing a dir that holds another config's run."""
    previous = read_record(output_dir)
    last = output_dir / "checkpoints" / "last.ckpt"
    resumable = last.exists() and same_run(load_checkpoint(last)[CONFIG_KEY].get("config", {}), config)
    # A failed job that saved no checkpoint holds nothing to resume: it is retried with the config given
    # now, so re-running a sweep's command after fixing a config mistake re-runs just those jobs.
    retry = (previous or {}).get("status") == "failed" and not last.exists()
    recorded = None if retry else (previous or {}).get("config")  # a job failing early records none
    if (recorded is not None and not same_run(recorded, config)) or (last.exists() and not resumable):
        raise UserError(
            f"{output_dir} holds a run of a different config: choose another output dir "
            f"(hydra.run.dir=... or hydra.sweep.dir=...) or delete that one"
        )
    return previous, last if resumable else None
