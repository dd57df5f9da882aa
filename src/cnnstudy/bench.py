"""Training throughput and per-job overhead: `python -m cnnstudy.bench [--quick] [--json]` (make bench).

Throughput: for each case (model, data, batch size), in ONE process, the images/s of
  notebook  torchvision dataset, per-sample ToTensor + Normalize, DataLoader(shuffle=True), a
            hand-written loop (zero_grad, forward, loss, backward, step)  -- the course notebooks;
  compute   the same model, memory format and threads, forward+backward+step on batches already
            in memory: no data pipeline, no framework  -- the bound;
  cnnstudy  the real datamodule + Classifier + Trainer, as `cnnstudy.train` runs them, timed from
            the first batch after warm-up to the end of the epoch. Validation is off (it is not
            training throughput) and so is checkpointing (once per epoch, not per batch).
compute and cnnstudy run in fp32 and in bf16-mixed (autocast to bfloat16, as Lightning's
`trainer.precision=bf16-mixed` does). Each round measures every path once, in alternating order
(a b c, c b a, ...), so that the machine's noise hits every path alike; a ratio (cnnstudy/compute,
cnnstudy/notebook, bf16 / fp32) is taken within each round and reported as the median with its
spread over the rounds.

Overhead: a real sweep (`python -m cnnstudy.train -m`, N jobs of a few training steps) against
the pure training time of the same steps (the compute path) and the pure forward time of the
job's validation and test splits: how much of a job's wall time is not training, and how much
of that is evaluation.
"""

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate

from cnnstudy.builders import build_module, configure_process, keep_freed_memory
from cnnstudy.config import compose_train
from cnnstudy.data.notebook import notebook_loader, notebook_step
from cnnstudy.data.sources import default_root, load
from cnnstudy.errors import exit_on_user_error, fail
from cnnstudy.hardware import cpu_model

CASES = [("bn", "mnist", 100), ("nobn", "mnist", 100), ("cifar_cnn", "cifar10", 100), ("session5", "mnist", 128)]
# A ratio's verdict: met when its lower quartile over the rounds reaches the target, not met when its
# upper quartile falls short, otherwise the spread straddles the target and the run cannot tell.
TARGETS = {"cnnstudy/compute": 0.90, "cnnstudy/notebook": 1.5}
# The precisions the compute and cnnstudy paths run in: the name of a path in bf16 ends in "_bf16".
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
OVERHEAD_TARGET = 0.15  # issue #21: a 100-step job's time outside training and evaluation


def cpu_features() -> dict:
    """The CPU and what of it torch uses: its widest vector instructions, and whether it has bf16 units
    (AVX512-BF16, AMX tiles): without them bf16 arithmetic goes through fp32, with little to gain."""
    return {
        "model": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
        "amx_tile": torch.cpu._is_amx_tile_supported(),
    }


def config(
    model: str, data: str, batch_size: int, device: str, channels_last: bool | None = None, precision: str = "fp32"
):
    """The train config of a case; the default memory format unless `channels_last` is given."""
    overrides = [
        f"model={model}",
        f"data={data}",
        f"data.batch_size={batch_size}",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"trainer.precision={PRECISIONS[precision]}",
        "callbacks.model_checkpoint.dirpath=null",
    ]
    if channels_last is not None:
        overrides.append(f"module.channels_last={channels_last}")
    return compose_train(overrides)


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a clock read means the work is done."""
    if device == "cuda":
        torch.cuda.synchronize()


def timed_loop(module, batches, n_batches: int, warmup: int, device: str, bf16: bool = False) -> float:
    """Images/s of the notebooks' hand-written training loop over `batches` (an iterator of (x, y)), in bf16
    autocast with `bf16` (cnnstudy.data.notebook.notebook_step)."""
    model = module.model.to(device).train()
    optimizer = module.configure_optimizers()
    seen, start = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            synchronize(device)
            start, seen = time.perf_counter(), 0
        notebook_step(model, optimizer, x.to(device), y.to(device), module.channels_last, bf16)
        seen += len(y)
        if i + 1 == warmup + n_batches:
            break
    synchronize(device)
    return seen / (time.perf_counter() - start)


class Stopwatch(L.Callback):
    def __init__(self, warmup: int, device: str):
        self.warmup, self.device, self.start, self.seen = warmup, device, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            synchronize(self.device)
            self.start, self.seen = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seen += len(batch[1])

    def on_train_epoch_end(self, trainer, module):
        synchronize(self.device)
        self.ips = self.seen / (time.perf_counter() - self.start)


def cnnstudy_ips(cfg, n_batches: int, warmup: int, device: str) -> float:
    configure_process(cfg)  # the process settings of a run (cnnstudy.train)
    datamodule, module = instantiate(cfg.data), build_module(cfg)
    stopwatch = Stopwatch(warmup, device)
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


def compute_ips(cfg, n_batches: int, warmup: int, device: str) -> float:
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    images, labels = datamodule.train_set.images, datamodule.train_set.labels
    b = cfg.data.batch_size
    batches = [
        (datamodule.normalize(images[i : i + b].to(device)), labels[i : i + b].to(device))
        for i in range(0, (warmup + n_batches) * b, b)
    ]
    bf16 = cfg.trainer.precision == PRECISIONS["bf16"]
    return timed_loop(build_module(cfg), iter(batches), n_batches, warmup, device, bf16)


def notebook_ips(cfg, n_batches: int, warmup: int, device: str) -> float:
    return timed_loop(build_module(cfg), iter(notebook_loader(cfg)), n_batches, warmup, device)


def spread(values: list[float]) -> dict:
    """Median, quartiles and range of one figure over the rounds (quartiles need 2+ rounds)."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {
        "median": round(statistics.median(values), 3),
        "q1": round(q1, 3),
        "q3": round(q3, 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "rounds": [round(v, 3) for v in values],
    }


def verdict(figure: dict, target: float, higher_is_better: bool = True) -> str:
    low, high = (figure["q1"], figure["q3"]) if higher_is_better else (-figure["q3"], -figure["q1"])
    goal = target if higher_is_better else -target
    if low >= goal:
        return "met"
    if high < goal:
        return "not met"
    return "within noise"


# Each ratio of a case: (numerator path, denominator path), both measured in the same round.
RATIOS = {
    "cnnstudy/compute": ("cnnstudy", "compute"),
    "cnnstudy/notebook": ("cnnstudy", "notebook"),
    "compute bf16/fp32": ("compute_bf16", "compute"),
    "cnnstudy bf16/fp32": ("cnnstudy_bf16", "cnnstudy"),
}


def run_case(model, data, batch_size, rounds, n_batches, warmup, device) -> dict:
    cfg = {precision: config(model, data, batch_size, device, precision=precision) for precision in PRECISIONS}
    paths = {
        "notebook": (notebook_ips, cfg["fp32"]),
        "compute": (compute_ips, cfg["fp32"]),
        "cnnstudy": (cnnstudy_ips, cfg["fp32"]),
        "compute_bf16": (compute_ips, cfg["bf16"]),
        "cnnstudy_bf16": (cnnstudy_ips, cfg["bf16"]),
    }
    samples = {name: [] for name in paths}
    for round_number in range(rounds):  # each round measures every path once, in alternating order
        order = list(paths) if round_number % 2 == 0 else list(reversed(paths))
        for name in order:
            torch.manual_seed(0)
            measure, path_cfg = paths[name]
            samples[name].append(measure(path_cfg, n_batches, warmup, device))
    ratios = {
        name: [a / b for a, b in zip(samples[numerator], samples[denominator], strict=True)]
        for name, (numerator, denominator) in RATIOS.items()
    }
    return {
        "model": model,
        "data": data,
        "batch_size": batch_size,
        "channels_last": cfg["fp32"].module.channels_last,
        **{f"{name}_ips": round(statistics.median(values), 1) for name, values in samples.items()},
        "ratios": {name: spread(values) for name, values in ratios.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def memory_formats(rounds: int, n_batches: int, warmup: int, device: str) -> list[dict]:
    """Compute-bound images/s of each model family in NCHW and channels_last, interleaved."""
    rows = []
    for model, data, batch_size in CASES:
        ratios, samples = [], {False: [], True: []}
        for _ in range(rounds):
            for channels_last in samples:
                cfg = config(model, data, batch_size, device, channels_last)
                samples[channels_last].append(compute_ips(cfg, n_batches, warmup, device))
            ratios.append(samples[True][-1] / samples[False][-1])
        nchw, cl = (statistics.median(samples[k]) for k in (False, True))
        rows.append(
            {"model": model, "nchw_ips": round(nchw, 1), "channels_last_ips": round(cl, 1), "ratio": spread(ratios)}
        )
    return rows


def sweep_seconds(n_jobs: int, steps: int, device: str) -> dict:
    """Wall times of one real sweep: start-up before the first job, and each job's wall time.

    A job runs from Hydra writing its `.hydra/config.yaml` to the final write of its metrics.json.
    """
    accelerator = "gpu" if device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "cnnstudy.train",
            "-m",
            f"seed={','.join(str(seed) for seed in range(n_jobs))}",
            "trainer.max_epochs=1",
            f"trainer.limit_train_batches={steps}",
            f"trainer.accelerator={accelerator}",
            f"hydra.sweep.dir={tmp}",
        ]
        started = time.time()
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        wall = time.time() - started
        if done.returncode != 0:
            raise RuntimeError(f"the sweep failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        job_dirs = sorted((p for p in Path(tmp).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        starts = [(job / ".hydra" / "config.yaml").stat().st_mtime for job in job_dirs]
        ends = [(job / "metrics.json").stat().st_mtime for job in job_dirs]
        statuses = [json.loads((job / "metrics.json").read_text())["status"] for job in job_dirs]
    if statuses != ["completed"] * n_jobs:
        raise RuntimeError(f"the sweep's jobs ended {statuses}")
    return {
        "wall": wall,
        "startup": starts[0] - started,
        "jobs": [end - start for start, end in zip(starts, ends, strict=True)],
    }


def eval_seconds(cfg, device: str) -> float:
    """Pure forward time over a job's validation and test splits, in its eval batches."""
    datamodule, module = instantiate(cfg.data), build_module(cfg)
    datamodule.setup("fit")
    model = module.model.to(device).eval()
    b = cfg.data.eval_batch_size
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for split in (datamodule.val_set, datamodule.test_set):
            for i in range(0, len(split), b):
                x = datamodule.normalize(split.images[i : i + b].to(device))
                if module.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                model(x)
    synchronize(device)
    return time.perf_counter() - start


def sweep_overhead(n_jobs: int, steps: int, rounds: int, device: str) -> dict:
    """Per-job overhead of a real sweep of `n_jobs` jobs x `steps` training steps (model=bn on MNIST).

    Per round: the sweep (a subprocess through the real entry point), the pure training time of the
    same steps (compute path, steady state) and the pure forward time of validation + test.
    overhead = 1 - training / job wall; eval = evaluation / job wall; rest = the remainder
    (data set-up, model and Trainer set-up, checkpoints, TensorBoard, metrics.json, Hydra), where
    a job's wall is the median of the jobs after the first; rest_all_jobs takes the mean of all.
    """
    cfg = config("bn", "mnist", 100, device)
    names = ("job_s", "first_job_s", "startup_s", "train_s", "eval_s", "overhead", "eval", "rest", "rest_all_jobs")
    figures = {name: [] for name in names}
    for round_number in range(rounds):
        sweep, train, evaluation = None, None, None
        for part in ("sweep", "pure") if round_number % 2 == 0 else ("pure", "sweep"):
            if part == "sweep":
                sweep = sweep_seconds(n_jobs, steps, device)
            else:
                torch.manual_seed(0)
                train = steps * cfg.data.batch_size / compute_ips(cfg, steps, 5, device)
                evaluation = eval_seconds(cfg, device)
        # The pure paths are steady state (warm-up batches discarded), so a job is compared with them
        # from the second on: the first also pays the process's one-time costs (decoding the dataset,
        # the first use of each kernel), reported apart, like the start-up.
        first, *steady = sweep["jobs"]
        job = statistics.median(steady)
        figures["job_s"].append(job)
        figures["first_job_s"].append(first)
        figures["rest_all_jobs"].append(1 - (train + evaluation) / statistics.mean(sweep["jobs"]))
        figures["startup_s"].append(sweep["startup"])
        figures["train_s"].append(train)
        figures["eval_s"].append(evaluation)
        figures["overhead"].append(1 - train / job)
        figures["eval"].append(evaluation / job)
        figures["rest"].append(1 - (train + evaluation) / job)
    return {"jobs": n_jobs, "steps": steps, **{name: spread(values) for name, values in figures.items()}}


def show(figure: dict, digits: int = 2) -> str:
    """A figure with its spread: median [q1-q3] (range min-max over the rounds)."""
    f = f".{digits}f"
    return (
        f"{figure['median']:{f}} [{figure['q1']:{f}}-{figure['q3']:{f}}] "
        f"(range {figure['min']:{f}}-{figure['max']:{f}})"
    )


def gpu_name(device: str) -> str:
    if device != "cuda":
        return ""
    bf16 = "bf16 supported" if torch.cuda.is_bf16_supported() else "no bf16"
    return f"GPU {torch.cuda.get_device_name(0)} ({bf16}); "


def print_report(results, formats, overhead, rounds, n_batches, warmup, quick, device) -> None:
    cpu = cpu_features()
    print(
        f"\ntorch {torch.__version__}, {device}, {torch.get_num_threads()} threads, data {default_root()}; "
        f"{rounds} interleaved rounds x {n_batches} batches (after {warmup} warm-up)"
    )
    print(
        f"{gpu_name(device)}CPU {cpu['model']}, torch CPU capability {cpu['capability']}, "
        f"AVX512-BF16 {'yes' if cpu['avx512_bf16'] else 'no'}, AMX tiles {'yes' if cpu['amx_tile'] else 'no'}"
    )
    if quick:
        print("--quick: a smoke run (one round, few batches): the figures are not measurements, no verdict")
    print("\nimages/s, median over the rounds; ratios within each round: median [quartiles] (range)")
    print(
        f"{'model':10} {'data':8} {'batch':>5} {'notebook':>9} {'compute':>9} {'cnnstudy':>9} "
        f"{'compute bf16':>13} {'cnnstudy bf16':>14} {'peak MB':>8}"
    )
    for r in results:
        print(
            f"{r['model']:10} {r['data']:8} {r['batch_size']:5d} {r['notebook_ips']:9.0f} {r['compute_ips']:9.0f} "
            f"{r['cnnstudy_ips']:9.0f} {r['compute_bf16_ips']:13.0f} {r['cnnstudy_bf16_ips']:14.0f} "
            f"{r['peak_rss_mb']:8.0f}"
        )
        for name, figure in r["ratios"].items():
            judged = ""
            if not quick and name in TARGETS:  # the bf16 / fp32 ratios are measured, not targets
                judged = f"   target >= {TARGETS[name]}: {verdict(figure, TARGETS[name])}"
            print(f"{'':10} {name:18} {show(figure)}{judged}")
    for r in formats:
        print(
            f"{r['model']:10} compute NCHW {r['nchw_ips']:7.0f}  channels_last {r['channels_last_ips']:7.0f}  "
            f"ratio {show(r['ratio'])}"
        )
    if overhead:
        o = overhead
        print(f"\nsweep of {o['jobs']} jobs x {o['steps']} training steps (model=bn, mnist), seconds and fractions:")
        print(f"  start-up before the first job  {show(o['startup_s'], 1)} s (once per sweep)")
        print(f"  first job's wall time          {show(o['first_job_s'], 1)} s (pays the one-time costs)")
        print(f"  job wall time, jobs 2-{o['jobs']}        {show(o['job_s'], 1)} s")
        print(f"  pure training of its steps     {show(o['train_s'], 1)} s")
        print(f"  pure forward of val + test     {show(o['eval_s'], 1)} s")
        judged = "" if quick else f"   target <= {OVERHEAD_TARGET}: {verdict(o['rest'], OVERHEAD_TARGET, False)}"
        print(f"  overhead = 1 - training / job  {show(o['overhead'])}")
        print(f"    of which validation + test   {show(o['eval'])}  (the job's result: docs/performance.md)")
        print(f"    of which everything else     {show(o['rest'])}{judged}")
        print(f"    everything else, all jobs    {show(o['rest_all_jobs'])}  (the first job's one-time costs included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: one round, few batches, no verdict")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--formats", action="store_true", help="also compare NCHW and channels_last")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7; --quick: 1)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train (default cpu)")
    parser.add_argument("--no-overhead", action="store_true", help="skip the sweep overhead measurement")
    parser.error = fail  # a bad option: one line on stderr and exit 2, as every cnnstudy mistake
    args = parser.parse_args()
    # Lightning's start-up lines ("GPU available", tips), once per trainer, would bury the tables: a run keeps
    # them in its train.log, the bench has none
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    rounds, n_batches, warmup = (1, 8, 2) if args.quick else (args.rounds, 30, 5)
    keep_freed_memory()  # as a run does (conf/train.yaml), for every path: the ratios compare loops, not malloc
    cases = CASES[:2] if args.quick else CASES
    with exit_on_user_error():  # missing data: one line here, not torchvision's traceback from inside a case
        for data in dict.fromkeys(data for _, data, _ in cases):
            load(data, default_root(), train=True)
    results = []
    for model, data, batch_size in cases:
        results.append(run_case(model, data, batch_size, rounds, n_batches, warmup, args.device))
    formats = memory_formats(rounds, n_batches, warmup, args.device) if args.formats else []
    overhead = None
    if not args.no_overhead:
        n_jobs, steps = (2, 20) if args.quick else (5, 100)
        overhead = sweep_overhead(n_jobs, steps, rounds, args.device)
    if args.json:
        print(
            json.dumps(
                {
                    "device": args.device,
                    "quick": args.quick,
                    "rounds": rounds,
                    "threads": torch.get_num_threads(),
                    "cpu": cpu_features(),
                    "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                    "cases": results,
                    "memory_formats": formats,
                    "overhead": overhead,
                }
            )
        )
        return
    print_report(results, formats, overhead, rounds, n_batches, warmup, args.quick, args.device)


if __name__ == "__main__":
    main()
