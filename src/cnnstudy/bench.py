"""Training throughput: `python -m cnnstudy.bench [--quick] [--json]` (or `make bench`).

For each case (model, data, batch size), in ONE process with rounds interleaved so that the
machine's noise hits every path alike, the median images/s of:
  notebook  torchvision dataset, per-sample ToTensor + Normalize, DataLoader(shuffle=True), a
            hand-written loop (zero_grad, forward, loss, backward, step)  -- the course notebooks;
  compute   the same model, memory format and threads, forward+backward+step on batches already
            in memory: no data pipeline, no framework  -- the bound;
  cnnstudy  the real datamodule + Classifier + Trainer, as `cnnstudy.train` runs them, timed from
            the first batch after warm-up to the end of the epoch. Validation is off (it is not
            training throughput) and so is checkpointing (once per epoch, not per batch).
Ratios: cnnstudy/compute (overhead of framework and data) and cnnstudy/notebook (speed-up).
"""

import argparse
import json
import resource
import statistics
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cnnstudy.cli import compose_train
from cnnstudy.data.sources import default_root, load
from cnnstudy.train import build_module

CASES = [("bn", "mnist", 100), ("nobn", "mnist", 100), ("cifar_cnn", "cifar10", 100), ("session5", "mnist", 128)]


def config(model: str, data: str, batch_size: int, channels_last: bool):
    return compose_train(
        [
            f"model={model}",
            f"data={data}",
            f"data.batch_size={batch_size}",
            f"module.channels_last={channels_last}",
            "callbacks.model_checkpoint.dirpath=null",
        ],
    )


class PilImages(Dataset):
    """CIFAR-10 the torchvision way: a PIL image per sample through the transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images.permute(0, 2, 3, 1).numpy(), labels.tolist(), transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def notebook_loader(cfg) -> DataLoader:
    transform = torchvision.transforms.Compose(
        [torchvision.transforms.ToTensor(), torchvision.transforms.Normalize(cfg.data.mean, cfg.data.std)]
    )
    if cfg.data.name == "mnist":
        dataset = torchvision.datasets.MNIST(cfg.data.root, train=True, download=False, transform=transform)
    else:
        dataset = PilImages(*load(cfg.data.name, cfg.data.root, True), transform)
    return DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True)


def timed_loop(module, batches, n_batches: int, warmup: int) -> float:
    """Images/s of a hand-written training loop over `batches` (an iterator of (x, y))."""
    model = module.model.train()
    optimizer = module.configure_optimizers()
    seen, start = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            start, seen = time.perf_counter(), 0
        if module.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        seen += len(y)
        if i + 1 == warmup + n_batches:
            break
    return seen / (time.perf_counter() - start)


class Stopwatch(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.seen = warmup, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start, self.seen = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seen += len(batch[1])

    def on_train_epoch_end(self, trainer, module):
        self.ips = self.seen / (time.perf_counter() - self.start)


def cnnstudy_ips(cfg, n_batches: int, warmup: int) -> float:
    datamodule, module = instantiate(cfg.data), build_module(cfg)
    stopwatch = Stopwatch(warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = instantiate(
            cfg.trainer,
            max_epochs=1,
            limit_train_batches=warmup + n_batches,
            limit_val_batches=0,
            enable_checkpointing=False,
            enable_progress_bar=True,
            logger=L.pytorch.loggers.TensorBoardLogger(tmp),
            callbacks=[stopwatch, instantiate(cfg.callbacks.progress_bar)],
        )
        trainer.fit(module, datamodule=datamodule)
    return stopwatch.ips


def compute_ips(cfg, n_batches: int, warmup: int) -> float:
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    images, labels = datamodule.train_set.images, datamodule.train_set.labels
    b = cfg.data.batch_size
    batches = [
        (datamodule.normalize(images[i : i + b]), labels[i : i + b]) for i in range(0, (warmup + n_batches) * b, b)
    ]
    return timed_loop(build_module(cfg), iter(batches), n_batches, warmup)


def notebook_ips(cfg, n_batches: int, warmup: int) -> float:
    return timed_loop(build_module(cfg), iter(notebook_loader(cfg)), n_batches, warmup)


def run_case(model, data, batch_size, channels_last, rounds, n_batches, warmup) -> dict:
    cfg = config(model, data, batch_size, channels_last)
    paths = {"notebook": notebook_ips, "compute": compute_ips, "cnnstudy": cnnstudy_ips}
    samples = {name: [] for name in paths}
    for _ in range(rounds):  # interleaved: each round measures every path once
        for name, measure in paths.items():
            torch.manual_seed(0)
            samples[name].append(measure(cfg, n_batches, warmup))
    return {
        "model": model,
        "data": data,
        "batch_size": batch_size,
        "channels_last": channels_last,
        **{f"{name}_ips": round(statistics.median(values), 1) for name, values in samples.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def memory_formats(rounds: int, n_batches: int, warmup: int) -> list[dict]:
    """Compute-bound images/s of each model family in NCHW and channels_last, interleaved."""
    rows = []
    for model, data, batch_size in CASES:
        samples = {False: [], True: []}
        for _ in range(rounds):
            for channels_last in samples:
                cfg = config(model, data, batch_size, channels_last)
                samples[channels_last].append(compute_ips(cfg, n_batches, warmup))
        nchw, cl = (statistics.median(samples[k]) for k in (False, True))
        rows.append({"model": model, "nchw_ips": round(nchw, 1), "channels_last_ips": round(cl, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--formats", action="store_true", help="also compare NCHW and channels_last")
    args = parser.parse_args()
    rounds, n_batches, warmup = (1, 8, 2) if args.quick else (3, 30, 5)
    cases = CASES[:2] if args.quick else CASES
    results = []
    for model, data, batch_size in cases:
        cfg = config(model, data, batch_size, channels_last=False)
        channels_last = bool(cfg.module.channels_last)
        results.append(run_case(model, data, batch_size, channels_last, rounds, n_batches, warmup))
    formats = memory_formats(rounds, n_batches, warmup) if args.formats else []
    if args.json:
        print(json.dumps({"cases": results, "memory_formats": formats, "threads": torch.get_num_threads()}))
        return
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, data {default_root()}, "
        f"median of {rounds} interleaved rounds x {n_batches} batches (after {warmup} warm-up)"
    )
    print(
        f"{'model':10} {'data':8} {'batch':>5} {'notebook':>9} {'compute':>9} {'cnnstudy':>9} "
        f"{'c/b':>5} {'c/a':>5} {'peak MB':>8}"
    )
    for r in results:
        cb, ca = r["cnnstudy_ips"] / r["compute_ips"], r["cnnstudy_ips"] / r["notebook_ips"]
        print(
            f"{r['model']:10} {r['data']:8} {r['batch_size']:5d} {r['notebook_ips']:9.0f} {r['compute_ips']:9.0f} "
            f"{r['cnnstudy_ips']:9.0f} {cb:5.2f} {ca:5.2f} {r['peak_rss_mb']:8.0f}"
        )
    for r in formats:
        print(
            f"{r['model']:10} compute NCHW {r['nchw_ips']:7.0f}  channels_last {r['channels_last_ips']:7.0f}  "
            f"ratio {r['channels_last_ips'] / r['nchw_ips']:.2f}"
        )


if __name__ == "__main__":
    main()
