"""Builders: the model, the LightningModule and the Trainer's pieces from a composed config.

Importing this module changes nothing global; every entry point (train, evaluate, layer_table, bench)
builds through it, so a config means the same thing to all of them.
"""

import ctypes
import sys

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnstudy import checks
from cnnstudy.errors import UserError, find_user_error
from cnnstudy.module import Classifier


def build(key: str, node: DictConfig, **kwargs):
    """`instantiate(node)`, a constructor's complaint about a value answered as `<key>: <message>`."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if find_user_error(cause) is not None:
            raise find_user_error(cause) from None
        if isinstance(cause, ValueError | TypeError | MisconfigurationException):
            raise UserError(f"{key}: {cause}") from e
        raise


def build_model(cfg: DictConfig) -> nn.Module:
    """The model of `cfg.model`, sized from the data config (channels, image size, classes)."""
    data = cfg.data
    size = {"in_channels": data.channels, "image_size": data.image_size, "num_classes": data.num_classes}
    return build("model", cfg.model, **size)


def build_module(cfg: DictConfig) -> Classifier:
    """The Classifier around `build_model(cfg)`; optimizer and scheduler settings are tried once here,
    so a bad value stops the run before anything trains."""
    model = build_model(cfg)
    optimizer = build("optim", cfg.optim)
    scheduler = build("scheduler", cfg.scheduler) if cfg.get("scheduler") else None
    try:
        trial = optimizer(model.parameters())
    except (ValueError, TypeError) as e:
        raise UserError(f"optim: {e}") from e
    if scheduler is not None:
        try:
            scheduler(trial, **({"total_steps": 1} if Classifier.steps_per_batch(scheduler) else {}))
        except (ValueError, TypeError) as e:
            raise UserError(f"scheduler: {e}") from e
    return Classifier(model, optimizer=optimizer, scheduler=scheduler, num_classes=cfg.data.num_classes, **cfg.module)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_config(cfg: DictConfig) -> None:
    """Values Hydra cannot type-check, answered before anything is built."""
    checks.config(cfg)
    if cfg.get("scheduler") and "_target_" not in cfg.scheduler:  # settings without a scheduler to set
        raise UserError(
            f"scheduler={OmegaConf.to_container(cfg.scheduler)} names no scheduler (_target_): "
            f"choose one, e.g. scheduler=step"
        )


def configure_process(cfg: DictConfig) -> None:
    """Process-wide settings of a run: its CPU threads, no NaN-filling of new tensors, and malloc keeping freed memory.

    With deterministic algorithms on (trainer.deterministic, on by default) torch also fills every tensor
    from torch.empty with NaN, a check for code that reads memory it never wrote. No cnnstudy model does
    (tests/test_determinism.py trains each family with the filling on and off: the same bits), and the fills
    cost about 6 % of a sweep of 100-step MNIST jobs here (docs/performance.md), so they are off; the
    deterministic kernels stay."""
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    torch.utils.deterministic.fill_uninitialized_memory = False
    if cfg.get("keep_freed_memory"):
        keep_freed_memory()


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit systems.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX = -1, -3, 32 * 2**20


def keep_freed_memory() -> None:
    """Have glibc's malloc keep the memory a training step frees for the next step, instead of handing it back.

    A CPU step allocates and frees its activations and gradients (MBs each). By default glibc returns freed
    blocks to the kernel (munmap, heap trimming) and the next step faults the same pages in again, zeroed:
    0.5-1.6 million page faults per 100 steps of model=bn here, each step 20-75 % slower, by a different amount
    from job to job (docs/performance.md). A fixed mmap threshold and a trim threshold of 1 GiB keep those
    blocks in the heap; only blocks above 32 MiB (whole datasets) still go back. Memory use stays the
    step's peak, results are unchanged (allocation does not touch values). No-op without glibc."""
    if sys.platform != "linux":
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
        mallopt(M_TRIM_THRESHOLD, 2**30)
