"""Every bad value, whoever checks it (Hydra, cnnstudy's components, torch, Lightning), is answered with one
line on stderr naming the config key, and exit status 2; HYDRA_FULL_ERROR=1 keeps the traceback."""

import json
import re

import pytest
import torch

from cnnstudy.builders import build, build_model
from cnnstudy.errors import UserError

from conftest import run_cli

FEW_BATCHES = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
               "trainer.limit_test_batches=1"]  # fmt: skip

# Each option of cnnstudy's own components, out of range: refused by its constructor, naming the key
# (in-process: the CLI cases below show that such a refusal reaches the user as one line).
COMPONENTS = [
    ("model", ["model.dropout=-0.1"], "model.dropout=-0.1"),  # was taken as "no dropout"
    ("model", ["model.conv_dropout=1.0"], "model.conv_dropout=1.0"),
    ("model", ["model.hidden=[0]"], "model.hidden"),  # a zero-width layer
    ("model", ["model.features=[32,M,0]"], "model.features"),
    ("model", ["model.features=[]"], "model.features"),
    ("model", ["model.activation=swish"], "model.activation"),
    ("model", ["model.norm_groups=0"], "model.norm_groups"),  # checked with norm=bn too
    ("model", ["model.noise_scale_std=-1"], "model.noise_scale_std"),
    ("model", ["model.init_scale=0"], "model.init_scale"),
    ("model", ["model.head=none"], "model.head"),
    ("model", ["model.norm_placement=middle"], "model.norm_placement"),
    ("model", ["model=net_res_deep", "model.n_blocks=-1"], "model.n_blocks"),
    ("model", ["model=net_res_deep", "model.channels=0"], "model.channels"),
    ("data", ["data.val_size=0.0"], "data.val_size"),
    ("data", ["data.val_size=-5"], "data.val_size"),
    ("data", ["data.eval_batch_size=0"], "data.eval_batch_size"),
    ("data", ["data.num_workers=-1"], "data.num_workers"),
    ("data", ["data.std=[0.0]"], "data.std"),
    ("data", ["data.mean=[0.1,0.2]"], "data.mean"),
    ("data", ["+data.augment._target_=cnnstudy.data.augment.RandomZoomRotate", "+data.augment.crop_p=2"], "crop_p"),
    ("probes", ["probes=bn", "probes.landscape.step_sizes=[abc]"], "step_sizes"),
    ("probes", ["probes=bn", "probes.layer_stats.every_n_steps=0"], "every_n_steps"),
    ("probes", ["probes=bn", "probes.feature_maps.n_images=0"], "n_images"),
]


@pytest.mark.parametrize(("part", "overrides", "key"), COMPONENTS, ids=[" ".join(o) for _, o, _ in COMPONENTS])
def test_an_out_of_range_option_is_refused_naming_its_key(part, overrides, key, cfg_for):
    cfg = cfg_for(*overrides)
    with pytest.raises(UserError, match=re.escape(key)):
        if part == "model":
            build_model(cfg)
        elif part == "data":
            build("data", cfg.data)
        else:
            for name, node in cfg.probes.items():
                build(f"probes.{name}", node)


# Through the command line, one case per checker: Hydra's compose, the value-kind check, a model constructor,
# torch's optimizer, the scheduler check, Lightning's Trainer, and a mistake Lightning finds after epoch 1.
TRAIN = [
    (["model.dropuot=0.5"], "model.dropuot"),
    (["optim=sgd", "optim.momentum=abc"], "optim.momentum"),
    (["model.dropout=1.5"], "model.dropout=1.5"),
    (["optim.weight_decay=-1"], "weight_decay"),
    (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size"),  # a ZeroDivisionError after epoch 1
    (["callbacks.model_checkpoint.monitor=no_such_metric"], "callbacks.model_checkpoint.monitor"),
]
if not torch.cuda.is_available():
    TRAIN.append((["trainer.accelerator=gpu"], "trainer"))


def one_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


@pytest.mark.subprocess
@pytest.mark.parametrize(("overrides", "key"), TRAIN, ids=[" ".join(o) for o, _ in TRAIN])
def test_a_bad_train_value_is_one_line_naming_its_key(overrides, key, tmp_path, data_root):
    result = run_cli("cnnstudy.train", *overrides, f"hydra.run.dir={tmp_path}", f"data.root={data_root}", *FEW_BATCHES)
    assert key in one_line(result)
    assert not (tmp_path / "checkpoints").exists()  # answered before anything trained


TOOLS = [
    (["cnnstudy.layer_table", "model.dropout=3"], "model.dropout"),
    (["cnnstudy.evaluate", "ckpt_path=/no/such.ckpt"], "/no/such.ckpt"),
    (["cnnstudy.visualize", "ckpt_path=/no/such.ckpt"], "/no/such.ckpt"),
    (["cnnstudy.visualize", "index=abc"], "index"),
    (["cnnstudy.report", "/no/such/sweep"], "/no/such/sweep"),
    (["cnnstudy.report", "--trains-above", "abc", "/tmp"], "--trains-above"),
    (["cnnstudy.bench", "--rounds", "x"], "--rounds"),
]


@pytest.mark.subprocess
@pytest.mark.parametrize(("args", "named"), TOOLS, ids=[" ".join(a) for a, _ in TOOLS])
def test_a_bad_value_to_a_tool_is_one_line(args, named, data_root, tmp_path):
    assert named in one_line(run_cli(*args, cwd=tmp_path))
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.subprocess
def test_bench_without_data_is_one_line(tmp_path):
    result = run_cli("cnnstudy.bench", "--quick", env={"CNNSTUDY_DATA_DIR": str(tmp_path)})
    assert "mnist not found" in one_line(result)


@pytest.mark.subprocess
def test_hydra_full_error_keeps_the_traceback(tmp_path, data_root):
    result = run_cli(
        "cnnstudy.train", "model.dropout=1.5", f"hydra.run.dir={tmp_path}", f"data.root={data_root}",
        env={"HYDRA_FULL_ERROR": "1"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "model.dropout=1.5" in result.stderr


@pytest.mark.subprocess
def test_a_sweep_records_a_jobs_mistake_in_one_console_line_and_goes_on(tmp_path, data_root):
    result = run_cli(
        "cnnstudy.train", "-m", "model.dropout=0.2,1.5", f"hydra.sweep.dir={tmp_path}", f"data.root={data_root}",
        *FEW_BATCHES,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    console = [line for line in result.stdout.splitlines() if "[cnnstudy][ERROR]" in line]
    assert len(console) == 1 and "model.dropout=1.5 must be a number in [0, 1)" in console[0]
    records = [json.loads((tmp_path / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert [r["status"] for r in records] == ["completed", "failed"]
    assert "model.dropout=1.5" in records[1]["error"]
