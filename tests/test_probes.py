"""The probes of src/cnnstudy/probes.py measure without changing training, and measure the right numbers."""

import copy
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnstudy.errors import UserError
from cnnstudy.models import ConvNet
from cnnstudy.module import Classifier
from cnnstudy.probes import FeatureMaps, LandscapeProbe, LayerStats, SigmoidInputs
from cnnstudy.rng import rng_state

LANDSCAPE_KEYS = {
    "landscape/loss_min",
    "landscape/loss_max",
    "landscape/grad_change_min",
    "landscape/grad_change_max",
    "landscape/beta_smoothness",
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def loader(n_batches: int, seed: int, shuffle: bool = False) -> DataLoader:
    """`n_batches` batches of 8 random 1x8x8 images with labels in 0..2, the same for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(8 * n_batches, 1, 8, 8, generator=gen)
    labels = torch.randint(0, 3, (8 * n_batches,), generator=gen)
    order = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(TensorDataset(images, labels), batch_size=8, shuffle=shuffle, generator=order)


def classifier(dropout: float = 0.5) -> Classifier:
    L.seed_everything(0, verbose=False)
    model = ConvNet(1, 8, 3, features=[4, "M"], hidden=[8], norm="bn", head_norm=True, dropout=dropout)
    optimizer = partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    return Classifier(model, optimizer=optimizer, num_classes=3, channels_last=False)


def fit(module, path, train, callbacks=(), val=None, **trainer_args) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=trainer_args.pop("max_epochs", 1),
        logger=TensorBoardLogger(str(path), name="tb"),
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        log_every_n_steps=1,
        **trainer_args,
    )
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    return trainer


def events(trainer: L.Trainer) -> EventAccumulator:
    acc = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_probes_leave_the_training_trajectory_bitwise_unchanged(tmp_path):
    plain = classifier()
    initial = copy.deepcopy(plain.state_dict())
    fit(plain, tmp_path / "plain", loader(20, seed=1), val=loader(2, seed=2))

    probed = classifier()
    landscape, stats = LandscapeProbe(every_n_steps=3), LayerStats(every_n_steps=2)
    probes = [landscape, stats, FeatureMaps(n_images=4)]
    trainer = fit(probed, tmp_path / "probed", loader(20, seed=1), probes, val=loader(2, seed=2))

    # the probes did run and did move the model while probing (steps 0, 3, ..., 18 and 0, 2, ..., 18)
    scalars = events(trainer)
    assert [e.step for e in scalars.Scalars("landscape/loss_max")] == [0, 3, 6, 9, 12, 15, 18]
    assert [e.step for e in scalars.Scalars("grad_norm/head.1")] == list(range(0, 20, 2))
    assert landscape.last["landscape/loss_min"] < landscape.last["landscape/loss_max"]
    # and yet: every parameter and buffer (BN running stats, num_batches_tracked) is bitwise the plain run's
    for kind in ("named_parameters", "named_buffers"):
        ours, theirs = dict(getattr(probed, kind)()), dict(getattr(plain, kind)())
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert torch.equal(ours[name], theirs[name]), f"{name} differs with probes on"
    # and there was a trajectory to compare: weights and BN statistics moved
    for name in ("model.head.1.weight", "model.features.0.1.running_mean"):
        assert not torch.equal(plain.state_dict()[name], initial[name])


def test_probe_replays_the_steps_dropout_and_restores_model_and_rng():
    module = classifier(dropout=0.5)  # train mode: BN on batch statistics, dropout on
    images, labels = next(iter(loader(1, seed=1)))
    step_rng = rng_state()
    F.cross_entropy(module(images), labels).backward()
    torch.rand(1)  # move the global RNG on, so that a probe which does not restore it shows
    rng, state = torch.get_rng_state(), copy.deepcopy(module.state_dict())
    grads = [p.grad.clone() for p in module.parameters()]

    numbers = LandscapeProbe().probe(module, (images, labels), [1e-4], step_rng)

    # the same dropout masks as the step g came from: a tiny step barely changes the gradient
    # (other masks would change it by about ||g||)
    assert numbers["landscape/grad_change_max"] < 1e-2 * numbers["landscape/grad_norm"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert module.training and all(m.training for m in module.modules())
    for name, value in module.state_dict().items():
        assert torch.equal(value, state[name]), name
    for p, g in zip(module.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)


class LeastSquares(L.LightningModule):
    """L(w) = mean((Xw - y)^2): a quadratic, so every landscape number has a closed form."""

    def __init__(self):
        super().__init__()
        self.model = nn.Linear(4, 1, bias=False)

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_landscape_numbers_match_the_closed_form_of_a_quadratic(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 1, generator=gen)
    torch.manual_seed(0)
    module = LeastSquares()
    w = module.model.weight.detach().double().flatten().clone()
    probe = LandscapeProbe(every_n_steps=1, step_sizes=(0.1, 0.5, 1.0), loss_fn=F.mse_loss)
    trainer = fit(module, tmp_path, DataLoader(TensorDataset(x, y), batch_size=16), [probe], max_steps=1)

    # by hand, in float64: g = 2/n X^T (Xw - y), Hessian H = 2/n X^T X, and for theta' = w - eta g:
    # grad L(theta') - g = -eta H g, so grad_change = eta ||Hg|| and beta = ||Hg|| / ||g|| for every eta
    X, Y = x.double(), y.double().flatten()
    H = 2 / len(X) * X.T @ X
    g = 2 / len(X) * X.T @ (X @ w - Y)
    etas = [s * 0.5 for s in (0.1, 0.5, 1.0)]  # step sizes are multiples of the lr
    losses = [((X @ (w - eta * g) - Y) ** 2).mean().item() for eta in etas]
    hg = torch.linalg.vector_norm(H @ g).item()
    expected = {
        "landscape/loss_min": min(losses),
        "landscape/loss_max": max(losses),
        "landscape/grad_change_min": min(etas) * hg,
        "landscape/grad_change_max": max(etas) * hg,
        "landscape/beta_smoothness": hg / torch.linalg.vector_norm(g).item(),
        "landscape/grad_norm": torch.linalg.vector_norm(g).item(),
    }
    assert probe.last == pytest.approx(expected, rel=1e-4)
    eigenvalues = torch.linalg.eigvalsh(H)
    assert eigenvalues[0] <= probe.last["landscape/beta_smoothness"] <= eigenvalues[-1] * (1 + 1e-5)
    logged = events(trainer)
    assert LANDSCAPE_KEYS <= set(logged.Tags()["scalars"])
    assert logged.Scalars("landscape/beta_smoothness")[0].value == pytest.approx(
        expected["landscape/beta_smoothness"], rel=1e-4
    )


def test_layer_stats_logs_each_conv_and_linear_layer(tmp_path):
    module = classifier(dropout=0.0)
    start = copy.deepcopy(module.model)
    trainer = fit(module, tmp_path, loader(5, seed=1), [LayerStats(every_n_steps=2)], max_steps=5)

    # step 0, by hand: the initial model on the first batch, in train mode
    images, labels = next(iter(loader(5, seed=1)))
    outputs = {}
    layers = {name: m for name, m in start.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    assert list(layers) == ["features.0.0", "head.1", "head.4"]

    def keep(name, module, inputs, out):
        outputs[name] = out.detach()

    for name, layer in layers.items():
        layer.register_forward_hook(partial(keep, name))
    F.cross_entropy(start.train()(images), labels).backward()

    logged = events(trainer)
    tags = set(logged.Tags()["scalars"])
    assert {t for t in tags if t.startswith("grad_norm/")} == {f"grad_norm/{name}" for name in layers}
    assert set(logged.Tags()["histograms"]) == {f"act/{name}" for name in layers}
    for name, layer in layers.items():
        grad_norms = logged.Scalars(f"grad_norm/{name}")
        assert [e.step for e in grad_norms] == [0, 2, 4]
        assert all(0 < e.value < float("inf") for e in grad_norms)
        assert grad_norms[0].value == pytest.approx(layer.weight.grad.norm().item(), rel=1e-5)
        assert logged.Scalars(f"act_mean/{name}")[0].value == pytest.approx(outputs[name].mean().item(), rel=1e-5)
        assert logged.Scalars(f"act_std/{name}")[0].value == pytest.approx(outputs[name].std().item(), rel=1e-5)


def test_feature_maps_shows_the_same_images_every_epoch(tmp_path):
    maps = FeatureMaps(n_images=4, n_channels=2)
    # a shuffled validation loader: its first batch changes per epoch, the probe's images must not
    trainer = fit(classifier(), tmp_path, loader(3, seed=1), [maps], loader(2, seed=2, shuffle=True), max_epochs=2)

    logged = events(trainer)
    blocks = {"feature_maps/0_ConvBlock", "feature_maps/1_MaxPool2d"}
    assert set(logged.Tags()["images"]) == {"feature_maps/filters", "feature_maps/input"} | blocks
    assert maps.images.shape == (4, 1, 8, 8)
    inputs = logged.Images("feature_maps/input")
    assert [e.step for e in inputs] == [3, 6]
    assert inputs[0].encoded_image_string == inputs[1].encoded_image_string
    filters = logged.Images("feature_maps/filters")
    assert filters[0].encoded_image_string != filters[1].encoded_image_string  # training moved them
    for tag in blocks:
        # a row per image, a column per channel; tiles blown up to 32 px, 1 px padding
        first = logged.Images(tag)[0]
        assert (first.height, first.width) == (4 * 33 + 1, 2 * 33 + 1)


def test_bn_probes_config_composes(cfg_for):
    assert not cfg_for().probes  # off by default
    probes = [instantiate(c) for c in cfg_for("probes=bn").probes.values()]
    assert [type(p) for p in probes] == [LayerStats, LandscapeProbe, FeatureMaps]
    assert probes[1].step_sizes == (0.05, 0.1, 0.2, 0.4)


def test_bad_intervals_are_refused():
    with pytest.raises(UserError, match="every_n_steps=0 must be a positive whole number"):
        LayerStats(every_n_steps=0)
    with pytest.raises(UserError, match=r"step_sizes=\[0.1, -0.1\] must hold numbers > 0"):
        LandscapeProbe(step_sizes=(0.1, -0.1))
    with pytest.raises(UserError, match=r"percentiles=\[15, 150\] must hold numbers >= 0 and <= 100"):
        SigmoidInputs(percentiles=(15, 150))
