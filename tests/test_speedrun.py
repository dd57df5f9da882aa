"""experiment=speedrun reaches 99 % on real MNIST in one epoch, timed by the speedrun script as a user runs it."""

import json

import pytest

from conftest import run_cli


@pytest.mark.subprocess
def test_speedrun_reaches_the_per_seed_bound_on_real_mnist_in_one_epoch(data_root):
    env = {"CNNSTUDY_DATA_DIR": str(data_root)}
    done = run_cli("cnnstudy.speedrun", "--seeds", "1", "--no-reference", "--json", env=env)
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(done.stdout)["results"]["speedrun"]["runs"]
    assert run["status"] == "completed"
    assert run["steps"] == 422  # one epoch of the 54,000 training images (6,000 held out) in batches of 128
    assert run["test_acc"] >= 0.989  # issue #21: every seed >= 98.9 % (seed 0 gives 99.18 %)
