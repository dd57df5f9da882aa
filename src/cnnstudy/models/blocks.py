"""The shared building blocks every model family is made of."""

import torch
from torch import nn

from cnnstudy.errors import UserError

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "elu": nn.ELU}
NORMS = ("none", "bn", "bn_scratch")
PLACEMENTS = ("before_act", "after_act")


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UserError(f"model.activation={name!r} is unknown: use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def make_norm(kind: str, features: int, dims: int) -> nn.Module | None:
    """A BatchNorm over `features` channels (dims=2: conv maps, dims=1: FC features), or None."""
    if kind == "none":
        return None
    if kind == "bn":
        return nn.BatchNorm2d(features) if dims == 2 else nn.BatchNorm1d(features)
    if kind == "bn_scratch":
        from cnnstudy.models import batchnorm

        return batchnorm.BatchNorm2d(features) if dims == 2 else batchnorm.BatchNorm1d(features)
    raise UserError(f"model.norm={kind!r} is unknown: use one of {', '.join(NORMS)}")


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
        norm: str = "none",
        placement: str = "before_act",
        activation: str = "relu",
        residual: bool = False,
        bias: bool = True,
    ):
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        super().__init__(*ordered(conv, make_norm(norm, out_channels, 2), make_activation(activation), placement))
        if residual and (in_channels != out_channels or 2 * padding != kernel_size - 1):
            raise UserError(f"a residual conv block needs equal in/out shapes ({in_channels}->{out_channels})")
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out + x if self.residual else out


class ClassifierHead(nn.Sequential):
    """Flatten -> (Linear -> [BN1d] -> act) per hidden size -> [Dropout] -> Linear(num_classes)."""

    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        num_classes: int,
        activation: str = "relu",
        norm: str = "none",
        placement: str = "before_act",
        dropout: float = 0.0,
    ):
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            linear = nn.Linear(in_features, width)
            layers += ordered(linear, make_norm(norm, width, 1), make_activation(activation), placement)
            in_features = width
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_features, num_classes))
        super().__init__(*layers)
