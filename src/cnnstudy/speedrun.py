"""Time to 99 % on MNIST: `python -m cnnstudy.speedrun [--seeds 3] [--ablation] [--json]`.

In one measurement, on one machine:
  speedrun  `python -m cnnstudy.train experiment=speedrun seed=S`, one process per seed, timed from the
            command's start to its exit (after metrics.json is written): imports, data, training, the
            end-of-run test, everything a user waits for;
  default   `python -m cnnstudy.train` (model=bn, Adam 1e-3, 10 epochs), timed the same way;
  course    the course notebooks' loop (torchvision dataset, per-sample transforms, DataLoader, a
            hand-written loop; the bench's notebook path) on the default model, testing after every
            epoch as the notebooks did and stopping at the first epoch with test accuracy >= 99 %
            (at most 10). It runs inside this process, so its time leaves out Python's start-up.
`--ablation` also runs the speedrun with one of its choices undone at a time (ABLATIONS), in rounds (per seed:
the speedrun, then each variant), so each choice's effect on time (a ratio within the round) and accuracy is
measured beside the others.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnnstudy.builders import build_module
from cnnstudy.config import compose_train
from cnnstudy.data.notebook import notebook_loader, notebook_step
from cnnstudy.data.sources import default_root, load
from cnnstudy.errors import exit_on_user_error, fail

TARGET = 0.99
# One choice of experiment=speedrun undone per line: the overrides that restore the default.
ABLATIONS = {
    "the default bn net (32, M, 64, M + FC 128)": ["model.features=[32,M,64,M]", "model.hidden=[128]"],
    "constant lr 1e-3 (no one-cycle)": ["scheduler=none", "optim.lr=1e-3"],
    "one-cycle at max lr 1e-3": ["optim.lr=1e-3"],
    "batch 100": ["data.batch_size=100"],
    "NCHW memory format": ["module.channels_last=false"],
    "no BN": ["model.norm=none"],
}


def timed_train(overrides: list[str]) -> dict:
    """Wall seconds and results of one `python -m cnnstudy.train` command, in a temporary run dir."""
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, "-m", "cnnstudy.train", *overrides, f"hydra.run.dir={run_dir}"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[2:])} failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
        record = json.loads((Path(run_dir) / "metrics.json").read_text())
    return {"wall_s": wall, "test_acc": record.get("test_acc"), "status": record["status"], "steps": record["steps"]}


def test_accuracy(model, images, labels, mean, std, channels_last: bool) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(labels), 1000):
            x = (images[i : i + 1000].float() / 255 - mean) / std
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            correct += (model(x).argmax(1) == labels[i : i + 1000]).sum().item()
    model.train()
    return correct / len(labels)


def course_loop(max_epochs: int = 10) -> dict:
    """The notebooks' loop on the default config: seconds until test accuracy >= TARGET after an epoch."""
    cfg = compose_train([])
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    module = build_module(cfg)
    model, optimizer = module.model.train(), module.configure_optimizers()
    images, labels = load("mnist", cfg.data.root, train=False)
    mean = torch.tensor(cfg.data.mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, -1, 1, 1)
    epochs = []
    for _ in range(max_epochs):
        for x, y in notebook_loader(cfg):
            notebook_step(model, optimizer, x, y, module.channels_last)
        epochs.append(test_accuracy(model, images, labels, mean, std, module.channels_last))
        if epochs[-1] >= TARGET:
            break
    return {"wall_s": time.perf_counter() - started, "test_acc": epochs[-1], "epochs": len(epochs)}


def figures_of(runs: list[dict], base: list[dict] | None = None) -> dict:
    """Median and worst wall time and the test accuracies; with `base` (the speedrun's runs of the same rounds),
    each round's wall-time ratio to it."""
    accs = [r["test_acc"] for r in runs if r["test_acc"] is not None]
    ratios = [r["wall_s"] / b["wall_s"] for r, b in zip(runs, base, strict=True)] if base else []
    return {
        "runs": runs,
        "wall_ratio": sorted(ratios),
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "wall_s_max": max(r["wall_s"] for r in runs),
        "test_acc_mean": statistics.mean(accs) if accs else None,
        "test_acc_min": min(accs) if accs else None,
    }


def show(name: str, figures: dict) -> str:
    acc, worst = figures["test_acc_mean"], figures["test_acc_min"]
    accuracy = "no completed run" if acc is None else f"test {100 * acc:.2f} % mean, {100 * worst:.2f} min"
    return f"{name:46} {figures['wall_s_median']:6.1f} s median, {figures['wall_s_max']:6.1f} max   {accuracy}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the speedrun (default 3)")
    parser.add_argument("--ablation", action="store_true", help="also undo each speedrun choice in turn")
    parser.add_argument("--no-reference", action="store_true", help="skip the default run and the course loop")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.error = fail
    args = parser.parse_args()
    with exit_on_user_error():
        load("mnist", default_root(), train=True)
    variants = {"speedrun": [], **(ABLATIONS if args.ablation else {})}
    runs = {name: [] for name in variants}
    for seed in range(args.seeds):  # round by round, so that the machine's drift hits every variant alike
        for name, overrides in variants.items():
            runs[name].append(timed_train(["experiment=speedrun", *overrides, f"seed={seed}"]))
    results = {"speedrun": figures_of(runs.pop("speedrun"))}
    if not args.no_reference:
        results["default run (model=bn, 10 epochs)"] = figures_of([timed_train([])])
        results["course loop (default model, to 99 % or 10 epochs)"] = figures_of([course_loop()])
    for name, variant_runs in runs.items():
        results[f"speedrun with {name}"] = figures_of(variant_runs, base=results["speedrun"]["runs"])
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "data": default_root(), "results": results}))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; wall from command start to exit")
    for name, figures in results.items():
        print(show(name, figures))
        if ratios := figures["wall_ratio"]:
            print(
                f"{'':46} wall / speedrun's in the same round: {statistics.median(ratios):.2f} "
                f"(range {ratios[0]:.2f}-{ratios[-1]:.2f})"
            )
        if len(figures["runs"]) == 1 and "epochs" in figures["runs"][0]:
            print(f"{'':46} {figures['runs'][0]['epochs']} epochs")


if __name__ == "__main__":
    main()
