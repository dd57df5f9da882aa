from cnnstudy.bench import spread, verdict

from conftest import run_cli


def test_a_ratio_is_judged_by_its_quartiles_not_its_median():
    steady = spread([0.95, 0.93, 0.97, 0.94, 0.96])
    straddling = spread([0.95, 0.80, 1.10, 0.85, 1.00])
    assert (steady["median"], steady["q1"], steady["q3"]) == (0.95, 0.94, 0.96)
    assert verdict(steady, 0.90) == "met"
    assert verdict(straddling, 0.90) == "within noise"
    assert verdict(spread([0.40, 0.45, 0.42]), 0.15, higher_is_better=False) == "not met"


def test_gpu_check_without_cuda_says_so_in_one_line_and_exits_0(tmp_path):
    done = run_cli("cnnstudy.gpu_check", "--out", str(tmp_path / "gpu-check"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu-check: no CUDA device") and done.stdout.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
