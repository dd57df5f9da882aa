"""The machine a run trains on, and the precision `trainer.precision=auto` picks on it.

`auto` (the default) is bf16-mixed only where both hold: the device the run trains on has bf16 units, and the
model family is in `precision_proven` (conf/train.yaml), the families a study has shown to reach the same results
in bf16 as in fp32 (today bn and nobn: docs/results/precision.md). Otherwise it is 32-true. An explicit
trainer.precision always wins.
"""

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from cnnstudy.record import PRECISION_NAMES

AUTO, FP32, BF16 = "auto", "32-true", "bf16-mixed"


@dataclass(frozen=True)
class Hardware:
    cpu: str  # the CPU's model name
    cpu_capability: str  # the widest vector instructions torch's CPU kernels use (e.g. AVX512)
    cpu_bf16: bool  # AVX512-BF16 or AMX tiles
    gpu: str | None  # the first CUDA device's name; None without one
    gpu_bf16: bool  # bf16 in the GPU's own units (Ampere and later), not emulated

    def bf16_units(self, device: str) -> bool:
        return {"cpu": self.cpu_bf16, "cuda": self.gpu_bf16}.get(device, False)


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo (lscpu) gives it; the platform's answer elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def detect_hardware() -> Hardware:
    cuda = torch.cuda.is_available()
    return Hardware(
        cpu=cpu_model(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        cpu_bf16=torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported(),
        gpu=torch.cuda.get_device_name(0) if cuda else None,
        gpu_bf16=cuda and torch.cuda.is_bf16_supported(including_emulation=False),
    )


def training_device(accelerator: str) -> str:
    """The device Lightning trains on for trainer.accelerator (auto: CUDA, else MPS, else the CPU)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return "mps"
    return "cpu"


@dataclass(frozen=True)
class Precision:
    value: str  # what the Trainer runs at
    rule: str  # why: the requested value, or what `auto` found
    warning: str | None = None


def resolve_precision(requested, device: str, bf16_units: bool, family: tuple[str, ...], proven) -> Precision:
    """The precision a run trains at. `family` names the model (its preset and _target_); `proven` lists the
    families shown equivalent in bf16 (either name counts)."""
    requested = PRECISION_NAMES.get(str(requested), str(requested))
    if requested != AUTO:
        warning = None
        if requested.startswith("bf16") and device == "cpu" and not bf16_units:
            warning = f"trainer.precision={requested} on a CPU without bf16 units: emulated, about 10x slower than fp32"
        return Precision(requested, f"trainer.precision={requested} asked for", warning)
    if not bf16_units:
        return Precision(FP32, f"auto: fp32: no bf16 units on {device}")
    if not set(family) & set(proven):
        return Precision(FP32, f"auto: fp32: bf16 not yet proven equivalent for {' / '.join(family)}")
    return Precision(BF16, f"auto: bf16: bf16 units on {device}, proven equivalent for {' / '.join(family)}")


def model_family(cfg: DictConfig, preset: str | None) -> tuple[str, ...]:
    """The names `precision_proven` may list a model by: its preset (bn, of model=bn) and its class (_target_)."""
    return tuple(name for name in (preset, cfg.model.get("_target_")) if name)


def run_precision(cfg: DictConfig, preset: str | None = None) -> Precision:
    """The precision the run of `cfg` trains at on this machine (`preset`: its model=... choice, if known)."""
    device = training_device(str(cfg.trainer.get("accelerator", "auto")))
    return resolve_precision(
        cfg.trainer.get("precision", FP32),
        device,
        detect_hardware().bf16_units(device),
        model_family(cfg, preset),
        cfg.get("precision_proven") or [],
    )


def describe(precision: Precision, hardware: Hardware) -> str:
    """The run's first log line: the precision, why, and the machine."""
    cpu = f"CPU {hardware.cpu} ({hardware.cpu_capability}, bf16 units: {'yes' if hardware.cpu_bf16 else 'no'})"
    gpu = f"GPU {hardware.gpu} (bf16 units: {'yes' if hardware.gpu_bf16 else 'no'})" if hardware.gpu else "no GPU"
    return f"precision {precision.value} ({precision.rule}); {cpu}; {gpu}"
