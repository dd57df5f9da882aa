"""Train one model: `python -m cnnstudy.train [overrides]`, or a grid with `-m`.

Builds datamodule, model and Trainer from the Hydra config, fits and tests the best checkpoint through the
run's Run (cnnstudy.run: the lock, resume, the record and the run's end), which writes metrics.json (and, with
probes, probes.json) into the run's output dir beside the checkpoints and the loggers' files. Re-running the
same command in the same dir resumes from last.ckpt, or reports the result if the run completed.
"""

import logging
import signal
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnstudy.builders import build, build_module, check_config, configure_process, count_parameters
from cnnstudy.callbacks import StopOnSignal
from cnnstudy.checkpoints import AtomicCheckpointIO
from cnnstudy.config import CONF_DIR, check_overrides
from cnnstudy.errors import Interrupted, StorageError, exit_on_user_error, fail, find_user_error
from cnnstudy.hardware import describe, detect_hardware
from cnnstudy.run import Run

log = logging.getLogger("cnnstudy")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    route_library_logs()
    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    with StopOnSignal() as stop:
        run = Run(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task), choices)
        log.info(describe(run.precision, detect_hardware()))
        if run.precision.warning:
            log.warning(run.precision.warning)
        log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
        return run_job(cfg, run, stop, sweeping=hydra_cfg.mode == RunMode.MULTIRUN)


def train(cfg: DictConfig, run: Run, stop: StopOnSignal) -> dict:
    """Fit and test one config in the run's dir; returns the final metrics.json record. Raises Interrupted
    (a signal `stop` caught) and StorageError (files that cannot be written) after recording them."""
    check_config(cfg)
    with run.lock():
        if (completed := run.open()) is not None:
            return completed
        configure_process(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = build("data", cfg.data)
        datamodule.setup("fit")  # bad data answers now, before anything is written
        module = build_module(cfg)
        loggers = [build(f"logger.{name}", c) for name, c in (cfg.get("logger") or {}).items()]
        callbacks = [build(f"callbacks.{name}", c) for name, c in cfg.callbacks.items()] + [run.recorder(), stop]
        callbacks += [build(f"probes.{name}", c) for name, c in (cfg.get("probes") or {}).items()]
        trainer = build(
            "trainer",
            cfg.trainer,
            precision=run.precision.value,
            callbacks=callbacks,
            logger=loggers,
            plugins=[AtomicCheckpointIO()],
        )
        run.start(trainer, count_parameters(module.model))
        with run.ending():
            stop.check()
            if (diverged := run.fit(module, datamodule)) is not None:
                return run.finish("diverged", diverged_epoch=diverged.epoch, error=str(diverged))
            return run.finish("completed", **run.test(module, datamodule))


def run_job(cfg: DictConfig, run: Run, stop: StopOnSignal, sweeping: bool) -> float:
    """train() with its outcome answered: one line for what ended it; in a sweep a failed job is recorded
    and the sweep goes on. Returns the objective of an Optuna search (0 for a diverged or failed run)."""
    try:
        if not sweeping:
            with exit_on_user_error():
                return train(cfg, run, stop).get("best_val_acc") or 0.0
        record = train(cfg, run, stop)
    except Interrupted as e:
        # A sweep stops here too: the signal was meant for the whole command. Re-running it resumes.
        fail(
            f"{run.dir}: interrupted by {signal.Signals(e.signum).name}; run the same command to resume", 128 + e.signum
        )
    except StorageError as e:
        if not sweeping:
            fail(str(e), status=1)
        one_line_in_console(f"{run.dir} failed: {e}", e)
        return 0.0
    except Exception as e:
        if not sweeping:
            raise  # a single run's bug: its traceback (a UserError was answered above, in one line)
        # One failing job must not end the sweep: record it and go on to the next.
        message = f"{type(e).__name__}: {find_user_error(e) or e}"
        one_line_in_console(f"{run.dir} failed: {message}", e)
        run.fail(message)
        return 0.0
    return record.get("best_val_acc") or 0.0


def route_library_logs() -> None:
    """Lightning (its top-level logger too) and torchmetrics give their loggers a stderr handler of their own
    at import; hand their messages to Hydra's handlers instead (console on stdout and the run's train.log),
    so each line is printed once and stderr carries only errors."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.captureWarnings(True)  # library warnings too: stdout and train.log, not stderr


def one_line_in_console(message: str, error: BaseException) -> None:
    """`message` on the console and in the job's train.log; the traceback in train.log only."""
    log.error(message)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            traceback = (type(error), error, error.__traceback__)
            handler.handle(log.makeRecord(log.name, logging.ERROR, "", 0, "traceback:", (), traceback))


if __name__ == "__main__":
    check_overrides("train", sys.argv[1:])
    main()
