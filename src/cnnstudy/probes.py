"""Probes of what BatchNorm does to training: Lightning callbacks, off by default (`probes=bn` turns them on).

    LayerStats      per Conv2d/Linear layer: gradient norm of the weight, mean/std/histogram of the output
    LandscapeProbe  the loss landscape along the gradient, after Santurkar et al. 2018
    FeatureMaps     first-layer filters and per-block feature maps of fixed validation images
    TestCurve       test accuracy and loss every k training steps (accuracy against steps, Ioffe & Szegedy fig. 1a)
    SigmoidInputs   percentiles of one last-hidden-layer sigmoid's input on the test images (their fig. 1b, c)

Their scalars go into the run record, probes.json beside metrics.json (what the report reads, whatever the
loggers), and straight to the Trainer's loggers at `trainer.global_step` rather than through `self.log`, so that
`log_every_n_steps` does not thin out measurements that are already taken only every k steps; histograms and
images go to a TensorBoard logger only. None of them changes what training computes: a run with them is bitwise
the run without them (parameters and buffers, tests/test_probes.py).

A new probe: a callback here that logs through `log_scalars`, a preset in conf/probes/, and its report section,
cnnstudy/report/probe_sections/<name>.py (that package's docstring says what it defines).
"""

import contextlib
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchvision.utils import make_grid

from cnnstudy import checks
from cnnstudy.callbacks import RunRecorder
from cnnstudy.errors import UserError
from cnnstudy.rng import rng_kept, rng_state, set_rng_state


def log_scalars(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """A probe's scalars at the current step: into the run record (probes.json, what the report reads) and to every
    logger (curves to look at)."""
    if recorder := RunRecorder.of(trainer):
        recorder.record.add_probes(trainer.global_step, metrics)
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)


def tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the Trainer's TensorBoard logger, or None when it has none."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def global_norm(tensors) -> torch.Tensor:
    """The L2 norm of all `tensors` taken as one vector."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


class LayerStats(L.Callback):
    """Every `every_n_steps` training steps, per Conv2d and Linear layer of `pl_module.model`:

        grad_norm/<layer>   L2 norm of the weight's gradient after backward (before any gradient clipping)
        act_mean/<layer>    mean of the layer's output on that step's batch
        act_std/<layer>     its std
        act/<layer>         a histogram of that output (TensorBoard loggers only)

    The forward hooks exist only from the start of a measured step to its backward, so other steps pay
    nothing and the extra forwards of LandscapeProbe on the same step are not counted.
    """

    def __init__(self, every_n_steps: int = 50, histograms: bool = True):
        self.every_n_steps = checks.whole("every_n_steps", every_n_steps)
        self.histograms = checks.flag("histograms", histograms)
        self._handles: list = []
        self._outputs: dict[str, torch.Tensor] = {}

    @staticmethod
    def layers(pl_module: L.LightningModule) -> list[tuple[str, nn.Module]]:
        return [(name, m) for name, m in pl_module.model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]

    def _keep(self, name: str, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._outputs.setdefault(name, output.detach())  # the first call is the training forward

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step % self.every_n_steps == 0:
            self._handles = [m.register_forward_hook(partial(self._keep, name)) for name, m in self.layers(pl_module)]

    def on_before_backward(self, trainer, pl_module, loss):
        self._remove_hooks()  # the training forward is done

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if not self._outputs:
            return
        outputs, self._outputs = self._outputs, {}
        metrics = {}
        writer = tensorboard(trainer) if self.histograms else None
        for name, layer in self.layers(pl_module):
            if layer.weight.grad is not None:
                metrics[f"grad_norm/{name}"] = torch.linalg.vector_norm(layer.weight.grad.float()).item()
            if name in outputs:
                out = outputs[name].float()
                metrics[f"act_mean/{name}"] = out.mean().item()
                metrics[f"act_std/{name}"] = out.std().item()
                if writer is not None:
                    writer.add_histogram(f"act/{name}", out, trainer.global_step)
        log_scalars(trainer, metrics)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # a step that skipped backward (training_step returned None) must not leave hooks behind
        self._remove_hooks()
        self._outputs = {}


class LandscapeProbe(L.Callback):
    """The loss landscape along the gradient, after Santurkar et al. 2018 ("How does batch normalization
    help optimization?"), every `every_n_steps` training steps on that step's batch.

    With g the step's gradient (before any clipping) and, for each step size eta, theta' = theta - eta*g:

        landscape/loss_min, loss_max          min / max over eta of L(theta')   (variation of the loss)
        landscape/grad_change_min, _max       min / max of ||grad L(theta') - g|| (gradient predictiveness)
        landscape/beta_smoothness             max of ||grad L(theta') - g|| / ||eta*g|| (effective beta-smoothness)
        landscape/grad_norm                   ||g||, to read the others against

    Step sizes are multiples of the optimizer's current learning rate (its first param group): eta = s * lr,
    so s = 1 is exactly one plain-SGD step, runs at the same lr (BN vs no BN) probe the same distances, and
    a schedule scales the probe with the steps training actually takes. The defaults look 5 % to 40 % of an
    SGD step ahead. Adam steps neither along g nor by lr*||g||: there the probe still measures the landscape
    along g, at distances comparable between runs of the same lr.

    It runs in `on_before_optimizer_step`, where the real gradients exist and the optimizer has not yet
    used them. It computes gradients with `torch.autograd.grad`, never `.backward()`, and restores
    parameters, gradients, all buffers (BN running stats, num_batches_tracked) and the global RNG
    afterwards, so the optimizer step that follows is the one it would have been. Forwards run in the
    training step's mode (train: BN uses batch statistics, the loss the optimizer actually descends) and
    replay the training step's random stream, so dropout draws the same masks as the real forward and the
    landscape is that of the function g came from. `loss_fn(pl_module(images), labels)` is the loss:
    cross-entropy, as in the Classifier.
    """

    def __init__(self, every_n_steps: int = 100, step_sizes=(0.05, 0.1, 0.2, 0.4), loss_fn=F.cross_entropy):
        self.every_n_steps = checks.whole("every_n_steps", every_n_steps)
        self.step_sizes = tuple(float(s) for s in checks.numbers("step_sizes", step_sizes, low=0, low_allowed=False))
        self.loss_fn = loss_fn
        self.last: dict[str, float] = {}  # the latest probe's numbers, for inspection and tests
        self._batch = None
        self._rng = None

    def setup(self, trainer, pl_module, stage):
        # g must be the gradient of the one batch the probe reuses
        if stage == "fit" and (not pl_module.automatic_optimization or trainer.accumulate_grad_batches != 1):
            raise UserError("LandscapeProbe needs automatic optimization and accumulate_grad_batches=1")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step % self.every_n_steps == 0:
            self._batch, self._rng = batch, rng_state()  # the RNG the training forward is about to draw from

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self._batch is None:
            return
        batch, self._batch = self._batch, None
        lr = optimizer.param_groups[0]["lr"]
        with trainer.precision_plugin.train_step_context():  # autocast etc. as in the training step
            self.last = self.probe(pl_module, batch, [s * lr for s in self.step_sizes], self._rng)
        log_scalars(trainer, self.last)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._batch = None  # a step without optimizer step must not probe a later step with this batch

    def probe(self, pl_module: nn.Module, batch, etas: list[float], rng: dict) -> dict[str, float]:
        """The landscape numbers at step sizes `etas`; leaves pl_module and the global RNG as it found them."""
        images, labels = batch
        params = [p for p in pl_module.parameters() if p.grad is not None]
        if not params:
            return {}
        g = [p.grad.detach().clone() for p in params]  # also the saved gradients
        theta = [p.detach().clone() for p in params]
        buffers = [b.detach().clone() for b in pl_module.buffers()]
        g_norm = global_norm(g).item()
        losses, changes, betas = [], [], []
        with rng_kept():  # the global RNG as it was: the training step draws on from there
            try:
                for eta in etas:
                    with torch.no_grad():
                        for p, p0, gi in zip(params, theta, g, strict=True):
                            p.copy_(p0 - eta * gi)
                    set_rng_state(rng)
                    with torch.enable_grad():  # optimizer.step may run its closure without grad
                        loss = self.loss_fn(pl_module(images), labels)
                        grads = torch.autograd.grad(loss, params, allow_unused=True)
                    change = global_norm(
                        [-gi if gn is None else gn.detach() - gi for gn, gi in zip(grads, g, strict=True)]
                    ).item()
                    losses.append(loss.item())
                    changes.append(change)
                    betas.append(change / (eta * g_norm) if g_norm > 0 else float("nan"))
            finally:
                with torch.no_grad():
                    for p, p0, gi in zip(params, theta, g, strict=True):
                        p.copy_(p0)
                        p.grad.copy_(gi)
                    for b, b0 in zip(pl_module.buffers(), buffers, strict=True):
                        b.copy_(b0)
        return {
            "landscape/loss_min": min(losses),
            "landscape/loss_max": max(losses),
            "landscape/grad_change_min": min(changes),
            "landscape/grad_change_max": max(changes),
            "landscape/beta_smoothness": max(betas),
            "landscape/grad_norm": g_norm,
        }


def tiles(x: torch.Tensor, nrow: int, min_size: int = 32) -> torch.Tensor:
    """A (3, H, W) image grid of the (N, C, H, W) tiles `x`, each scaled to its own range and blown up
    (nearest) to at least `min_size` pixels so that 3x3 filters and 7x7 maps are visible."""
    scale = max(1, min_size // x.shape[-1])
    x = F.interpolate(x.detach().float(), scale_factor=scale, mode="nearest") if scale > 1 else x.detach().float()
    return make_grid(x.cpu(), nrow=nrow, normalize=True, scale_each=True, padding=1)


class FeatureMaps(L.Callback):
    """At the end of every `every_n_epochs`-th validation epoch, TensorBoard images (step: global step):

        feature_maps/filters          the first Conv2d's weights (RGB tiles for 3 input channels)
        feature_maps/input            the fixed validation images
        feature_maps/<i>_<Block>      the output of block i of `model.features`, first `n_channels`
                                      channels: one row per image, one column per channel

    The images are the first `n_images` the first validation (the sanity check, if any) sees, after the
    datamodule's device-side normalisation, kept on the CPU: the same images every epoch, even with a
    shuffled validation loader. Rendering runs in the validation's eval mode without gradients: no BN
    statistic moves, no random number is drawn.
    """

    def __init__(self, every_n_epochs: int = 1, n_images: int = 8, n_channels: int = 8):
        self.every_n_epochs = checks.whole("every_n_epochs", every_n_epochs)
        self.n_images = checks.whole("n_images", n_images)
        self.n_channels = checks.whole("n_channels", n_channels)
        self.images: torch.Tensor | None = None

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        have = 0 if self.images is None else len(self.images)
        if dataloader_idx != 0 or have >= self.n_images:
            return
        new = batch[0][: self.n_images - have].detach().cpu()
        self.images = new if self.images is None else torch.cat([self.images, new])

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs or self.images is None:
            return
        writer = tensorboard(trainer)
        if writer is None:
            return
        for name, grid in feature_map_grids(pl_module.model, self.images.to(pl_module.device), self.n_channels).items():
            writer.add_image(f"feature_maps/{name}", grid, trainer.global_step)


def feature_map_grids(model: nn.Module, images: torch.Tensor, n_channels: int = 8) -> dict[str, torch.Tensor]:
    """Image grids of the first conv layer's filters, the input images, and the output of each block
    of `model.features` (first `n_channels` channels: a row per image, a column per channel).
    Called in eval mode without gradients, it changes nothing in the model."""
    grids = {}
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None:
        w, nrow = conv.weight, 8
        if w.shape[1] not in (1, 3):  # no colour to show: one grey tile per (out, in), a row per filter
            w, nrow = w.flatten(0, 1).unsqueeze(1), w.shape[1]
        grids["filters"] = tiles(w, nrow=nrow)
    x = images
    grids["input"] = tiles(x if x.shape[1] in (1, 3) else x[:, :1], nrow=len(x))
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        return grids
    with torch.no_grad():
        for i, block in enumerate(features):
            x = block(x)
            if x.dim() == 4 and x.shape[-1] > 1:  # skip a global pool's 1x1 output
                maps = x[:, :n_channels]
                grids[f"{i}_{type(block).__name__}"] = tiles(maps.flatten(0, 1).unsqueeze(1), nrow=maps.shape[1])
    return grids


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """`module` in eval mode without gradients for a measurement, every submodule's mode put back afterwards.
    Eval mode moves no BN statistic and draws no random number: the training that follows is unchanged."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training


def test_batches(trainer: L.Trainer, batch_size: int = 1000):
    """The test split of the Trainer's ImageDataModule, normalised as in testing, on the model's device."""
    data = trainer.datamodule
    device = trainer.lightning_module.device
    for start in range(0, len(data.test_set), batch_size):
        images, labels = (
            data.test_set.images[start : start + batch_size],
            data.test_set.labels[start : start + batch_size],
        )
        yield data.normalize(images.to(device)), labels.to(device)


class StepProbe(L.Callback):
    """Measures at step 0 (before the first update) and after every `every_n_steps`-th optimizer step, logging
    `measure`'s scalars at that global step."""

    def __init__(self, every_n_steps: int):
        self.every_n_steps = checks.whole("every_n_steps", every_n_steps)

    def measure(self, trainer, pl_module) -> dict[str, float]:
        raise NotImplementedError

    def on_train_start(self, trainer, pl_module):
        if trainer.global_step == 0:
            log_scalars(trainer, self.measure(trainer, pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every_n_steps == 0 and trainer.global_step > 0:
            log_scalars(trainer, self.measure(trainer, pl_module))


class TestCurve(StepProbe):
    """Test accuracy against training steps: every `every_n_steps` steps (and at step 0) the model, in eval
    mode, classifies the whole test split of the datamodule; logs test_curve/acc and test_curve/loss.
    The run's own validation stays once per epoch; its final test_acc is still that of the best checkpoint."""

    __test__ = False  # a callback, not a pytest class

    def measure(self, trainer, pl_module) -> dict[str, float]:
        correct, loss, count = 0, 0.0, 0
        with eval_mode(pl_module):
            for images, labels in test_batches(trainer):
                logits = pl_module(images)
                correct += (logits.argmax(1) == labels).sum().item()
                loss += F.cross_entropy(logits, labels, reduction="sum").item()
                count += len(labels)
        return {"test_curve/acc": correct / count, "test_curve/loss": loss / count}


class SigmoidInputs(StepProbe):
    """The distribution of one sigmoid's input over training, as Ioffe & Szegedy 2015 figure 1(b, c) show it:
    every `every_n_steps` steps (and at step 0), the input of unit `unit` of the model's last nn.Sigmoid (the
    last hidden layer's) on every test image, with the model in eval mode (BN on its running statistics);
    logs sigmoid_input/p<q> for each percentile q of `percentiles`."""

    def __init__(self, every_n_steps: int = 500, unit: int = 0, percentiles=(15, 50, 85)):
        super().__init__(every_n_steps)
        self.unit = checks.whole("unit", unit, at_least=0)
        self.percentiles = tuple(checks.numbers("percentiles", percentiles, low=0, high=100))

    def setup(self, trainer, pl_module, stage):
        sigmoids = [m for m in pl_module.model.modules() if isinstance(m, nn.Sigmoid)]
        if not sigmoids:
            raise UserError("SigmoidInputs needs a model with a sigmoid activation (model.activation=sigmoid)")
        self.sigmoid = sigmoids[-1]

    def measure(self, trainer, pl_module) -> dict[str, float]:
        inputs = []
        handle = self.sigmoid.register_forward_pre_hook(lambda module, args: inputs.append(args[0][:, self.unit]))
        try:
            with eval_mode(pl_module):
                for images, _ in test_batches(trainer):
                    pl_module(images)
        finally:
            handle.remove()
        values = torch.cat(inputs).float()
        quantiles = torch.quantile(
            values, torch.tensor(self.percentiles, dtype=values.dtype, device=values.device) / 100
        )
        return {f"sigmoid_input/p{q:g}": v.item() for q, v in zip(self.percentiles, quantiles, strict=True)}
