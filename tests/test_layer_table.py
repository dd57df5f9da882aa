import pytest
import torch
from torch import nn

from cnnstudy.builders import build_model, count_parameters
from cnnstudy.layer_table import format_table, layer_table

from conftest import run_cli

SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar2": (3, 32, 32)}


def table(cfg_for, *overrides: str) -> tuple[nn.Module, list[dict]]:
    cfg = cfg_for(*overrides)
    model = build_model(cfg)
    return model, layer_table(model, SHAPES[cfg.data.name])


def test_session5_receptive_fields_and_sizes(cfg_for):
    _, rows = table(cfg_for, "model=session5", "data=mnist")
    windowed = [row for row in rows if row["type"] in ("Conv2d", "MaxPool2d")]
    conv, pool = "Conv2d", "MaxPool2d"
    assert [row["type"] for row in windowed] == [conv, conv, conv, pool, conv, conv, pool, conv, conv]
    assert [row["rf"] for row in windowed] == [3, 5, 7, 8, 8, 12, 14, 14, 22]
    assert [row["jump"] for row in windowed] == [1, 1, 1, 2, 2, 2, 4, 4, 4]
    assert [row["out_shape"][1:] for row in windowed] == [(s, s) for s in (28, 28, 28, 14, 14, 14, 7, 7, 5)]
    assert [row["out_shape"][0] for row in windowed] == [16, 16, 32, 32, 16, 32, 32, 16, 16]
    assert rows[-2]["type"] == "Flatten" and rows[-2]["out_shape"] == (400,)
    assert rows[-1] == {
        "name": "head.1",
        "type": "Linear",
        "out_shape": (10,),
        "params": 4010,
        "shared": False,
        "rf": "global",
        "jump": None,
    }


@pytest.mark.parametrize(
    ("overrides", "total"),
    [
        (("model=session5", "data=mnist"), 19_146),
        (("model=bn", "data=mnist"), 422_090),
        (("model=session5_bn", "data=mnist"), 19_434),
        (("model=net_res_deep", "data=cifar2"), 159_330),
        (("model=net_res_deep", "data=cifar2", "model.tied_blocks=true"), 75_810),
    ],
)
def test_totals_equal_count_parameters(cfg_for, overrides, total):
    model, rows = table(cfg_for, *overrides)
    assert sum(row["params"] for row in rows) == count_parameters(model) == total
    assert format_table(rows).splitlines()[-1] == f"total trainable params: {total:,}"


def test_tied_blocks_get_a_row_per_call_and_count_once(cfg_for):
    _, rows = table(cfg_for, "model=net_res_deep", "data=cifar2", "model.tied_blocks=true")
    convs = [row for row in rows if row["type"] == "Conv2d"]
    assert [row["name"] for row in convs] == ["features.0.0"] + [f"features.{i}.0" for i in range(2, 12)]
    assert [row["params"] for row in convs] == [3 * 32 * 9 + 32, 32 * 32 * 9] + [0] * 9
    assert [row["shared"] for row in convs] == [False, False] + [True] * 9
    # stem 3, pool 4 (jump 2), then each 3x3 conv at jump 2 adds 4
    assert [row["rf"] for row in convs] == [3] + [4 + 4 * n for n in range(1, 11)]
    assert "shared" in format_table(rows)


def test_global_pooling_and_state_restored(cfg_for):
    model = build_model(cfg_for("model=cifar_cnn", "data=cifar10", "model.head=gap"))
    model.train()
    bn = model.features[0][1]
    before = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    rows = layer_table(model, (3, 32, 32))
    assert model.training
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.num_batches_tracked, before[1])
    gap = next(row for row in rows if row["type"] == "AdaptiveAvgPool2d")
    assert gap["out_shape"] == (128, 1, 1) and gap["rf"] == "global" and gap["jump"] is None
    assert [row["rf"] for row in rows if row["type"] == "MaxPool2d"] == [4, 10, 22]


def test_markdown_table(cfg_for):
    _, rows = table(cfg_for, "model=session5", "data=mnist")
    lines = format_table(rows, markdown=True).splitlines()
    assert lines[0].split() == ["|", "layer", "|", "type", "|", "output", "|", "params", "|", "rf", "|", "jump", "|"]
    assert set(lines[1]) <= set("|-: ")
    assert lines[2].split("|")[1:-1] == [
        " features.0.0 ",
        " Conv2d    ",
        " 16x28x28 ",
        "    160 ",
        "      3 ",
        "    1 ",
    ]
    assert len({len(line) for line in lines[: len(rows) + 2]}) == 1  # aligned


@pytest.mark.subprocess
def test_cli_prints_the_table_and_writes_nothing(tmp_path):
    result = run_cli("cnnstudy.layer_table", "model=session5", "data=mnist", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "model=session5 data=mnist input=1x28x28"
    assert lines[-1] == "total trainable params: 19,146"
    assert "features.8.0  Conv2d     16x5x5     2,320      22     4" in lines
    assert list(tmp_path.iterdir()) == []  # no outputs/, .hydra/ or log


@pytest.mark.subprocess
def test_cli_bad_model_name_fails(tmp_path):
    result = run_cli("cnnstudy.layer_table", "model=no_such_model", cwd=tmp_path)
    assert result.returncode != 0
    assert "no_such_model" in result.stderr
    assert list(tmp_path.iterdir()) == []
