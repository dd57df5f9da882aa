"""The shared building blocks every model family is made of."""

from dataclasses import dataclass

import torch
from torch import nn

from cnnstudy import checks
from cnnstudy.errors import UserError
from cnnstudy.models import batchnorm

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
}
NORMS = ("none", "bn", "bn_scratch", "gn", "ln", "noisy_bn")
PLACEMENTS = ("before_act", "after_act")


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UserError(f"model.activation={name!r} is unknown: use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@dataclass(frozen=True)
class Norm:
    """The normalisation layers of a model (`model.norm`) and their settings.

    On conv maps (dims=2) and, in the head, on FC features (dims=1):
        bn, bn_scratch  BatchNorm2d / BatchNorm1d (torch's, or the from-scratch one of batchnorm.py)
        noisy_bn        BatchNorm, then in training random noise whose distribution is drawn anew every step
                        (Santurkar et al. 2018, batchnorm.NoisyBatchNorm2d / 1d): `noise_kind` activation,
                        i.i.d. per activation with a per-channel mean in +-noise_mean_max and std in
                        [0, noise_std_max]; channel, one scale (log-std noise_scale_std) and shift (std
                        noise_mean_std) per channel for the whole batch
        gn              GroupNorm: `groups` groups of channels, statistics per sample and group; head: LayerNorm
        ln              LayerNorm over (C, H, W) per sample, as GroupNorm(1, C): one gamma/beta per channel,
                        like BN, not per element; head: LayerNorm over the feature vector
    GN has no 1-d form of its own (Wu & He normalise conv layers), so the head's FC features get the
    LayerNorm that ln gives them. Every kind has 2 parameters per channel, so parameter counts match BN's.
    """

    kind: str = "none"
    groups: int = 8
    noise_kind: str = "channel"
    noise_mean_std: float = 0.5
    noise_scale_std: float = 0.5
    noise_mean_max: float = 0.5
    noise_std_max: float = 1.25

    def __post_init__(self):
        if self.kind not in NORMS:
            raise UserError(f"model.norm={self.kind!r} is unknown: use one of {', '.join(NORMS)}")
        # checked whatever the kind, so a mistake does not wait for the day someone picks gn or noisy_bn
        checks.whole("model.norm_groups", self.groups)
        checks.positive("model.noise_mean_std", self.noise_mean_std, zero_allowed=True)
        checks.positive("model.noise_scale_std", self.noise_scale_std, zero_allowed=True)
        checks.positive("model.noise_mean_max", self.noise_mean_max, zero_allowed=True)
        checks.positive("model.noise_std_max", self.noise_std_max, zero_allowed=True)
        if self.noise_kind not in batchnorm.NOISE_KINDS:
            kinds = ", ".join(batchnorm.NOISE_KINDS)
            raise UserError(f"model.noise_kind={self.noise_kind!r} is unknown: use one of {kinds}")

    def layer(self, features: int, dims: int, where: str) -> nn.Module | None:
        """The norm over `features` channels (dims=2: conv maps, dims=1: FC features) of layer `where`, or None."""
        if self.kind == "none":
            return None
        if self.kind == "bn":
            return nn.BatchNorm2d(features) if dims == 2 else nn.BatchNorm1d(features)
        if self.kind == "bn_scratch":
            return batchnorm.BatchNorm2d(features) if dims == 2 else batchnorm.BatchNorm1d(features)
        if self.kind == "noisy_bn":
            noisy = batchnorm.NoisyBatchNorm2d if dims == 2 else batchnorm.NoisyBatchNorm1d
            return noisy(
                features,
                noise_kind=self.noise_kind,
                noise_mean_std=self.noise_mean_std,
                noise_scale_std=self.noise_scale_std,
                noise_mean_max=self.noise_mean_max,
                noise_std_max=self.noise_std_max,
            )
        if dims == 1:
            return nn.LayerNorm(features)
        if self.kind == "ln":
            return nn.GroupNorm(1, features)
        if features % self.groups:
            raise UserError(
                f"model.norm=gn: model.norm_groups={self.groups} does not divide the {features} channels of {where}"
            )
        return nn.GroupNorm(self.groups, features)


NO_NORM = Norm()


def ordered(layer: nn.Module, norm: nn.Module | None, activation: nn.Module, placement: str) -> list[nn.Module]:
    """layer -> norm -> act (before_act) or layer -> act -> norm (after_act)."""
    if placement not in PLACEMENTS:
        raise UserError(f"model.norm_placement={placement!r} is unknown: use before_act or after_act")
    if norm is None:
        return [layer, activation]
    return [layer, norm, activation] if placement == "before_act" else [layer, activation, norm]


class ConvBlock(nn.Sequential):
    """conv -> [norm] -> activation (order set by `placement`); with `residual`, the input is added back."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        norm: Norm = NO_NORM,
        placement: str = "before_act",
        activation: str = "relu",
        residual: bool = False,
        bias: bool = True,
    ):
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        norm_layer = norm.layer(out_channels, 2, where=f"conv {in_channels}->{out_channels}")
        super().__init__(*ordered(conv, norm_layer, make_activation(activation), placement))
        if residual and (in_channels != out_channels or 2 * padding != kernel_size - 1):
            raise UserError(f"a residual conv block needs equal in/out shapes ({in_channels}->{out_channels})")
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out + x if self.residual else out


class ClassifierHead(nn.Sequential):
    """Flatten -> (Linear -> [norm] -> act) per hidden size -> [Dropout] -> Linear(num_classes).

    `bias=False` drops the hidden Linears' biases where a norm follows them (BN's beta is that shift).
    """

    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        num_classes: int,
        activation: str = "relu",
        norm: Norm = NO_NORM,
        placement: str = "before_act",
        dropout: float = 0.0,
        bias: bool = True,
    ):
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            norm_layer = norm.layer(width, 1, where=f"linear {in_features}->{width}")
            linear = nn.Linear(in_features, width, bias=bias or norm_layer is None)
            layers += ordered(linear, norm_layer, make_activation(activation), placement)
            in_features = width
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)
