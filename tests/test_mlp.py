"""The MLP family (models/mlp.py), the sigmoid activation, and the probes of Ioffe & Szegedy's figure 1
(TestCurve, SigmoidInputs), trained on real MNIST through the command line."""

import json

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from cnnstudy.builders import build_model, count_parameters
from cnnstudy.checkpoints import load_checkpoint
from cnnstudy.errors import UserError
from cnnstudy.models import MLP
from cnnstudy.models.blocks import make_activation
from cnnstudy.record import read_probes_file
from cnnstudy.report.groups import Group, build_groups
from cnnstudy.report.jobs import Job, find_jobs
from cnnstudy.report.probe_sections.step_curves import plot_step_curves, write_step_curves

from conftest import ROOT, run_cli

# 784*100 + 100*100 + 100*100 + 100*10 weights = 99,400, plus the output layer's 10 biases, and per hidden
# layer either 100 biases (no norm) or BN's 100 gammas and 100 betas (the Linear's bias dropped before BN).
IOFFE_PARAMS = {"none": 99_400 + 10 + 3 * 100, "bn": 99_400 + 10 + 3 * 200}


@pytest.mark.parametrize("norm", list(IOFFE_PARAMS))
def test_ioffe_mlp_parameter_counts(cfg_for, norm):
    model = build_model(cfg_for("model=ioffe_mlp", f"model.norm={norm}", "data=mnist"))
    assert count_parameters(model) == IOFFE_PARAMS[norm]
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == (3 if norm == "bn" else 0)


def test_init_std_draws_every_weight_from_that_gaussian_and_zeroes_the_biases():
    torch.manual_seed(0)
    model = MLP(1, 28, 10, hidden=[100, 100, 100], init_std=0.1)
    first = model.head[1]
    assert abs(first.weight.std().item() - 0.1) < 0.002 and abs(first.weight.mean().item()) < 0.002
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in model.modules() if isinstance(m, nn.Linear))


def test_sigmoid_is_an_activation_and_an_unknown_one_names_it():
    x = torch.linspace(-5, 5, 11)
    assert torch.equal(make_activation("sigmoid")(x), torch.sigmoid(x))
    with pytest.raises(UserError, match="sigmoid"):
        make_activation("sigmoidal")


def cli_run(run_dir, *overrides):
    result = run_cli(
        "cnnstudy.train", "experiment=ioffe_mnist", "threads=1", f"hydra.run.dir={run_dir}", *overrides, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.subprocess
@pytest.mark.slow
def test_ioffe_mlp_trains_on_real_mnist_and_the_probes_measure_the_model(tmp_path, data_root):
    """One epoch (900 steps of 60) of the BN net: test accuracy above 90 %; TestCurve's last point is the run's
    own test accuracy (the same weights: step 900 is the end of the epoch, the best and last checkpoint), and
    SigmoidInputs' percentiles are those of the last BN's output, unit 0, computed here from the checkpoint."""
    run_dir = tmp_path / "run"
    metrics = cli_run(
        run_dir,
        f"data.root={data_root}",
        "model.norm=bn",
        "trainer.max_steps=900",
        "trainer.max_epochs=1",
        "probes.test_curve.every_n_steps=300",
        "probes.sigmoid_inputs.every_n_steps=300",
    )
    assert metrics["status"] == "completed" and metrics["test_acc"] > 0.9
    probes = read_probes_file(run_dir)
    assert set(probes) == {"test_curve/acc", "test_curve/loss", *(f"sigmoid_input/p{q}" for q in (15, 50, 85))}
    assert all(sorted(steps) == [0, 300, 600, 900] for steps in probes.values())
    assert probes["test_curve/acc"][0] < 0.2 < 0.9 < probes["test_curve/acc"][900]
    assert probes["test_curve/acc"][900] == pytest.approx(metrics["test_acc"], abs=1e-6)

    cfg = OmegaConf.create(metrics["config"])
    model = build_model(cfg)
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    data = instantiate(cfg.data)
    data.setup("test")
    model.eval()
    with torch.no_grad():
        last_bn = nn.Sequential(*list(model.head)[:-2])(data.normalize(data.test_set.images))  # up to the last sigmoid
    expected = torch.quantile(last_bn[:, 0], torch.tensor([0.15, 0.5, 0.85]))
    measured = [probes[f"sigmoid_input/p{q}"][900] for q in (15, 50, 85)]
    assert measured == pytest.approx(expected.tolist(), abs=1e-5)
    assert measured[0] < measured[1] < measured[2]


@pytest.mark.subprocess
@pytest.mark.slow
def test_ioffe_probes_leave_the_training_bitwise_unchanged(tmp_path, data_root):
    """Measuring in eval mode every 20 steps moves no BN statistic and draws no random number."""
    states = []
    for probes in ("ioffe", "none"):
        run_dir = tmp_path / probes
        common = ("model.norm=bn", "trainer.max_steps=60", "trainer.max_epochs=1", "data.val_size=600")
        every = ["probes.test_curve.every_n_steps=20", "probes.sigmoid_inputs.every_n_steps=20"]
        cli_run(run_dir, f"data.root={data_root}", f"probes={probes}", *common, *(every if probes == "ioffe" else []))
        states.append(load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"])
    with_probes, without = states
    assert with_probes.keys() == without.keys()
    assert all(torch.equal(with_probes[k], without[k]) for k in with_probes)


def test_step_curves_table_and_figure_hold_the_seeds_mean_at_each_step(tmp_path):
    def job(seed, acc_at_10k, p50):
        probes = {
            "test_curve/acc": {0: 0.1, 10_000: acc_at_10k, 20_000: acc_at_10k + 0.01},
            "sigmoid_input/p15": {0: -1.0, 10_000: p50 - 1, 50_000: p50 - 3},
            "sigmoid_input/p50": {0: 0.0, 10_000: p50, 50_000: 2 * p50},
            "sigmoid_input/p85": {0: 1.0, 10_000: p50 + 1, 50_000: p50 + 2},
        }
        return Job(str(seed), "completed", [f"seed={seed}"], probes=probes)

    bn = Group(None, ("model.norm=bn",), [job(0, 0.96, 0.5), job(1, 0.98, 1.5)], label="model.norm=bn")
    failed = Job("2", "failed", ["seed=2"], probes={"test_curve/acc": {10_000: 0.1}})
    none = Group(None, ("model.norm=none",), [job(0, 0.90, -2.0), failed], label="model.norm=none")
    assert write_step_curves([bn, none], tmp_path) == ["step_curves.png"]
    table = (tmp_path / "step_curves.md").read_text()
    # the failed job's 0.1 is not in the mean; no accuracy at 50,000: a dash, n = 0
    assert (
        "| model.norm=bn | 2 | 10,000 | 97.00 ± 1.41 | 0.0000 ± 0.7071 | 1.0000 ± 0.7071 | 2.0000 ± 0.7071 |" in table
    )
    assert "| model.norm=none | 1 | 10,000 | 90.00 ± – | -3.0000 ± – | -2.0000 ± – | -1.0000 ± – |" in table
    assert "| model.norm=bn | 0 | 50,000 | – | -2.0000 ± 0.7071 | 2.0000 ± 1.4142 | 3.0000 ± 0.7071 |" in table
    # from 10,000 to 50,000: p15 -2, p50 +p50 (0.5 and 1.5), p85 +1, the spread p85 - p15 +3
    assert "| model.norm=bn | 2 | -2.0000 ± 0.0000 | 1.0000 ± 0.7071 | 1.0000 ± 0.0000 | 3.0000 ± 0.0000 |" in table
    assert "| model.norm=none | 1 | -2.0000 ± – | -2.0000 ± – | 1.0000 ± – | 3.0000 ± – |" in table
    figure = plot_step_curves([bn, none], tmp_path / "again.png")
    accuracy_lines = figure.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in accuracy_lines] == [
        pytest.approx([0.1, 0.97, 0.98]),
        pytest.approx([0.1, 0.90, 0.91]),
    ]
    assert [line.get_label() for line in figure.axes[1].get_lines()] == ["p15", "p50", "p85"]
    assert write_step_curves([Group(None, (), [Job("0", "completed", [])], label="plain")], tmp_path / "x") == []


def test_committed_ioffe_step_curves_are_what_the_archived_records_give(tmp_path):
    """docs/results/ioffe_mnist/step_curves.md is what the archived probes.json give, not a hand edit."""
    records = ROOT / "docs" / "results" / "ioffe_mnist"
    groups, _ = build_groups(find_jobs(records))
    assert write_step_curves(groups, tmp_path) == ["step_curves.png"]
    assert (tmp_path / "step_curves.md").read_text() == (records / "step_curves.md").read_text()
