"""What the `logger` config group needs beyond Lightning's loggers: a TensorBoard layout that opens on the
curves, and hyperparameters recorded by every kind of logger."""

from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from cnnstudy.callbacks import EPOCH_KEYS

# TensorBoard's TIME SERIES groups cards by the tag's first part and sorts the groups by name: under this one,
# train/val loss and accuracy come first (before hp/, lr-Adam and the probes' act_mean/, grad_norm/, ...).
CURVES_GROUP = "acc_loss"


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger, with the epoch curves as `acc_loss/<metric>` and without the `epoch` scalar
    Lightning adds to every logging call (its card was the one TIME SERIES opened on)."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        named = {f"{CURVES_GROUP}/{k}" if k in EPOCH_KEYS else k: v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(named, step)


def log_hyperparams(logger: Logger, params: dict, metrics: dict) -> None:
    """The run's hyperparameters and final metrics: TensorBoard takes both at once (its HPARAMS tab pairs them);
    the others (CSV, MLflow, W&B) take the params, and the metrics as metrics."""
    if isinstance(logger, LightningTensorBoardLogger):
        logger.log_hyperparams(params, metrics)
    else:
        logger.log_hyperparams(params)
        logger.log_metrics(metrics)


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
