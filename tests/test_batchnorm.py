"""The from-scratch BatchNorm (model.norm=bn_scratch) against torch's, value for value."""

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from cnnstudy.builders import build_model
from cnnstudy.models import batchnorm

PAIRS = {1: (batchnorm.BatchNorm1d, nn.BatchNorm1d), 2: (batchnorm.BatchNorm2d, nn.BatchNorm2d)}
# (our class, torch's class, input shape): 1d on (N, C) and (N, C, L), 2d on (N, C, H, W).
CASES = [(*PAIRS[1], (16, 5)), (*PAIRS[1], (8, 5, 7)), (*PAIRS[2], (8, 3, 5, 4))]
CASE_IDS = ["1d-NC", "1d-NCL", "2d"]
VARIANTS = [
    {},
    {"momentum": 0.3, "eps": 1e-3},
    {"momentum": None},
    {"affine": False},
    {"bias": False},
    {"track_running_stats": False},
    {"affine": False, "track_running_stats": False},
]
EXACT = {"atol": 1e-10, "rtol": 0.0}


def random_affine(module: nn.Module) -> nn.Module:
    """Give gamma and beta values far from their ones/zeros init, so a swapped or dropped term shows."""
    with torch.no_grad():
        if module.weight is not None:
            module.weight.uniform_(0.5, 2.0)
        if module.bias is not None:
            module.bias.uniform_(-1.0, 1.0)
    return module


def twins(ours_cls, theirs_cls, num_features: int, dtype=torch.float64, **kwargs):
    """Our module and torch's with identical parameters and buffers."""
    theirs = random_affine(theirs_cls(num_features, **kwargs).to(dtype))
    ours = ours_cls(num_features, **kwargs).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def step(module: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, then backward of sum(y * upstream); returns y and dL/dx. (A plain y.sum() would give dx = 0.)"""
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    (y * upstream).sum().backward()
    return y.detach(), x.grad


def assert_same_state(ours: nn.Module, theirs: nn.Module, **tol) -> None:
    for (name, a), (other, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert name == other
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name}: {m}")
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, **tol, msg=lambda m, name=name: f"{name}.grad: {m}")


# --- the hand-written backward ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (10, 4), (5, 3, 6)], ids=["2d", "1d-NC", "1d-NCL"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck(shape, training):
    gen = torch.Generator().manual_seed(0)
    c = shape[1]
    x = (torch.randn(shape, dtype=torch.float64, generator=gen) * 2 + 1).requires_grad_(True)
    weight = (torch.rand(c, dtype=torch.float64, generator=gen) + 0.5).requires_grad_(True)
    bias = torch.randn(c, dtype=torch.float64, generator=gen).requires_grad_(True)
    running_mean = torch.randn(c, dtype=torch.float64, generator=gen)
    running_var = torch.rand(c, dtype=torch.float64, generator=gen) + 0.5

    def fn(x, weight, bias):
        return batchnorm.batch_norm(x, running_mean.clone(), running_var.clone(), weight, bias, training, 0.1, 1e-5)

    assert torch.autograd.gradcheck(fn, (x, weight, bias))
    # Without gamma and beta (affine=False) too.
    assert torch.autograd.gradcheck(lambda x: fn(x, None, None), (x,))


def test_backward_is_not_autograd_through_the_forward():
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    y = batchnorm.BatchNorm2d(3)(x)
    assert type(y.grad_fn).__name__ == "_BatchNormFunctionBackward"
    with pytest.raises(RuntimeError):  # once_differentiable: no silent, wrong double backward
        (torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)[0]).sum().backward()


# --- against torch.nn.BatchNorm1d / 2d --------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
@pytest.mark.parametrize(("ours_cls", "theirs_cls", "shape"), CASES, ids=CASE_IDS)
def test_matches_torch_over_training_steps_then_eval(ours_cls, theirs_cls, shape, kwargs):
    torch.manual_seed(0)
    ours, theirs = twins(ours_cls, theirs_cls, shape[1], **kwargs)
    for i in range(4):
        # A different scale and shift per step, so the running stats move and momentum matters.
        x = torch.randn(shape, dtype=torch.float64) * (1 + i) + 3 - 2 * i
        upstream = torch.randn(shape, dtype=torch.float64)
        y_ours, dx_ours = step(ours, x, upstream)
        y_theirs, dx_theirs = step(theirs, x, upstream)
        torch.testing.assert_close(y_ours, y_theirs, **EXACT)
        torch.testing.assert_close(dx_ours, dx_theirs, **EXACT)
        assert_same_state(ours, theirs, **EXACT)  # running stats, num_batches_tracked, gamma/beta grads
        ours.zero_grad()
        theirs.zero_grad()
    if ours.track_running_stats:
        assert int(ours.num_batches_tracked) == 4
        assert not torch.allclose(ours.running_mean, torch.zeros_like(ours.running_mean))

    ours.eval()
    theirs.eval()
    x = torch.randn(shape, dtype=torch.float64) * 2 + 1
    upstream = torch.randn(shape, dtype=torch.float64)
    y_ours, dx_ours = step(ours, x, upstream)
    y_theirs, dx_theirs = step(theirs, x, upstream)
    torch.testing.assert_close(y_ours, y_theirs, **EXACT)
    torch.testing.assert_close(dx_ours, dx_theirs, **EXACT)
    assert_same_state(ours, theirs, **EXACT)  # eval leaves the running stats alone


@pytest.mark.parametrize("dims", [1, 2])
def test_turning_tracking_off_after_construction_freezes_the_running_stats_like_torch(dims):
    torch.manual_seed(0)
    ours, theirs = twins(*PAIRS[dims], 4)
    shape = (8, 4) if dims == 1 else (8, 4, 3, 3)
    x, upstream = torch.randn(shape, dtype=torch.float64) * 2 - 1, torch.randn(shape, dtype=torch.float64)
    for module in (ours, theirs):
        step(module, x, upstream)  # running stats off their init
        module.track_running_stats = False
    x = torch.randn(shape, dtype=torch.float64) + 5
    y_ours, dx_ours = step(ours, x, upstream)  # training: batch stats, the running ones left alone
    y_theirs, dx_theirs = step(theirs, x, upstream)
    torch.testing.assert_close(y_ours, y_theirs, **EXACT)
    torch.testing.assert_close(dx_ours, dx_theirs, **EXACT)
    assert_same_state(ours, theirs, **EXACT)
    assert int(ours.num_batches_tracked) == 1
    # eval still normalises by the (frozen) running stats
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), **EXACT)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_last_matches_torch(dtype):
    torch.manual_seed(0)
    ours, theirs = twins(*PAIRS[2], 6, dtype=dtype)
    tol = EXACT if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    for _ in range(3):
        x = (torch.randn(8, 6, 5, 7, dtype=dtype) * 3 + 2).contiguous(memory_format=torch.channels_last)
        upstream = torch.randn(8, 6, 5, 7, dtype=dtype).contiguous(memory_format=torch.channels_last)
        y_ours, dx_ours = step(ours, x, upstream)
        y_theirs, dx_theirs = step(theirs, x, upstream)
        assert y_ours.dtype == dtype
        assert y_ours.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y_ours, y_theirs, **tol)
        torch.testing.assert_close(dx_ours, dx_theirs, **tol)
        assert_same_state(ours, theirs, **tol)


def test_bfloat16_input_is_normalised_in_float32_like_torch():
    torch.manual_seed(0)
    ours, theirs = twins(*PAIRS[2], 4, dtype=torch.float32)
    x = (torch.randn(16, 4, 6, 6) * 0.1 + 50).bfloat16()  # a mean this large, in bf16 stats, would wreck xhat
    upstream = torch.randn(16, 4, 6, 6).bfloat16()
    y_ours, dx_ours = step(ours, x, upstream)
    y_theirs, dx_theirs = step(theirs, x, upstream)
    assert y_ours.dtype == dx_ours.dtype == torch.bfloat16
    torch.testing.assert_close(y_ours.float(), y_theirs.float(), atol=0.02, rtol=0.02)
    torch.testing.assert_close(dx_ours.float(), dx_theirs.float(), atol=0.05, rtol=0.02)
    assert_same_state(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("ours_cls", "good", "bad_rank"),
    [(batchnorm.BatchNorm2d, (2, 3, 4, 4), (2, 3, 4)), (batchnorm.BatchNorm1d, (2, 3), (2, 3, 4, 4))],
)
def test_rejects_wrong_rank_wrong_channels_and_single_value_batches(ours_cls, good, bad_rank):
    assert ours_cls(3)(torch.randn(good)).shape == good
    with pytest.raises(ValueError, match="input"):
        ours_cls(3)(torch.randn(bad_rank))
    with pytest.raises(ValueError, match="channels"):
        ours_cls(4)(torch.randn(good))
    single = (1, 3) + good[2:] if len(good) == 2 else (1, 3, 1, 1)
    with pytest.raises(ValueError, match="more than 1 value"):
        ours_cls(3)(torch.randn(single))
    assert ours_cls(3).eval()(torch.randn(single)).shape == single  # eval uses the running stats: fine


# --- state dicts ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
@pytest.mark.parametrize("dims", [1, 2])
def test_state_dict_keys_match_torch_and_load_both_ways(dims, kwargs):
    ours_cls, theirs_cls = PAIRS[dims]
    shape = (8, 4) if dims == 1 else (8, 4, 3, 3)
    torch.manual_seed(0)
    theirs = random_affine(theirs_cls(4, **kwargs))
    theirs(torch.randn(shape) * 2 + 1)  # move the running stats off their init
    ours = ours_cls(4, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]

    ours.load_state_dict(theirs.state_dict())  # torch -> ours
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name

    ours(torch.randn(shape) - 3)  # our own training step, then ours -> a fresh torch module
    back = random_affine(theirs_cls(4, **kwargs))
    back.load_state_dict(ours.state_dict())
    for (name, a), (_, b) in zip(back.state_dict().items(), ours.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    if ours.track_running_stats:
        assert int(back.num_batches_tracked) == 2


# --- in the project's model ----------------------------------------------------------------------------------


def test_bn_scratch_model_trains_like_the_torch_bn_model(cfg_for):
    models = {}
    for norm in ("bn", "bn_scratch"):
        torch.manual_seed(0)  # BN init draws no random numbers, so conv/linear weights come out the same
        models[norm] = build_model(cfg_for("model=bn", f"model.norm={norm}", "optim=sgd", "optim.momentum=0.9"))
    ref, ours = models["bn"], models["bn_scratch"]
    kinds = lambda m, cls: sum(isinstance(x, cls) for x in m.modules())  # noqa: E731
    assert kinds(ours, batchnorm._BatchNorm) == kinds(ref, nn.modules.batchnorm._BatchNorm) == 3
    assert kinds(ours, nn.modules.batchnorm._BatchNorm) == 0
    assert_same_state(ours, ref, atol=0.0, rtol=0.0)
    initial = {n: t.clone() for n, t in ours.state_dict().items()}

    # SGD, not Adam: the conv biases feed a BN, so their gradient is zero up to rounding noise, and Adam
    # would scale that noise (different in each implementation) up to steps of size lr.
    optimizers = {name: instantiate(cfg_for("optim=sgd", "optim.momentum=0.9").optim)(m.parameters())
                  for name, m in models.items()}  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, target = torch.randn(32, 1, 28, 28, generator=gen), torch.randint(0, 10, (32,), generator=gen)
        logits = {}
        for name, model in models.items():
            optimizers[name].zero_grad()
            logits[name] = model(x)
            nn.functional.cross_entropy(logits[name], target).backward()
            optimizers[name].step()
        torch.testing.assert_close(logits["bn_scratch"], logits["bn"], atol=1e-5, rtol=1e-5)
    assert_same_state(ours, ref, atol=1e-5, rtol=1e-5)
    # Everything trained except the biases of the layers feeding a BN: BN subtracts the batch mean, so a
    # per-channel shift before it cannot change the loss and gets a zero gradient (in both implementations).
    stuck = [n for n, p in ours.state_dict().items() if p.is_floating_point() and torch.allclose(p, initial[n])]
    assert stuck == ["features.0.0.bias", "features.2.0.bias", "head.1.bias"]

    x = torch.randn(64, 1, 28, 28, generator=gen)
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x), atol=1e-5, rtol=1e-5)
