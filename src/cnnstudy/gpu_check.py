"""The checks that need a GPU: `python -m cnnstudy.gpu_check [--out NAME]` (or `make gpu-check`).

On a machine with CUDA it runs, through the real entry points:
  fp32        one MNIST epoch of `cnnstudy.train trainer.accelerator=gpu` (model=bn);
  bf16-mixed  the same with `trainer.precision=bf16-mixed` (where the GPU supports bf16);
  ddp-2gpu    the same with `trainer=ddp trainer.devices=2` (where two GPUs are present);
  bench       `cnnstudy.bench --device cuda --json` (throughput cases, fp32 and bf16-mixed, and sweep
              overhead on the GPU),
and writes the figures to NAME.json and NAME.md (default gpu-check.*) for docs/performance.md.
It exits 1 if a run failed. Without CUDA it says so in one line and exits 0.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TRAIN = ["model=bn", "data=mnist", "trainer.accelerator=gpu", "trainer.max_epochs=1"]


def train_run(name: str, overrides: list[str], workdir: Path) -> dict:
    """One short training run on the GPU through `python -m cnnstudy.train`; its metrics.json figures."""
    run_dir = workdir / name
    command = [sys.executable, "-m", "cnnstudy.train", *TRAIN, *overrides, f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    wall = time.perf_counter() - started
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    status = metrics.get("status", "failed") if done.returncode == 0 else "failed"
    return {
        "check": name,
        "overrides": TRAIN + overrides,
        "status": status,
        "test_acc": metrics.get("test_acc"),
        "best_val_acc": metrics.get("best_val_acc"),
        "train_seconds": metrics.get("seconds"),
        "wall_seconds": round(wall, 1),
        "processes": metrics.get("processes"),
        "error": None if status == "completed" else done.stderr.strip()[-2000:],
    }


def bench_run() -> dict:
    """The bench's cases and sweep overhead on the GPU (its JSON is the last line of its output)."""
    command = [sys.executable, "-m", "cnnstudy.bench", "--device", "cuda", "--json", "--rounds", "5"]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    if done.returncode != 0:
        return {"status": "failed", "error": done.stderr.strip()[-2000:]}
    return {"status": "completed", **json.loads(done.stdout.strip().splitlines()[-1])}


def markdown(report: dict) -> str:
    lines = [
        f"# gpu-check: {report['gpu']} x {report['gpus']}, torch {report['torch']}, CUDA {report['cuda']}",
        "",
        "| check | status | test acc | best val acc | train s | wall s | processes |",
        "|-------|--------|---------:|-------------:|--------:|-------:|----------:|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['check']} | {r['status']} | {r['test_acc']} | {r['best_val_acc']} | {r['train_seconds']} "
            f"| {r['wall_seconds']} | {r['processes']} |"
        )
    bench = report["bench"]
    lines += ["", f"## bench on cuda: {bench['status']}", ""]
    if bench["status"] != "completed":
        lines.append(f"```\n{bench['error']}\n```")
        return "\n".join(lines) + "\n"
    cpu = bench["cpu"]
    lines += [
        f"GPU {bench['gpu']}; CPU {cpu['model']}, torch CPU capability {cpu['capability']}, "
        f"AVX512-BF16 {cpu['avx512_bf16']}, AMX tiles {cpu['amx_tile']}",
        "",
        f"images/s, median of {bench['rounds']} interleaved rounds; ratios: median [quartiles] over the rounds",
        "",
        "| model | data | batch | notebook | compute | cnnstudy | compute bf16 | cnnstudy bf16 |",
        "|-------|------|------:|---------:|--------:|---------:|-------------:|--------------:|",
    ]
    for c in bench["cases"]:
        lines.append(
            f"| {c['model']} | {c['data']} | {c['batch_size']} | {c['notebook_ips']:.0f} | {c['compute_ips']:.0f} "
            f"| {c['cnnstudy_ips']:.0f} | {c['compute_bf16_ips']:.0f} | {c['cnnstudy_bf16_ips']:.0f} |"
        )
    ratio_names = list(bench["cases"][0]["ratios"])
    lines += ["", f"| model | {' | '.join(ratio_names)} |", f"|-------|{'---|' * len(ratio_names)}"]
    for c in bench["cases"]:
        shown = [f"{r['median']:.2f} [{r['q1']:.2f}-{r['q3']:.2f}]" for r in c["ratios"].values()]
        lines.append(f"| {c['model']} | {' | '.join(shown)} |")
    o = bench["overhead"]
    if not o:  # bench --no-overhead
        return "\n".join(lines) + "\n"
    lines += ["", f"Sweep of {o['jobs']} jobs x {o['steps']} steps (median over the rounds):", ""]
    for key in ("startup_s", "first_job_s", "job_s", "train_s", "eval_s", "overhead", "eval", "rest", "rest_all_jobs"):
        lines.append(f"- {key}: {o[key]['median']} [{o[key]['q1']}-{o[key]['q3']}]")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check", help="write OUT.json and OUT.md (default gpu-check)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device on this machine (torch {torch.__version__}): nothing to check")
        return 0
    gpus = torch.cuda.device_count()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [train_run("fp32", [], Path(tmp))]
        if torch.cuda.is_bf16_supported():
            runs.append(train_run("bf16-mixed", ["trainer.precision=bf16-mixed"], Path(tmp)))
        if gpus >= 2:
            runs.append(train_run("ddp-2gpu", ["trainer=ddp", "trainer.devices=2"], Path(tmp)))
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "gpus": gpus,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "runs": runs,
        "bench": bench_run(),
    }
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(markdown(report))
    failed = [r["check"] for r in runs if r["status"] != "completed"]
    if report["bench"]["status"] != "completed":
        failed.append("bench")
    print(f"gpu-check: wrote {args.out}.json and {args.out}.md; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
