"""The ConvNet family's normalisation options beyond BN (gn, ln, noisy_bn) and model.init_scale."""

import pytest
import torch
from torch import nn

from cnnstudy.builders import build_model, count_parameters
from cnnstudy.errors import find_user_error
from cnnstudy.models.batchnorm import NoisyBatchNorm2d

from conftest import run_cli

# cifar_cnn on CIFAR-10: convs 896 + 18,496 + 73,856 and FC 2,048 -> 10 = 113,738; every norm adds a
# gamma and a beta per conv channel, 2 x (32 + 64 + 128) = 448.
CIFAR_CNN = {"none": 113_738, "bn": 114_186, "gn": 114_186, "ln": 114_186, "noisy_bn": 114_186}
# model=bn on MNIST normalises its FC(128) too (head_norm): BN1d, or LayerNorm(128) for gn and ln: 2 x 128.
BN_MODEL = {"none": 421_642, "bn": 422_090, "gn": 422_090, "ln": 422_090, "noisy_bn": 422_090}
CONV_NORM = {"gn": nn.GroupNorm, "ln": nn.GroupNorm, "noisy_bn": NoisyBatchNorm2d}
HEAD_NORM = {"gn": nn.LayerNorm, "ln": nn.LayerNorm, "noisy_bn": nn.BatchNorm1d}  # noisy 1d is a BatchNorm1d


@pytest.mark.parametrize("norm", [*CIFAR_CNN, "noisy_bn model.noise_kind=activation"])
def test_parameter_counts_per_norm(cfg_for, norm):
    norm, *options = norm.split()
    assert (
        count_parameters(build_model(cfg_for("model=cifar_cnn", "data=cifar10", f"model.norm={norm}", *options)))
        == (CIFAR_CNN[norm])
    )
    mnist_bn = build_model(cfg_for("model=bn", "data=mnist", f"model.norm={norm}", *options))
    assert count_parameters(mnist_bn) == BN_MODEL[norm]


@pytest.mark.parametrize("norm", list(CONV_NORM))
def test_each_norm_sits_in_every_conv_block_and_the_head_and_trains(cfg_for, norm):
    net = build_model(cfg_for("model=bn", "data=cifar10", f"model.norm={norm}"))
    conv_norms = [block[1] for block in net.features if isinstance(block, nn.Sequential)]
    assert [type(m) for m in conv_norms] == [CONV_NORM[norm]] * 2
    assert isinstance(net.head[2], HEAD_NORM[norm])
    if norm != "noisy_bn":
        assert [m.num_groups for m in conv_norms] == ([8, 8] if norm == "gn" else [1, 1])
    logits = net(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_ln_normalises_each_sample_over_channels_and_positions(cfg_for):
    ln = build_model(cfg_for("model=cifar_cnn", "data=cifar10", "model.norm=ln")).features[0][1]
    x = torch.randn(5, 32, 8, 8) * torch.arange(1, 6).view(5, 1, 1, 1) + 3  # a different scale per sample
    y = ln(x)  # gamma = 1, beta = 0 at init
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(1, 2, 3), correction=0), torch.ones(5), atol=1e-3, rtol=0)


def test_gn_groups_that_do_not_divide_the_channels_are_a_one_line_user_error(cfg_for):
    with pytest.raises(Exception) as error:
        build_model(cfg_for("model=cifar_cnn", "data=cifar10", "model.norm=gn", "model.norm_groups=12"))
    message = str(find_user_error(error.value))
    assert message == "model.norm=gn: model.norm_groups=12 does not divide the 32 channels of conv 3->32"


@pytest.mark.subprocess
def test_gn_bad_groups_stop_the_cli_with_one_line(tmp_path, data_root):
    result = run_cli(
        "cnnstudy.train", "model=cifar_cnn", "data=cifar10", "model.norm=gn", "model.norm_groups=12",
        f"data.root={data_root}", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model.norm=gn: model.norm_groups=12 does not divide the 32 channels of conv 3->32"
    ]


def test_unknown_norm_names_the_choices(cfg_for):
    with pytest.raises(Exception) as error:
        build_model(cfg_for("model=cifar_cnn", "model.norm=batchnorm"))
    assert "use one of none, bn, bn_scratch, gn, ln, noisy_bn" in str(find_user_error(error.value))


# --- noisy BN (Santurkar et al. 2018) -------------------------------------------------------------------


def trained_pair() -> tuple[NoisyBatchNorm2d, nn.BatchNorm2d]:
    """A noisy BN and a plain BN with the same parameters and running stats (moved off their init)."""
    torch.manual_seed(0)
    noisy = NoisyBatchNorm2d(16, noise_mean_std=0.5, noise_scale_std=0.5)
    with torch.no_grad():
        noisy.weight.uniform_(0.5, 2.0)
        noisy.bias.uniform_(-1.0, 1.0)
    for _ in range(3):
        noisy(torch.randn(8, 16, 5, 5) * 3 + 2)
    plain = nn.BatchNorm2d(16)
    plain.load_state_dict(noisy.state_dict())
    return noisy, plain


def test_noisy_bn_shifts_and_scales_each_channel_anew_every_training_step():
    noisy, plain = trained_pair()
    x = torch.randn(8, 16, 5, 5) * 3 + 2
    clean, first = plain(x), noisy(x)
    # The statistics are still BN's: the noise comes after, and the running stats moved alike.
    torch.testing.assert_close(noisy.running_mean, plain.running_mean)
    torch.testing.assert_close(noisy.running_var, plain.running_var)
    second = noisy(x)
    assert not torch.allclose(first, second)
    for y in (first, second):
        # Per channel the noise is an affine map of BN's output: y = scale_c * clean + shift_c, scale_c > 0.
        centred = y - y.mean(dim=(0, 2, 3), keepdim=True)
        clean_centred = clean - clean.mean(dim=(0, 2, 3), keepdim=True)
        scale = centred.std(dim=(0, 2, 3)) / clean_centred.std(dim=(0, 2, 3))
        torch.testing.assert_close(centred, clean_centred * scale.view(1, -1, 1, 1), atol=1e-4, rtol=1e-4)
        assert (scale > 0).all() and (scale - 1).abs().min() > 1e-4  # non-unit variance in every channel
        shift = y.mean(dim=(0, 2, 3)) - scale * clean.mean(dim=(0, 2, 3))
        assert shift.abs().min() > 1e-4  # a non-zero mean in every channel


def test_noisy_bn_without_noise_is_plain_bn_in_training():
    noisy, plain = trained_pair()
    noisy.noise_mean_std = noisy.noise_scale_std = 0.0
    x = torch.randn(8, 16, 5, 5)
    torch.testing.assert_close(noisy(x), plain(x), atol=0, rtol=0)


def test_noisy_bn_adds_no_noise_in_eval():
    noisy, plain = trained_pair()
    noisy.eval(), plain.eval()
    x = torch.randn(8, 16, 5, 5) * 3 + 2
    first = noisy(x)
    assert torch.equal(first, noisy(x))
    assert torch.equal(first, plain(x))


def test_activation_noise_is_iid_per_activation_from_a_distribution_drawn_anew_per_channel_and_step():
    noisy, plain = trained_pair()
    noisy.noise_kind = "activation"
    x = torch.randn(64, 16, 16, 16) * 3 + 2  # 16,384 activations per channel
    clean = plain(x)
    drawn = []
    for step in range(2):
        torch.manual_seed(step)
        noise = noisy(x) - clean
        torch.manual_seed(step)  # the forward's first draws are this step's distribution
        mean, std = noisy.noise_distribution(clean)
        drawn.append(mean)
        assert (mean.abs() <= 0.5).all() and (std <= 1.25).all() and (std > 0).all()
        # Over the batch and the positions each channel's noise has the drawn mean and std: 5 standard errors
        # of the sample mean, and 5 % of the std (its relative standard error here is 0.6 %).
        torch.testing.assert_close(noise.mean(dim=(0, 2, 3)), mean, atol=5 * std.max().item() / 128, rtol=0)
        torch.testing.assert_close(noise.std(dim=(0, 2, 3)), std, atol=0, rtol=0.05)
        # i.i.d. per activation: within a channel the noise is not one value (as the channel kind's shift is),
        # and neighbouring positions and samples are uncorrelated
        centred = (noise - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        assert (centred[:, :, :, 1:] * centred[:, :, :, :-1]).mean().abs() < 0.02
        assert (centred[1:] * centred[:-1]).mean().abs() < 0.02
    # a new distribution every step, and a different one per channel (non-zero mean, non-unit variance)
    assert (drawn[0] - drawn[1]).abs().min() > 1e-4
    assert drawn[0].std() > 0.1 and len(set(drawn[0].tolist())) == 16


def test_activation_noise_is_off_in_eval():
    noisy, plain = trained_pair()
    noisy.noise_kind = "activation"
    noisy.eval(), plain.eval()
    x = torch.randn(8, 16, 5, 5) * 3 + 2
    assert torch.equal(noisy(x), plain(x))


def test_unknown_noise_kind_names_the_choices(cfg_for):
    with pytest.raises(Exception) as error:
        build_model(cfg_for("model=cifar_cnn", "model.norm=noisy_bn", "model.noise_kind=sample"))
    assert "model.noise_kind='sample' is unknown: use one of channel, activation" in str(find_user_error(error.value))


@pytest.mark.parametrize("kind", ["channel", "activation"])
def test_noisy_bn_model_is_random_in_training_and_the_bn_model_in_eval(cfg_for, kind):
    torch.manual_seed(0)
    noisy = build_model(cfg_for("model=cifar_cnn", "data=cifar10", "model.norm=noisy_bn", f"model.noise_kind={kind}"))
    assert {m.noise_kind for m in noisy.modules() if isinstance(m, NoisyBatchNorm2d)} == {kind}
    plain = build_model(cfg_for("model=cifar_cnn", "data=cifar10", "model.norm=bn"))
    x = torch.randn(6, 3, 32, 32)
    assert not torch.allclose(noisy.train()(x), noisy.train()(x))
    plain.load_state_dict(noisy.state_dict())  # the same keys: noisy BN is a BatchNorm with noise
    noisy.eval(), plain.eval()
    assert torch.equal(noisy(x), noisy(x))
    assert torch.equal(noisy(x), plain(x))


# --- init scale ---------------------------------------------------------------------------------------------


def test_init_scale_multiplies_conv_and_linear_weights_only(cfg_for):
    nets = {}
    for scale in (1.0, 2.0):
        torch.manual_seed(0)
        nets[scale] = build_model(cfg_for("model=bn", "data=mnist", f"model.init_scale={scale}"))
    ones, twos = nets[1.0].state_dict(), nets[2.0].state_dict()
    weights = [n for n, m in nets[1.0].named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(weights) == 4  # 2 convs, FC(128), the last FC
    for name, tensor in ones.items():
        if name.removesuffix(".weight") in weights and name.endswith(".weight"):
            assert torch.equal(twos[name], 2 * tensor), name
            assert twos[name].std() / tensor.std() == pytest.approx(2.0)
        else:  # biases and the BN parameters and buffers keep their init
            assert torch.equal(twos[name], tensor), name


def test_init_scale_must_be_positive(cfg_for):
    with pytest.raises(Exception) as error:
        build_model(cfg_for("model=cifar_cnn", "model.init_scale=0"))
    assert "model.init_scale=0" in str(find_user_error(error.value))


# --- the norm_batch_size study's arms -------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [2, 4, 8, 32, 128])
def test_norm_batch_size_arms_scale_the_lr_linearly_and_see_the_same_images(cfg_for, batch):
    cfg = cfg_for("experiment=norm_batch_size", f"arm/norm_batch_size=b{batch}")
    assert cfg.data.batch_size == batch
    assert cfg.optim.lr == pytest.approx(0.01 * batch / 128)
    assert cfg.trainer.limit_train_batches * batch == 15_360 and cfg.trainer.max_epochs == 5
