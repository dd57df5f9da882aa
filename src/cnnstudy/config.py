"""Composing the train config, and answering its mistakes in one line before Hydra starts.

Hydra reports a typo in an override over several lines (or with a traceback, for an output dir it
cannot create). `check_overrides` composes the config the way Hydra will, for every value of every
swept key, and turns the first mistake into one line on stderr and exit status 2.
HYDRA_FULL_ERROR=1, or any Hydra flag but -m and --config-dir, skips the check: Hydra's own report comes through.
"""

import os
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnstudy import checks
from cnnstudy.errors import UserError, fail
from cnnstudy.record import run_name


def find_conf_dir() -> Path:
    """The configs: cnnstudy/conf in an installed wheel (setup.py copies the checkout's conf/ there), else the
    checkout's top-level conf/ (an editable install, or src/ on the path)."""
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    return installed if installed.is_dir() else package.parents[1] / "conf"


CONF_DIR = find_conf_dir()


def register_arms(conf_dir: Path = CONF_DIR) -> None:
    """Each study's arms, declared in its experiment file under `arms:`, as the Hydra options `arm/<study>=<arm>`
    (ConfigStore entries, package _global_, which Hydra reads as it would files arm/<study>/<arm>.yaml): a
    study is one file, and its sweeps' overrides are the same strings its archived records carry."""
    store = ConfigStore.instance()
    for path in sorted((conf_dir / "experiment").glob("*.yaml")):
        for arm, node in (OmegaConf.load(path).get("arms") or {}).items():  # OmegaConf's YAML: 1e-3 is a number
            if node is not None and not OmegaConf.is_dict(node):
                fail(f"{path}: arm {arm!r} must be a mapping of what it sets, not {node!r}")
            store.store(group=f"arm/{path.stem}", name=arm, node=node or {}, package="_global_")


NOISE = ("Config search path", "provider=", "Set the environment", "See https", "full_key", "object_type")


def one_line(message: str) -> str:
    """Hydra's multi-line message as one line: an option list after 'xxx:' joined by commas."""
    parts, options = [], []
    for line in message.splitlines():
        line = re.sub(r"^In '[^']*': ", "", line.strip())  # the config Hydra composed: 'train', 'hydra/config'
        if not line or line.startswith(NOISE):
            continue
        if options or (parts and parts[-1].endswith(":")):
            options.append(line)
        else:
            parts.append(line.rstrip("."))
    text = "; ".join(parts)
    return f"{text} {', '.join(options)}" if options else text


def threads_per_job() -> int:
    """CPU threads for one job: the machine's cores split evenly between parallel jobs, so that
    jobs x threads <= cores (oversubscribed jobs slow each other down far more than they gain)."""
    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else {}
    n_jobs = launcher.get("n_jobs") or 1
    # the cores this process may use: a SLURM task's allocation, else the CPUs it is pinned to
    cores = int(os.environ.get("SLURM_CPUS_PER_TASK") or len(os.sched_getaffinity(0)))
    return max(1, cores // (cores if n_jobs < 0 else n_jobs))


def job_run_name() -> str:
    """The run's name in its loggers: its overrides (cnnstudy.record.run_name) but the logger choice, as a folder
    name, so that a run logged to TensorBoard and to CSV has the same name in both."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return run_name([o for o in overrides if not o.lstrip("+~").startswith("logger")])


def register_resolvers() -> None:
    """The resolvers conf/ uses (`${threads_per_job:}`, `${run_name:}`, and arithmetic for values an experiment
    derives from others: `lr: ${mul:0.01,${div:${data.batch_size},128}}`)."""
    OmegaConf.register_new_resolver("threads_per_job", threads_per_job, replace=True)
    OmegaConf.register_new_resolver("run_name", job_run_name, replace=True)
    OmegaConf.register_new_resolver("mul", lambda a, b: a * b, replace=True)
    OmegaConf.register_new_resolver("div", lambda a, b: a / b, replace=True)
    OmegaConf.register_new_resolver("int_div", lambda a, b: a // b, replace=True)  # a count: steps, batches


# At import: every process that composes a config (the CLI, a launcher's worker, a test) imports this module first.
register_resolvers()
register_arms()


def _variants(overrides, multirun: bool) -> list[list[str]]:
    """One override list per value of each swept key, the other swept keys at their first value."""
    fixed, swept = [], []
    for override in overrides:
        text = override.input_line
        if override.is_sweep_override():
            if not multirun:
                fail(f"'{text}' lists several values: add -m (--multirun) to sweep over them")
            key = override.get_key_element()
            try:
                values = [f"{key}={value}" for value in override.sweep_string_iterator()]
            except Exception:  # noqa: BLE001 - interval/range sweeps for Optuna have no value list
                continue
            swept.append(values)
        else:
            fixed.append(text)
    firsts = [values[0] for values in swept]
    variants = [fixed + firsts]
    for i, values in enumerate(swept):
        variants += [fixed + firsts[:i] + [value] + firsts[i + 1 :] for value in values[1:]]
    return variants


def _check_writable(overrides: list[str]) -> None:
    for text in overrides:
        key, _, value = text.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir"):
            folder = Path(value).expanduser().absolute()
            existing = next(p for p in (folder, *folder.parents) if p.exists())
            if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
                fail(f"{key}={value} cannot be written ({existing} is not a writable folder): choose another")


def _without_config_dir(argv: list[str]) -> tuple[list[str], list[str]]:
    """argv without Hydra's `--config-dir DIR` (`-cd DIR`, `--config-dir=DIR`), and the search path it adds."""
    rest, searchpath = [], []
    args = iter(argv)
    for arg in args:
        flag, equals, value = arg.partition("=")
        if flag not in ("--config-dir", "-cd"):
            rest.append(arg)
            continue
        folder = Path(value if equals else next(args, "")).expanduser().absolute()
        if not folder.is_dir():
            fail(f"--config-dir {folder} is not a folder")
        searchpath.append(f"file://{folder}")
    return rest, searchpath


def check_overrides(config_name: str, argv: list[str]) -> None:
    argv, searchpath = _without_config_dir(argv)
    flags = [a for a in argv if a.startswith("-") and a not in ("-m", "--multirun")]
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or flags:
        return  # Hydra's own flags (--cfg, --info, -cn, ...) are Hydra's to answer
    multirun = any(a in ("-m", "--multirun") for a in argv)
    args = [a for a in argv if not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        fail(one_line(str(e)))
    _check_writable([o.input_line for o in overrides])
    # Hydra's own choices and keys are composed too (a launcher or sweeper typo); the search path is added below
    ours = [o for o in overrides if o.get_key_element() != "hydra.searchpath"]
    for override in overrides:  # the user's config folders, in Hydra's order: --config-dir, then hydra.searchpath
        if override.get_key_element() == "hydra.searchpath":
            searchpath += list(override.value())
    # Hydra puts both after cnnstudy's conf/: a user's config of the same name as one of ours is not used.
    extra = [f"hydra.searchpath=[{','.join(repr(str(p)) for p in searchpath)}]"] if searchpath else []
    defaults_of = {}  # group choices -> their config without value overrides: composed once per choice set
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for variant in _variants(ours, multirun):
            try:
                cfg = compose(config_name, overrides=extra + variant, return_hydra_config=True)
                groups = set(cfg.hydra.runtime.choices)
                values = [o for o in variant if o.lstrip("+~").partition("=")[0] not in groups]
                choices = tuple(o for o in variant if o not in values)
                if values and choices not in defaults_of:
                    defaults_of[choices] = compose(config_name, overrides=extra + list(choices))
                defaults = defaults_of.get(choices)
            except (HydraException, OmegaConfBaseException) as e:
                cause = f"; {e.__cause__}" if e.__cause__ is not None else ""
                fail(one_line(f"{e}{cause}"))
            _check_values(cfg, defaults, values)


def _check_values(cfg, defaults, overrides: list[str]) -> None:
    """Values of the wrong kind (a word where the default is a number, say), answered before anything is
    built: torch and Lightning would take many of them and fail, or do something else, once training runs.
    The trainer's keys are Lightning's to check: several take a number or a word (devices=auto)."""
    for override in overrides:
        key = override.partition("=")[0]
        # checks.config answers the keys it knows with their range ("optim.lr='fast' must be a positive number")
        if override.startswith(("+", "~")) or key.startswith("trainer.") or key in checks.CONFIG_KEYS:
            continue
        default = OmegaConf.select(defaults, key, throw_on_resolution_failure=False)
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if isinstance(default, bool) and not isinstance(value, bool):
            fail(f"{key}={value!r} must be true or false")
        if checks.is_number(default) and not checks.is_number(value):
            fail(f"{key}={value!r} must be a number (default {default})")
    try:
        checks.config(cfg)
    except UserError as e:
        fail(str(e))
    from cnnstudy.callbacks import EPOCH_KEYS  # what Classifier logs per epoch; imports Lightning: only here

    if OmegaConf.select(cfg, "require_bf16_units", default=False):
        check_bf16_units(str(OmegaConf.select(cfg, "trainer.accelerator", default="auto")))
    monitor = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor", default=None)
    if monitor is not None and monitor not in EPOCH_KEYS:
        # Lightning would find out at the end of the first epoch, and without a best checkpoint test the last one
        metrics = ", ".join(EPOCH_KEYS)
        fail(f"callbacks.model_checkpoint.monitor={monitor!r} is not a metric the run logs: use one of {metrics}")


def check_bf16_units(accelerator: str) -> None:
    """A study about bf16 (experiment=precision sets require_bf16_units) stops where bf16 would be emulated:
    emulated bf16 is about 10x slower and says nothing about the speed bf16 units give."""
    from cnnstudy.hardware import detect_hardware, training_device  # imports torch: only here

    device, hardware = training_device(accelerator), detect_hardware()
    if not hardware.bf16_units(device):
        fail(
            f"require_bf16_units=true: this {device} ({hardware.cpu}, {hardware.cpu_capability}) has no bf16 units; "
            "run this study on a machine with AVX512-BF16, AMX or a bf16 GPU (docs/performance.md, Precision)"
        )


def compose_train(overrides: list[str], return_hydra_config: bool = False):
    """The train config with `overrides`, as `python -m cnnstudy.train` composes it (mistakes in one line)."""
    check_overrides("train", overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=return_hydra_config)
