import pytest
import torch

from cnnstudy.bench import cpu_features, run_case, spread, verdict
from cnnstudy.gpu_check import markdown

from conftest import run_cli


def test_a_ratio_is_judged_by_its_quartiles_not_its_median():
    steady = spread([0.95, 0.93, 0.97, 0.94, 0.96])
    straddling = spread([0.95, 0.80, 1.10, 0.85, 1.00])
    assert (steady["median"], steady["q1"], steady["q3"]) == (0.95, 0.94, 0.96)
    assert verdict(steady, 0.90) == "met"
    assert verdict(straddling, 0.90) == "within noise"
    assert verdict(spread([0.40, 0.45, 0.42]), 0.15, higher_is_better=False) == "not met"


@pytest.mark.subprocess
def test_gpu_check_without_cuda_says_so_in_one_line_and_exits_0(tmp_path):
    done = run_cli("cnnstudy.gpu_check", "--out", str(tmp_path / "gpu-check"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu-check: no CUDA device") and done.stdout.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_case_measures_fp32_and_bf16_and_their_ratios_within_each_round(data_root, monkeypatch):
    """Two rounds of the bn case, a few batches: every path's images/s, and the four ratios with their spread,
    as the bench prints them and gpu-check writes them."""
    monkeypatch.setenv("CNNSTUDY_DATA_DIR", str(data_root))
    case = run_case("bn", "mnist", 100, rounds=2, n_batches=3, warmup=1, device="cpu")
    paths = ("notebook", "compute", "cnnstudy", "compute_bf16", "cnnstudy_bf16")
    assert all(case[f"{path}_ips"] > 0 for path in paths)
    assert list(case["ratios"]) == ["cnnstudy/compute", "cnnstudy/notebook", "compute bf16/fp32", "cnnstudy bf16/fp32"]
    for figure in case["ratios"].values():
        assert len(figure["rounds"]) == 2 and all(r > 0 for r in figure["rounds"])
        assert figure["min"] <= figure["q1"] <= figure["median"] <= figure["q3"] <= figure["max"]
    cpu = cpu_features()
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability()
    bench = {"status": "completed", "rounds": 2, "cpu": cpu, "gpu": None, "cases": [case], "overhead": None}
    report = {"gpu": "-", "gpus": 0, "torch": torch.__version__, "cuda": None, "runs": [], "bench": bench}
    table = markdown(report)
    bf16 = case["ratios"]["cnnstudy bf16/fp32"]
    assert f"| {case['compute_bf16_ips']:.0f} | {case['cnnstudy_bf16_ips']:.0f} |" in table
    assert f"{bf16['median']:.2f} [{bf16['q1']:.2f}-{bf16['q3']:.2f}] |" in table
    assert f"CPU {cpu['model']}, torch CPU capability {cpu['capability']}, AVX512-BF16 {cpu['avx512_bf16']}" in table
