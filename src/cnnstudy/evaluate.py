"""Re-test a checkpoint: `python -m cnnstudy.evaluate ckpt_path=<file> [data.root=<dir>] [data=<name>]`.

The model and data are rebuilt from the config stored in the checkpoint; `key=value` overrides
change it (e.g. `data.root=...`). `data=<name>` / `model=<name>` pick another preset, to test a
checkpoint elsewhere: a checkpoint that does not fit it is refused in one line.
"""

import sys

from omegaconf import OmegaConf

from cnnstudy.builders import build, build_module, configure_process
from cnnstudy.checkpoints import CONFIG_KEY, load_checkpoint
from cnnstudy.config import compose_train
from cnnstudy.errors import UserError, exit_on_user_error, fail
from cnnstudy.hardware import run_precision

GROUPS = ("data", "model", "optim", "scheduler", "trainer", "callbacks")


def evaluation_config(stored: dict, choices: dict, overrides: list[str]):
    """The stored config with `overrides` applied; a group override recomposes that group."""
    regroup = [o for o in overrides if o.partition("=")[0] in GROUPS]
    if not regroup:
        return OmegaConf.merge(OmegaConf.create(stored), OmegaConf.from_dotlist(overrides))
    base = [f"{group}={choices[group]}" for group in GROUPS if group in choices]
    return compose_train(base + overrides)


def load_module(ckpt_path: str, overrides: list[str]):
    """(config, Classifier with the checkpoint's weights), or a UserError if they do not fit."""
    checkpoint = load_checkpoint(ckpt_path)
    info = checkpoint[CONFIG_KEY]
    cfg = evaluation_config(info["config"], info.get("choices", {}), overrides)
    module = build_module(cfg)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError:
        trained = " ".join(f"{g}={info['choices'][g]}" for g in ("model", "data") if g in info.get("choices", {}))
        asked = " ".join(o for o in overrides if o.partition("=")[0] in GROUPS)
        raise UserError(f"{ckpt_path} was trained as {trained}: it does not fit {asked}") from None
    return cfg, module


def evaluate(ckpt_path: str, overrides: list[str]) -> dict:
    cfg, module = load_module(ckpt_path, overrides)
    configure_process(cfg)
    datamodule = build("data", cfg.data)
    datamodule.setup("test")  # missing or bad data answers before the Trainer starts
    precision = run_precision(cfg).value  # the checkpoint's; trainer.precision=auto resolved as train does
    trainer = build("trainer", cfg.trainer, precision=precision, logger=False, enable_checkpointing=False)
    (result,) = trainer.test(module, datamodule=datamodule, verbose=False)
    return result


def main(argv: list[str]) -> None:
    args = dict(a.partition("=")[::2] for a in argv)
    if "ckpt_path" not in args:
        fail("usage: python -m cnnstudy.evaluate ckpt_path=<file> [key=value ...]")
    overrides = [a for a in argv if not a.startswith("ckpt_path=")]
    with exit_on_user_error():
        result = evaluate(args["ckpt_path"], overrides)
    print(f"test_acc={result['test_acc']} test_loss={result['test_loss']}")


if __name__ == "__main__":
    main(sys.argv[1:])
