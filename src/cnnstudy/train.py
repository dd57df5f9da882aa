"""Train one model: `python -m cnnstudy.train [overrides]`, or a grid with `-m`.

Builds datamodule, model and Trainer from the Hydra config, fits, tests the best checkpoint and
writes metrics.json, TensorBoard events and checkpoints into the run's output dir. Re-running the
same command in the same dir resumes from last.ckpt, or reports the result if the run completed.
"""

import copy
import logging
import os
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnstudy.callbacks import MetricsFile
from cnnstudy.checkpoints import CONFIG_KEY, AtomicCheckpointIO, load_checkpoint
from cnnstudy.cli import check_overrides
from cnnstudy.errors import UserError, find_user_error
from cnnstudy.module import Classifier, Diverged
from cnnstudy.results import METRICS_FILE, read_metrics, run_name, write_json_atomic

log = logging.getLogger("cnnstudy")
# Lightning (its top-level logger too) and torchmetrics give their loggers a stderr handler of their own
# at import; hand their messages to Hydra's handlers instead (console on stdout and the run's train.log),
# so each line is printed once and stderr carries only errors.
for _name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
    logging.getLogger(_name).handlers.clear()
    logging.getLogger(_name).propagate = True


def threads_per_job() -> int:
    """CPU threads for one job: the machine's cores split evenly between parallel jobs, so that
    jobs x threads <= cores (oversubscribed jobs slow each other down far more than they gain)."""
    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else {}
    n_jobs = launcher.get("n_jobs") or 1
    cores = os.cpu_count() or 1
    return max(1, cores // (cores if n_jobs < 0 else n_jobs))


OmegaConf.register_new_resolver("threads_per_job", threads_per_job, replace=True)
# Keys that say where and how fast a run goes or what it measures on the side, not what it computes:
# a resumed run may change them (the probes are tested to leave the trajectory unchanged).
RUNTIME_KEYS = ("threads", "data.root", "data.num_workers", "probes")


def comparable(config: dict) -> dict:
    """`config` without RUNTIME_KEYS, for deciding whether an output dir holds the same run."""
    config = copy.deepcopy(config)
    for key in RUNTIME_KEYS:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    return config


def build_model(cfg: DictConfig) -> nn.Module:
    """The model of `cfg.model`, sized from the data config (channels, image size, classes)."""
    data = cfg.data
    return instantiate(cfg.model, in_channels=data.channels, image_size=data.image_size, num_classes=data.num_classes)


def build_module(cfg: DictConfig, run_info: dict | None = None) -> Classifier:
    scheduler = instantiate(cfg.scheduler) if cfg.scheduler else None
    return Classifier(
        build_model(cfg),
        optimizer=instantiate(cfg.optim),
        scheduler=scheduler,
        num_classes=cfg.data.num_classes,
        run_info=run_info,
        **cfg.module,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_config(cfg: DictConfig) -> None:
    """Values Hydra cannot type-check, answered before anything is built."""
    lr = cfg.optim.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise UserError(f"optim.lr={lr!r} must be a positive number, e.g. optim.lr=1e-3")
    epochs = cfg.trainer.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise UserError(f"trainer.max_epochs={epochs!r} must be a whole number >= 1")
    if cfg.get("scheduler") and "_target_" not in cfg.scheduler:  # settings without a scheduler to set
        raise UserError(
            f"scheduler={OmegaConf.to_container(cfg.scheduler)} names no scheduler (_target_): "
            f"choose one, e.g. scheduler=step"
        )


def hparams(cfg: DictConfig, choices: dict, overrides: list[str], params: int, status: str) -> dict:
    """What the TensorBoard HPARAMS tab shows per run: the group choices, the numbers that vary, the status."""
    flat = {group: choices[group] for group in ("model", "data", "optim", "scheduler") if group in choices}
    flat["status"] = status
    flat.update(
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.get("weight_decay", 0.0),
        batch_size=cfg.data.batch_size,
        max_epochs=cfg.trainer.max_epochs,
        seed=cfg.seed,
        params=params,
    )
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if not key.startswith(("hydra.", "data.root")):
            flat.setdefault(key, value)
    return flat


def train(cfg: DictConfig, output_dir: Path, overrides: list[str], choices: dict) -> dict:
    """Fit and test one config in `output_dir`; returns the final metrics.json record."""
    check_config(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    previous = read_metrics(output_dir)
    last = output_dir / "checkpoints" / "last.ckpt"
    same = comparable(config)
    resumable = last.exists() and comparable(load_checkpoint(last)[CONFIG_KEY].get("config", {})) == same
    # A failed job that saved no checkpoint holds nothing to resume: it is retried with the config given
    # now, so re-running a sweep's command after fixing a config mistake re-runs just those jobs.
    retry = (previous or {}).get("status") == "failed" and not last.exists()
    recorded = None if retry else (previous or {}).get("config")  # a job failing early records none
    if (recorded is not None and comparable(recorded) != same) or (last.exists() and not resumable):
        raise UserError(
            f"{output_dir} holds a run of a different config: choose another output dir "
            f"(hydra.run.dir=... or hydra.sweep.dir=...) or delete that one"
        )
    if previous is not None and previous.get("status") == "completed":
        log.info("%s: already completed, test_acc=%.4f (not retrained)", output_dir, previous["test_acc"])
        return previous

    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # bad data answers now, before anything is written
    module = build_module(cfg, run_info={"config": config, "choices": choices})
    params = count_parameters(module.model)
    name = run_name(overrides)
    header = {"overrides": list(overrides), "choices": choices, "params": params, "config": config}
    metrics_file = MetricsFile(output_dir / METRICS_FILE, header)
    logger = TensorBoardLogger(save_dir=str(output_dir), name="tb", version=name, default_hp_metric=False)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] + [metrics_file]
    callbacks += [instantiate(c) for c in (cfg.get("probes") or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()])
    metrics_file.header["processes"] = trainer.world_size  # > 1 under DDP

    if resumable:
        log.info("resuming from %s", last)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resumable else None, weights_only=True)
        diverged = None
    except Exception as e:
        if (diverged := Diverged.behind(e)) is None:
            raise
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher) and (written := read_metrics(output_dir)):
        # ddp_spawn trained in worker processes: this process's MetricsFile saw no epoch, rank 0's wrote them
        metrics_file.load_state_dict(written)
    best_val_acc = {"hp/best_val_acc": metrics_file.record["best_val_acc"] or 0.0}
    if diverged is not None:
        log.warning("%s: %s", output_dir, diverged)
        logger.log_hyperparams(hparams(cfg, choices, overrides, params, "diverged"), best_val_acc)
        logger.finalize("failed")
        return metrics_file.write(status="diverged", diverged_epoch=diverged.epoch, error=str(diverged))

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        # Load the weights only: trainer.test(ckpt_path=...) would also restore the callbacks' state
        # of that epoch, rolling metrics.json back to the best epoch.
        module.load_state_dict(load_checkpoint(best)["state_dict"])
    (test,) = trainer.test(module, datamodule=datamodule, verbose=False)
    result = {"test_acc": test["test_acc"], "test_loss": test["test_loss"], "best_ckpt": best}
    logger.log_hyperparams(
        hparams(cfg, choices, overrides, params, "completed"), {"hp/test_acc": result["test_acc"], **best_val_acc}
    )
    logger.finalize("success")
    record = metrics_file.write(status="completed", **result)
    log.info("%s: test_acc=%.4f test_loss=%.4f", output_dir, record["test_acc"], record["test_loss"])
    return record


def record_failure(output_dir: Path, overrides: list[str], choices: dict, error: str) -> None:
    """Mark this job's metrics.json failed, keeping its epochs; another run's file is left alone."""
    existing = read_metrics(output_dir)
    if existing is not None and existing.get("overrides") != overrides:
        return
    record = existing or {"overrides": overrides, "choices": choices}
    write_json_atomic(output_dir / METRICS_FILE, {**record, "status": "failed", "error": error})


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        record = train(cfg, output_dir, overrides, choices)
    except Exception as e:
        user_error = find_user_error(e)
        if user_error is not None and not sweeping:
            print(f"error: {user_error}", file=sys.stderr)
            sys.exit(2)
        if not sweeping:
            raise
        # One failing job must not end the sweep: record it and go on to the next.
        log.exception("%s failed", output_dir)
        record_failure(output_dir, overrides, choices, f"{type(e).__name__}: {user_error or e}")
        return 0.0
    return record.get("best_val_acc") or 0.0  # the objective of an Optuna search: 0 for a diverged run


if __name__ == "__main__":
    check_overrides("train", sys.argv[1:])
    main()
