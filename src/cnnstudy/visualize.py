"""Pictures of convolution: `python -m cnnstudy.visualize [data=mnist] [index=0] [ckpt_path=<file>] [out=<dir>]`.

Writes into `out` (default `visualize/`):
- `kernels.png`: test image `index` of `data` and what two hand-set 3x3 kernels make of it — a box
  blur and a vertical-edge detector — as in the convolution lesson;
- with `ckpt_path`: `filters.png`, `input.png` and one `<i>_<Block>.png` per conv stage: the trained
  model's first-layer filters and feature maps for that image (the same grids the `FeatureMaps`
  probe logs to TensorBoard).
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from matplotlib.figure import Figure
from torchvision.utils import save_image

from cnnstudy.data.sources import default_root, load
from cnnstudy.errors import exit_on_user_error, fail
from cnnstudy.probes import feature_map_grids

KERNELS = {
    "box blur": torch.full((3, 3), 1 / 9),
    "vertical edges": torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]),
}


def apply_kernels(image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each hand-set kernel convolved with the grey version of `image` (C, H, W in [0, 1])."""
    grey = image.mean(0, keepdim=True).unsqueeze(0)
    return {name: F.conv2d(grey, kernel.view(1, 1, 3, 3), padding=1)[0, 0] for name, kernel in KERNELS.items()}


def plot_kernels(image: torch.Tensor, path: Path) -> None:
    responses = apply_kernels(image)
    fig = Figure(figsize=(3 * (1 + len(responses)), 3.4), layout="constrained")
    axes = fig.subplots(1, 1 + len(responses))
    axes[0].imshow(image.permute(1, 2, 0).squeeze(-1), cmap="gray")
    axes[0].set_title("image")
    for ax, (name, response) in zip(axes[1:], responses.items(), strict=True):
        ax.imshow(response, cmap="gray" if name == "box blur" else "coolwarm")
        ax.set_title(name)
    for ax in axes:
        ax.axis("off")
    fig.savefig(path, dpi=100)


def visualize(data: str, index: int, ckpt_path: str | None, out: Path, root: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    raw = load(data, root, False)[0][index : index + 1]
    image = raw[0].float() / 255
    plot_kernels(image, out / "kernels.png")
    written = [out / "kernels.png"]
    if ckpt_path:
        from cnnstudy.evaluate import load_module

        cfg, module = load_module(ckpt_path, [f"data.root={root}"])
        module.eval()
        with torch.no_grad():
            grids = feature_map_grids(module.model, instantiate(cfg.data).normalize(raw))
        for name, grid in grids.items():
            save_image(grid, out / f"{name}.png")
            written.append(out / f"{name}.png")
    return written


def main(argv: list[str]) -> None:
    args = dict(a.partition("=")[::2] for a in argv)
    unknown = set(args) - {"data", "index", "ckpt_path", "out", "data.root"}
    if unknown:
        fail(f"unknown argument(s) {', '.join(sorted(unknown))}: use data=, index=, ckpt_path=, out=, data.root=")
    index, ckpt_path = args.get("index", "0"), args.get("ckpt_path")
    if not index.isdigit():
        fail(f"index={index!r} must be a whole number >= 0")
    if ckpt_path and not Path(ckpt_path).is_file():  # before anything is written
        fail(f"checkpoint {ckpt_path} does not exist")
    with exit_on_user_error():
        written = visualize(
            args.get("data", "mnist"),
            int(index),
            ckpt_path,
            Path(args.get("out", "visualize")),
            args.get("data.root", default_root()),
        )
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    main(sys.argv[1:])
