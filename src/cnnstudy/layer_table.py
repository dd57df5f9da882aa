"""Layer table of a model: `python -m cnnstudy.layer_table model=<name> data=<name> [overrides]`.

For every leaf module (conv, BN, activation, pool, dropout, flatten, linear), in execution order:
name, type, output shape, trainable parameters, receptive field and jump (cumulative stride), then
the total trainable parameters. Everything is measured on the real module with forward hooks on a
dummy batch of one image (eval mode, no grad, so BN running stats are untouched).

Receptive field r and jump j start at 1; each Conv2d/MaxPool2d/AvgPool2d adds (k_eff - 1) * j to r,
with k_eff = dilation * (k - 1) + 1, then multiplies j by its stride. Adaptive (global) pooling and
Linear layers see the whole image: "global". Residual adds leave the field as it is. The running
(r, j) follows execution order, which is right for the chain-like models here, not for branches
that downsample on the side.

A module called more than once (`model=net_res_deep model.tied_blocks=true`) gets a row per call,
named after each place it is registered; its parameters are counted at the first call only, so the
column sums to `count_parameters(model)`.

session5 on MNIST: receptive fields after Conv1..Conv3, pool, Conv4, Conv5, pool, Conv6, Conv7 are
3, 5, 7, 8, 8, 12, 14, 14, 22 (sizes 28, 28, 28, 14, 14, 14, 7, 7, 5). The source's own table says
18 for Conv7: it kept the jump at 2 after the second pool; it is 4 there, so 14 + 2 * 4 = 22.

The CLI composes the config with Hydra's compose API instead of `@hydra.main`, so it writes no
output dir, log or `.hydra/` folder.
"""

import sys
from collections import defaultdict

import torch
from torch import nn

from cnnstudy.builders import build_model
from cnnstudy.config import compose_train
from cnnstudy.errors import exit_on_user_error

WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
GLOBAL = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear)


def _first(value) -> int:
    return value[0] if isinstance(value, tuple) else value


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """One row per leaf-module call, in execution order, on a batch of one `input_shape` (C, H, W) input."""
    names = defaultdict(list)  # a shared module is registered under several names
    for name, module in model.named_modules(remove_duplicate=False):
        if not list(module.children()):
            names[module].append(name)
    rows, seen, calls = [], set(), defaultdict(int)
    state = {"rf": 1, "jump": 1}

    def hook(module, _inputs, output):
        call = calls[module]
        calls[module] += 1
        params = sum(p.numel() for p in module.parameters() if p.requires_grad and id(p) not in seen)
        seen.update(map(id, module.parameters()))
        if isinstance(module, GLOBAL):
            state.update(rf="global", jump=None)
        elif isinstance(module, WINDOWED) and state["rf"] != "global":
            kernel = _first(getattr(module, "dilation", 1)) * (_first(module.kernel_size) - 1) + 1
            state["rf"] += (kernel - 1) * state["jump"]
            state["jump"] *= _first(module.stride)
        rows.append(
            {
                "name": names[module][min(call, len(names[module]) - 1)],
                "type": type(module).__name__,
                "out_shape": tuple(output.shape[1:]),
                "params": params,
                "shared": call > 0 and any(p.requires_grad for p in module.parameters()),
                **state,
            }
        )

    handles = [module.register_forward_hook(hook) for module in names]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else "cpu"
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return rows


def _cells(row: dict) -> list[str]:
    params = "shared" if row["shared"] else f"{row['params']:,}"
    jump = "-" if row["jump"] is None else str(row["jump"])
    return [row["name"], row["type"], "x".join(map(str, row["out_shape"])), params, str(row["rf"]), jump]


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """Aligned plain-text columns (or a markdown table), then the total trainable parameters."""
    header = ["layer", "type", "output", "params", "rf", "jump"]
    table = [header] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {3, 4, 5}  # numbers right-aligned

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |" if markdown else "  ".join(padded).rstrip()

    rule = ["-" * w for w in widths]
    if markdown:
        rule = [r[:-1] + ":" if i in right else r for i, r in enumerate(rule)]
    total = f"total trainable params: {sum(row['params'] for row in rows):,}"
    return "\n".join([line(header), line(rule), *map(line, table[1:]), "", total])


def main(argv: list[str] | None = None) -> None:
    overrides = sys.argv[1:] if argv is None else list(argv)
    if any(arg in ("-h", "--help") for arg in overrides):
        print("usage: python -m cnnstudy.layer_table [model=<name>] [data=<name>] [key=value ...]")
        return
    cfg = compose_train(overrides, return_hydra_config=True)
    with exit_on_user_error():
        model = build_model(cfg)
    choices = cfg.hydra.runtime.choices
    shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    print(f"model={choices.model} data={choices.data} input={'x'.join(map(str, shape))}")
    changed = [o for o in overrides if not o.startswith(("model=", "data="))]
    if changed:
        print("overrides: " + " ".join(changed))
    print(format_table(layer_table(model, shape)))


if __name__ == "__main__":
    main()
