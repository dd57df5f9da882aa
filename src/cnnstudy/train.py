"""Train one model: `python -m cnnstudy.train [overrides]`, or a grid with `-m`.

Builds datamodule, model and Trainer from the Hydra config, fits, tests the best checkpoint and
writes metrics.json, TensorBoard events and checkpoints into the run's output dir. Re-running the
same command in the same dir resumes from last.ckpt, or reports the result if the run completed.
"""

import contextlib
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from cnnstudy.builders import build, build_module, check_config, configure_process, count_parameters
from cnnstudy.callbacks import RunRecorder, StopOnSignal
from cnnstudy.checkpoints import CONFIG_KEY, AtomicCheckpointIO, load_checkpoint
from cnnstudy.config import CONF_DIR, check_overrides, register_resolvers
from cnnstudy.errors import Interrupted, StorageError, UserError, exit_on_user_error, fail, find_user_error
from cnnstudy.hardware import describe, detect_hardware, run_precision
from cnnstudy.loggers import log_hyperparams
from cnnstudy.module import Diverged
from cnnstudy.provenance import run_provenance
from cnnstudy.record import RunRecord, read_record, record_failure, same_run, stale_note

log = logging.getLogger("cnnstudy")


def route_library_logs() -> None:
    """Lightning (its top-level logger too) and torchmetrics give their loggers a stderr handler of their own
    at import; hand their messages to Hydra's handlers instead (console on stdout and the run's train.log),
    so each line is printed once and stderr carries only errors."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.captureWarnings(True)  # library warnings too: stdout and train.log, not stderr


# The numbers every run's hyperparameters show, by the short name they show under.
HPARAM_KEYS = {
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "batch_size": "data.batch_size",
    "max_epochs": "trainer.max_epochs",
    "seed": "seed",
}


def hparams(cfg: DictConfig, choices: dict, overrides: list[str], params: int, status: str) -> dict:
    """What the HPARAMS tab (and every logger's hyperparameters) shows per run: the group choices, the numbers
    that vary, the status; one column per setting (an override of optim.lr is the `lr` column, not a second one)."""
    flat = {group: choices[group] for group in ("model", "data", "optim", "scheduler") if group in choices}
    flat["status"] = status
    flat.update({name: OmegaConf.select(cfg, key, default=0.0) for name, key in HPARAM_KEYS.items()})
    flat["params"] = params
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if not key.startswith(("hydra.", "data.root")) and key not in HPARAM_KEYS.values():
            flat.setdefault(key, value)
    return flat


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


def train(cfg: DictConfig, output_dir: Path, overrides: list[str], choices: dict, stop: StopOnSignal) -> dict:
    """Fit and test one config in `output_dir`; returns the final metrics.json record. Raises Interrupted
    (a signal `stop` caught) and StorageError (files that cannot be written) after recording them."""
    check_config(cfg)
    precision = run_precision(cfg, choices.get("model"))
    config = OmegaConf.to_container(cfg, resolve=True)
    config["trainer"]["precision"] = precision.value  # the run is what it trains at (identity, resume), not `auto`
    with run_dir_lock(output_dir):
        previous, resume_from = previous_run(output_dir, config)
        if previous is not None and previous.get("status") == "running":  # we hold its lock: its process is gone
            log.warning("%s; resuming it", stale_note(output_dir, previous))
        if previous is not None and previous.get("status") == "completed":
            log.info("%s: already completed, test_acc=%.4f (not retrained)", output_dir, previous["test_acc"])
            return previous
        configure_process(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = build("data", cfg.data)
        datamodule.setup("fit")  # bad data answers now, before anything is written
        module = build_module(cfg)
        params = count_parameters(module.model)
        resumed_from = (previous or {}).get("provenance") if resume_from else None
        provenance = run_provenance(detect_hardware(), precision.rule, resumed_from)
        header = {"overrides": overrides, "choices": choices, "params": params, "config": config}
        record = RunRecord(output_dir, {**header, "precision": precision.value, "provenance": provenance})
        if resume_from and previous:
            record.continue_from(previous)
        loggers = [build(f"logger.{name}", c) for name, c in (cfg.get("logger") or {}).items()]
        callbacks = [build(f"callbacks.{name}", c) for name, c in cfg.callbacks.items()]
        callbacks += [RunRecorder(record, run_info={"config": config, "choices": choices}), stop]
        callbacks += [build(f"probes.{name}", c) for name, c in (cfg.get("probes") or {}).items()]
        trainer = build(
            "trainer",
            cfg.trainer,
            precision=precision.value,
            callbacks=callbacks,
            logger=loggers,
            plugins=[AtomicCheckpointIO()],
        )
        record.header["processes"] = trainer.world_size  # > 1 under DDP

        def finish(status: str, metrics: dict, **fields) -> dict:
            for logger in loggers:
                log_hyperparams(logger, hparams(cfg, choices, overrides, params, status), metrics)
                logger.finalize("success" if status == "completed" else "failed")
            return record.write(status, steps=trainer.global_step, **fields)

        try:
            stop.check()
            return fit_and_test(trainer, module, datamodule, record, resume_from, finish)
        except SIGTERMException:  # Lightning's own SIGTERM handler got there first
            interrupted = Interrupted(signal.SIGTERM)
        except Interrupted as e:
            interrupted = e
        except StorageError as e:
            with contextlib.suppress(StorageError):  # the record too may be unwritable
                record.write("failed", error=str(e))
            raise
        finish("interrupted", {"hp/best_val_acc": record.best_val_acc or 0.0}, error=str(interrupted))
        raise interrupted


def fit_and_test(trainer: L.Trainer, module, datamodule, record: RunRecord, resume_from: Path | None, finish) -> dict:
    output_dir = record.path.parent
    if resume_from:
        log.info("resuming from %s", resume_from)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from and str(resume_from), weights_only=True)
        diverged = None
    except Exception as e:
        if (diverged := Diverged.behind(e)) is None:
            raise
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher) and (written := read_record(output_dir)):
        # ddp_spawn trained in worker processes: this process's recorder saw no epoch, rank 0's wrote them
        record.continue_from(written)
    best_val_acc = {"hp/best_val_acc": record.best_val_acc or 0.0}
    if diverged is not None:
        log.warning("%s: %s", output_dir, diverged)
        return finish("diverged", best_val_acc, diverged_epoch=diverged.epoch, error=str(diverged))

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        # Load the weights only: trainer.test(ckpt_path=...) would also restore the callbacks' state
        # of that epoch, rolling metrics.json back to the best epoch.
        module.load_state_dict(load_checkpoint(best)["state_dict"])
    (test,) = trainer.test(module, datamodule=datamodule, verbose=False)
    result = {"test_acc": test["test_acc"], "test_loss": test["test_loss"], "best_ckpt": best}
    final = finish("completed", {"hp/test_acc": result["test_acc"], **best_val_acc}, **result)
    log.info("%s: test_acc=%.4f test_loss=%.4f", output_dir, final["test_acc"], final["test_loss"])
    return final


@contextlib.contextmanager
def run_dir_lock(output_dir: Path):
    """One process at a time in a run dir (a second run of the same command while the first still runs would
    interleave two trainings' checkpoints). Temp files a crash left behind are removed under the lock.
    DDP ranks other than 0 share rank 0's dir and take no lock."""
    if any(int(os.environ.get(var, 0)) for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID")):
        yield
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{output_dir} is in use by another cnnstudy process: wait for it or stop it") from None
        for stale in [*output_dir.glob(".*.tmp"), *output_dir.glob("checkpoints/.*.tmp")]:
            stale.unlink(missing_ok=True)
        yield


def one_line_in_console(message: str, error: BaseException) -> None:
    """`message` on the console and in the job's train.log; the traceback in train.log only."""
    log.error(message)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            traceback = (type(error), error, error.__traceback__)
            handler.handle(log.makeRecord(log.name, logging.ERROR, "", 0, "traceback:", (), traceback))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    register_resolvers()  # a job may run in a fresh process (submitit, joblib): not only via __main__
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    route_library_logs()
    with StopOnSignal() as stop:
        precision = run_precision(cfg, choices.get("model"))
        log.info(describe(precision, detect_hardware()))
        if precision.warning:
            log.warning(precision.warning)
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
        return run_job(cfg, output_dir, overrides, choices, stop, sweeping=hydra_cfg.mode == RunMode.MULTIRUN)


def run_job(cfg: DictConfig, output_dir: Path, overrides: list[str], choices: dict, stop, sweeping: bool) -> float:
    """train() with its outcome answered: one line for what ended it; in a sweep a failed job is recorded
    and the sweep goes on. Returns the objective of an Optuna search (0 for a diverged or failed run)."""
    try:
        if not sweeping:
            with exit_on_user_error():
                return train(cfg, output_dir, overrides, choices, stop).get("best_val_acc") or 0.0
        record = train(cfg, output_dir, overrides, choices, stop)
    except Interrupted as e:
        # A sweep stops here too: the signal was meant for the whole command. Re-running it resumes.
        fail(
            f"{output_dir}: interrupted by {signal.Signals(e.signum).name}; run the same command to resume",
            128 + e.signum,
        )
    except StorageError as e:
        if not sweeping:
            fail(str(e), status=1)
        one_line_in_console(f"{output_dir} failed: {e}", e)
        return 0.0
    except Exception as e:
        if not sweeping:
            raise  # a single run's bug: its traceback (a UserError was answered above, in one line)
        # One failing job must not end the sweep: record it and go on to the next.
        message = f"{type(e).__name__}: {find_user_error(e) or e}"
        one_line_in_console(f"{output_dir} failed: {message}", e)
        record_failure(output_dir, {"overrides": overrides, "choices": choices}, message)
        return 0.0
    return record.get("best_val_acc") or 0.0


if __name__ == "__main__":
    check_overrides("train", sys.argv[1:])
    register_resolvers()
    main()
