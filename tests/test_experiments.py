"""Every study is a named experiment config that composes and expands to its intended grid."""

import json
import math

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from cnnstudy.builders import build_module, check_config
from cnnstudy.config import _variants, register_arms
from cnnstudy.record import setup_identity

from conftest import CONF, run_cli

# Every study in conf/experiment/ is tested: the tests below are parametrised over the files, so a new one is
# picked up, and fails until its intended number of jobs (the grid its docs state) is added here.
EXPERIMENTS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
JOBS = {
    "bn_vs_nobn": 18,
    "lr_range": 108,
    "lr_range_1epoch": 54,
    "deeper_cnn": 21,
    "session5": 12,
    "dlwpt_ch8": 27,
    "cifar10_cnn": 15,
    "bn_landscape": 12,
    "bn_lr_cifar": 42,
    "bn_lr_cifar_layers": 12,
    "noisy_bn": 9,
    "noisy_bn_paper": 15,
    "norm_batch_size": 60,
    "init_sensitivity": 30,
    "ioffe_mnist": 6,
    "speedrun": 3,
    "precision": 36,
}


def sweep_overrides(experiment: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    return OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])


@pytest.mark.parametrize("experiment", sorted(set(EXPERIMENTS) | set(JOBS)))
def test_experiment_expands_to_its_grid_with_at_least_three_seeds(experiment):
    if experiment not in EXPERIMENTS:
        pytest.fail(f"JOBS states {experiment!r}, which has no conf/experiment/{experiment}.yaml", pytrace=False)
    if experiment not in JOBS:
        message = (
            f"conf/experiment/{experiment}.yaml is new: state its number of jobs in JOBS (tests/test_experiments.py)"
        )
        pytest.fail(message, pytrace=False)
    overrides = sweep_overrides(experiment)
    sizes = {
        o.get_key_element(): len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in overrides
    }
    assert math.prod(sizes.values()) == JOBS[experiment]
    assert sizes["seed"] >= 3


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_arm_of_every_experiment_composes_and_builds(experiment):
    overrides = sweep_overrides(experiment)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for variant in _variants(overrides, multirun=True):
            cfg = compose("train", overrides=[f"experiment={experiment}", *variant])
            check_config(cfg)  # e.g. scheduler settings whose scheduler an override of the experiment dropped
            build_module(cfg)


def test_a_study_declares_its_arms_in_its_one_file(tmp_path):
    """Each entry under an experiment file's `arms:` is the Hydra option arm/<study>=<arm>; the table itself is
    not part of what a run is (adding an arm to a study leaves its archived groups as they were)."""
    (tmp_path / "experiment").mkdir()
    arms = "arms:\n  wide: {defaults: [{override /model: net_width}], optim: {lr: 3e-3}}\n  plain: {}\n"
    (tmp_path / "experiment" / "widths.yaml").write_text("# @package _global_\n" + arms)
    register_arms(tmp_path)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        wide = compose("train", overrides=["+arm/widths=wide"], return_hydra_config=True)
        plain = compose("train", overrides=["+arm/widths=plain"], return_hydra_config=True)
    assert (wide.hydra.runtime.choices["model"], wide.optim.lr) == ("net_width", 3e-3)
    assert plain.hydra.runtime.choices["model"] == "bn"
    listed = {"seed": 0, "arms": {"a": {}}, "optim": {"lr": 0.1}}
    assert setup_identity(listed) == setup_identity({**listed, "arms": {"a": {}, "b": {"optim": {"lr": 1}}}})


def test_arms_set_what_the_studies_say(cfg_for):
    bn = cfg_for("experiment=deeper_cnn", "arm/deeper_cnn=bn")
    assert (bn.model.norm, bn.model.dropout, bn.optim.lr, bn.data.batch_size) == ("bn", 0.5, 3e-3, 64)
    gap = cfg_for("experiment=deeper_cnn", "arm/deeper_cnn=bn_gap")
    assert gap.model.head == "gap"
    it4 = cfg_for("experiment=session5", "arm/session5=it4_step5")
    assert (it4.scheduler.step_size, it4.scheduler.gamma, it4.model.norm, it4.model.dropout) == (5, 0.5, "bn", 0.1)
    assert it4.data.augment.crop_size == 22 and it4.trainer.max_epochs == 19
    for arm, step_size in (("it3_step10", 10), ("it4_step5", 5)):
        scheduler = cfg_for("experiment=session5", f"arm/session5={arm}").scheduler
        assert (scheduler._target_, scheduler.step_size) == ("torch.optim.lr_scheduler.StepLR", step_size)
    assert not cfg_for("experiment=session5", "arm/session5=it2_bn_dropout").scheduler
    tied = cfg_for("experiment=dlwpt_ch8", "arm/dlwpt_ch8=net_res_deep_tied")
    assert tied.model.tied_blocks and tied.optim.lr == 3e-3 and tied.data.name == "cifar2"
    l2 = cfg_for("experiment=dlwpt_ch8", "arm/dlwpt_ch8=net_l2")
    assert l2.optim.weight_decay == 0.001 and l2.optim.lr == 1e-2
    landscape = cfg_for("experiment=bn_landscape")
    assert landscape.probes.landscape.every_n_steps == 10 and landscape.model.norm == "bn"
    bn_study = cfg_for("experiment=bn_vs_nobn")
    assert list(bn_study.data.mean) == [0.5] and bn_study.trainer.max_epochs == 10


@pytest.mark.subprocess
def test_a_diverging_job_is_recorded_and_the_sweep_goes_on(tmp_path, data_root):
    result = run_cli(
        "cnnstudy.train",
        "-m",
        "model=nobn",
        "optim=sgd",
        "optim.lr=1e-2,1e6",  # 1e6: the loss overflows within a few steps
        f"hydra.sweep.dir={tmp_path}",
        f"data.root={data_root}",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=20",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    by_lr = {}
    for path in tmp_path.glob("*/metrics.json"):
        metrics = json.loads(path.read_text())
        by_lr[metrics["config"]["optim"]["lr"]] = metrics
    assert by_lr[1e-2]["status"] == "completed" and len(by_lr[1e-2]["epochs"]) == 2
    assert by_lr[1e6]["status"] == "diverged" and by_lr[1e6]["diverged_epoch"] == 0
    assert "non-finite" in by_lr[1e6]["error"]
