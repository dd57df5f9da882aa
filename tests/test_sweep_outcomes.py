"""A sweep ends with one block: jobs completed / diverged / failed / interrupted, their dirs, the next command."""

import pytest

from cnnstudy.sweep_outcomes import compact

from conftest import run_cli


def test_compact_job_numbers():
    assert compact(["0", "1", "2", "3", "7", "9", "10"]) == "0-3,7,9-10"
    assert compact(["5", "trial_a"]) == "5,trial_a"
    assert compact([]) == ""


@pytest.mark.subprocess
def test_a_real_sweep_ends_with_its_summary(tmp_path, data_root):
    # model=nobn, SGD: lr 1e12 diverges in the first batches; dropout 1.5 is refused by the model (failed)
    result = run_cli(
        "cnnstudy.train", "-m", "model=nobn", "optim=sgd", "optim.lr=1e-2,1e12", "model.dropout=0.2,1.5",
        f"hydra.sweep.dir={tmp_path}", f"data.root={data_root}", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    block = result.stdout[result.stdout.index(f"sweep {tmp_path}: 4 job(s)") :].splitlines()
    # Hydra numbers the jobs in the order of the grid: lr varies slowest
    assert block[1:7] == [
        "  completed       1  0",
        "  diverged        1  2",
        "  failed          2  1,3",
        "  interrupted     0",
        "  1 failed: UserError: model.dropout=1.5 must be a number in [0, 1)",
        "  3 failed: UserError: model.dropout=1.5 must be a number in [0, 1)",
    ]
    assert block[7] == f"next: python -m cnnstudy.report {tmp_path}"
