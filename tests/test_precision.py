"""trainer.precision=auto: the rule with the hardware's answer given, this machine's answer, the run identity of
precisions, and one real MNIST run under auto."""

import itertools
import json
import re
from pathlib import Path

import pytest
import torch

from cnnstudy.config import compose_train
from cnnstudy.hardware import BF16, FP32, cpu_model, detect_hardware, model_family, resolve_precision, run_precision
from cnnstudy.record import same_run, setup_identity

from conftest import ROOT, run_cli

FAMILY = ("bn", "cnnstudy.models.ConvNet")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("bf16_units", [True, False])
@pytest.mark.parametrize("proven", [[], ["bn"], ["cnnstudy.models.ConvNet"], ["nobn"]])
def test_auto_is_bf16_only_with_bf16_units_and_a_proven_family(device, bf16_units, proven):
    precision = resolve_precision("auto", device, bf16_units, FAMILY, proven)
    family_proven = proven in (["bn"], ["cnnstudy.models.ConvNet"])
    assert precision.value == (BF16 if bf16_units and family_proven else FP32)
    assert precision.warning is None
    if not bf16_units:
        assert precision.rule == f"auto: fp32: no bf16 units on {device}"
    elif not family_proven:
        assert precision.rule == "auto: fp32: bf16 not yet proven equivalent for bn / cnnstudy.models.ConvNet"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("bf16_units", [True, False])
def test_an_explicit_precision_always_wins(device, bf16_units):
    assert resolve_precision("32-true", device, bf16_units, FAMILY, ["bn"]).value == FP32
    assert resolve_precision(32, device, bf16_units, FAMILY, ["bn"]).value == FP32  # Lightning's old name
    bf16 = resolve_precision("bf16", device, bf16_units, FAMILY, [])
    assert bf16.value == BF16 and bf16.rule == "trainer.precision=bf16-mixed asked for"
    emulated = device == "cpu" and not bf16_units
    assert (bf16.warning is not None) == emulated
    if emulated:
        assert "emulated" in bf16.warning and "10x slower" in bf16.warning


def cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="the CPU's flags are read from /proc/cpuinfo")
def test_this_cpus_bf16_units_are_what_its_flags_say():
    flags = cpuinfo_flags()
    hardware = detect_hardware()
    assert hardware.cpu_bf16 == bool({"avx512_bf16", "amx_bf16"} & flags), flags & {"avx512_bf16", "amx_bf16"}
    assert hardware.cpu == cpu_model() and hardware.cpu
    assert hardware.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert (hardware.gpu is None) == (not torch.cuda.is_available())


def test_the_default_is_auto_and_resolves_on_this_machine(cfg_for):
    cfg = cfg_for("trainer.accelerator=cpu")
    assert cfg.trainer.precision == "auto" and list(cfg.precision_proven) == ["bn", "nobn", "cifar_cnn"]
    units = detect_hardware().cpu_bf16
    unproven = run_precision(cfg, "session5")
    assert unproven.value == FP32
    assert unproven.rule.startswith("auto: fp32: " + ("bf16 not yet proven" if units else "no bf16 units"))
    proven = run_precision(cfg, "bn")
    assert proven.value == (BF16 if units else FP32)
    assert run_precision(cfg_for("trainer.accelerator=cpu", "precision_proven=[]"), "bn").value == FP32
    assert run_precision(cfg_for("trainer.accelerator=cpu", "trainer.precision=bf16-mixed"), "bn").value == BF16


def test_precision_is_part_of_a_runs_identity_a_missing_one_being_32_true():
    def config(**trainer) -> dict:
        return {"seed": 0, "optim": {"lr": 0.001}, "trainer": {"max_epochs": 2, **trainer}}

    archived, lightning_32 = config(precision="32-true"), config(precision=32)
    older = config()  # before trainer.precision existed: Lightning's default, 32-true
    new = {**config(precision="32-true"), "precision_proven": ["nobn"]}
    bf16 = config(precision="bf16-mixed")
    assert same_run(archived, new) and same_run(older, new) and same_run(new, older) and same_run(lightning_32, new)
    assert setup_identity(older) == setup_identity(new) == setup_identity(archived) == setup_identity(lightning_32)
    assert not same_run(archived, bf16) and not same_run(older, bf16)
    assert setup_identity(bf16) != setup_identity(new)


@pytest.mark.subprocess
def test_cfg_job_shows_auto():
    result = run_cli("cnnstudy.train", "--cfg", "job")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "  precision: auto\n" in result.stdout and "precision_proven:\n- bn\n- nobn\n- cifar_cnn\n" in result.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_real_mnist_run_under_auto_records_its_precision_and_hardware(tmp_path, data_root):
    result = run_cli(
        "cnnstudy.train",
        f"hydra.run.dir={tmp_path}",
        f"data.root={data_root}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=100",  # 10,000 training images
        "trainer.limit_val_batches=10",
        "trainer.limit_test_batches=20",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_acc"] >= 0.95, metrics["test_acc"]
    hardware = metrics["provenance"]["hardware"]
    resolved = BF16 if hardware["cpu_bf16"] else FP32  # model=bn is a proven family
    assert metrics["precision"] == metrics["config"]["trainer"]["precision"] == resolved
    assert hardware["cpu"] == cpu_model() and hardware["cpu_bf16"] == detect_hardware().cpu_bf16
    assert hardware["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert hardware["gpu"] == detect_hardware().gpu
    first = next(line for line in (tmp_path / "train.log").read_text().splitlines() if "[cnnstudy]" in line)
    units = "yes" if hardware["cpu_bf16"] else "no"
    assert f"] - precision {resolved} ({metrics['provenance']['precision_rule']}); " in first
    assert f"; CPU {hardware['cpu']} ({hardware['cpu_capability']}, bf16 units: {units}); " in first
    rule = "auto: bf16: " if hardware["cpu_bf16"] else "auto: fp32: "
    assert metrics["provenance"]["precision_rule"].startswith(rule)


@pytest.mark.parametrize("units", [True, False])
def test_the_precision_study_stops_in_one_line_without_bf16_units(monkeypatch, capsys, units):
    """experiment=precision needs bf16 units; the hardware's answer is injected, both ways."""
    import cnnstudy.hardware as hardware
    from cnnstudy.config import check_overrides

    real = detect_hardware()
    fake = hardware.Hardware(real.cpu, "AVX2", cpu_bf16=units, gpu=None, gpu_bf16=False)
    monkeypatch.setattr(hardware, "detect_hardware", lambda: fake)
    argv = ["-m", "experiment=precision", "trainer.accelerator=cpu"]
    if units:
        check_overrides("train", argv)  # composes every job of the sweep and returns
        return
    with pytest.raises(SystemExit) as stopped:
        check_overrides("train", argv)
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: require_bf16_units=true: this cpu (") and "has no bf16 units" in line


def studies_in_bf16() -> dict[str, set[str]]:
    """Each study's jobs under `auto` on a machine with bf16 units: the precisions they resolve to. Only the sweep's
    model-choosing overrides (model=, arm/<study>=) and trainer.precision are expanded: the rest do not change
    what `auto` resolves to."""
    resolved = {}
    for experiment in sorted(p.stem for p in (ROOT / "conf/experiment").glob("*.yaml")):
        cfg = compose_train([f"experiment={experiment}"], return_hydra_config=True)
        params = {
            k: str(v).split(",")
            for k, v in cfg.hydra.sweeper.params.items()
            if k in ("model", f"arm/{experiment}", "trainer.precision")
        }
        precisions = set()
        for values in itertools.product(*params.values()) if params else [()]:
            chosen = [f"{key}={value}" for key, value in zip(params, values, strict=True)]
            job = compose_train([f"experiment={experiment}", *chosen], return_hydra_config=True)
            family = model_family(job, job.hydra.runtime.choices.get("model"))
            precision = resolve_precision(job.trainer.precision, "cpu", True, family, job.precision_proven)
            precisions.add(precision.value)
        resolved[experiment] = precisions
    return resolved


def test_the_performance_page_names_the_studies_auto_trains_in_bf16(monkeypatch):
    """docs/performance.md's table of studies under `auto` is what the resolution rule gives for each study's jobs
    on a machine with bf16 units (every study resolves to fp32 on one without). The machine's answer is injected:
    experiment=precision refuses to compose on a CPU without bf16 units."""
    import cnnstudy.hardware as hardware

    real = detect_hardware()
    with_units = hardware.Hardware(real.cpu, "AVX512", cpu_bf16=True, gpu=None, gpu_bf16=False)
    monkeypatch.setattr(hardware, "detect_hardware", lambda: with_units)
    page = (ROOT / "docs/performance.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", page, re.M))
    expected = {study: " and ".join(sorted(p)) for study, p in studies_in_bf16().items()}
    assert rows == expected
    assert expected["bn_vs_nobn"] == "bf16-mixed" and expected["init_sensitivity"] == "32-true"
