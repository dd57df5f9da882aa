import inspect

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cnnstudy.builders import build_model, count_parameters
from cnnstudy.errors import find_user_error
from cnnstudy.models import ConvNet
from cnnstudy.models.blocks import ConvBlock

from conftest import CONF

# Every preset in conf/model/ is tested: the tests below are parametrised over the files, so a new one is
# picked up, and fails until its expected parameter count is stated here (counted by hand, not copied from
# the code). preset -> {data: trainable parameters}.
PRESETS = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))
PARAMS = {
    # from the architectures in the course material
    "nobn": {"mnist": 421_642},
    "bn": {"mnist": 422_090},
    "deep_cnn": {"mnist": 209_242, "cifar10": 270_970},  # on 3x32x32: conv1 takes 3 channels, the FC sees 32*8*8
    "deep_cnn_bn": {"mnist": 209_370},
    "net": {"cifar2": 18_090},
    "net_width": {"cifar2": 38_386},
    "net_dropout": {"cifar2": 38_386},  # net_width's: dropout has no parameters
    "net_batchnorm": {"cifar2": 38_386 + 2 * (32 + 16)},
    # convs 3->32, 32->16, 16->16 (with bias), FC 16*4*4->32, FC 32->2
    "net_depth": {"cifar2": (3 * 9 + 1) * 32 + (32 * 9 + 1) * 16 + (16 * 9 + 1) * 16 + (256 + 1) * 32 + 33 * 2},
    "net_res": {"cifar2": 16_130},  # net_depth's: the skip connection has no parameters
    # conv 3->32, 10 x (conv 32->32 without bias + BN), FC 32*8*8->32, FC 32->2
    "net_res_deep": {"cifar2": (3 * 9 + 1) * 32 + 10 * (32 * 32 * 9 + 2 * 32) + (2048 + 1) * 32 + 33 * 2},
    # convs 3->32->64->128, each with its bias and BN's 2 per channel, FC 128*4*4->10
    "cifar_cnn": {"cifar10": (3 * 9 + 3) * 32 + (32 * 9 + 3) * 64 + (64 * 9 + 3) * 128 + (2048 + 1) * 10},
    "session5": {"mnist": 19_146},
    # 19,146 + 2 x (16+16+32+16+32+16+16) BN parameters; the source's 19,418 and 19,300 are both off.
    "session5_bn": {"mnist": 19_434},
    "ioffe_mlp": {"mnist": 785 * 100 + 101 * 100 + 101 * 100 + 101 * 10},  # 784 -> 100 -> 100 -> 100 -> 10
}
SHAPES = {"mnist": (1, 28, 10), "cifar10": (3, 32, 10), "cifar2": (3, 32, 2)}


def test_convnet_base_config_states_the_constructors_defaults():
    """conf/base/convnet.yaml and ConvNet's signature are the family's defaults twice: they must agree."""
    base = OmegaConf.to_container(OmegaConf.load(CONF / "base" / "convnet.yaml"))
    assert base.pop("_target_") == "cnnstudy.models.ConvNet" and base.pop("features") == "???"
    defaults = {
        name: list(p.default) if isinstance(p.default, tuple) else p.default
        for name, p in inspect.signature(ConvNet).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert base == defaults


@pytest.mark.parametrize("model", sorted(set(PRESETS) | set(PARAMS)))
def test_parameter_counts(cfg_for, model):
    if model not in PRESETS:
        pytest.fail(f"PARAMS states {model!r}, which has no conf/model/{model}.yaml", pytrace=False)
    if model not in PARAMS:
        pytest.fail(
            f"conf/model/{model}.yaml is new: state its parameter count in PARAMS (tests/test_models.py)", pytrace=False
        )
    counted = {data: count_parameters(build_model(cfg_for(f"model={model}", f"data={data}"))) for data in PARAMS[model]}
    assert counted == PARAMS[model]


@pytest.mark.parametrize("data", list(SHAPES))
@pytest.mark.parametrize("model", PRESETS)
def test_every_preset_runs_forward_and_backward_on_every_dataset(cfg_for, model, data):
    channels, size, classes = SHAPES[data]
    net = build_model(cfg_for(f"model={model}", f"data={data}"))
    logits = net(torch.randn(4, channels, size, size))
    assert logits.shape == (4, classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_tied_residual_blocks_share_one_set_of_weights(cfg_for):
    independent = build_model(cfg_for("model=net_res_deep", "data=cifar2", "model.n_blocks=4"))
    tied = build_model(cfg_for("model=net_res_deep", "data=cifar2", "model.n_blocks=4", "model.tied_blocks=true"))
    convs = lambda m: [b[0].weight for b in m.features if isinstance(b, ConvBlock) and b.residual]  # noqa: E731
    assert len({w.data_ptr() for w in convs(independent)}) == 4
    assert len({w.data_ptr() for w in convs(tied)}) == 1
    block = 32 * 32 * 9 + 2 * 32  # conv (no bias) + BN
    assert count_parameters(independent) - count_parameters(tied) == 3 * block


def test_norm_placement_changes_the_order(cfg_for):
    before = build_model(cfg_for("model=bn", "model.norm_placement=before_act")).features[0]
    after = build_model(cfg_for("model=bn", "model.norm_placement=after_act")).features[0]
    assert [type(m) for m in before] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in after] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]


def test_gap_head_averages_the_last_feature_map(cfg_for):
    net = build_model(cfg_for("model=deep_cnn", "model.head=gap"))
    assert isinstance(net.features[-1], nn.AdaptiveAvgPool2d)
    assert net.head[1].in_features == 32
    assert count_parameters(net) == 209_242 - 128 * (32 * 7 * 7 - 32)


def test_residual_block_adds_its_input():
    block = ConvBlock(4, 4, residual=True)
    nn.init.zeros_(block[0].weight)
    nn.init.zeros_(block[0].bias)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(block(x), x)


def test_bad_layer_spec_is_a_user_error(cfg_for):
    with pytest.raises(Exception) as error:
        build_model(cfg_for("model=bn", "model.features=[32,X]"))
    assert "is not a layer" in str(find_user_error(error.value))
