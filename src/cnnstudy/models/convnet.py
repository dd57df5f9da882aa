"""ConvNet: a plain stack of conv blocks and pools, then a classifier head.

The layer list is a short spec, VGG style:
    32      3x3 conv to 32 channels, padding 1 (output size kept)
    16k1    1x1 conv to 16 channels (padding (k-1)//2 = 0)
    16p0    3x3 conv, padding 0 (output shrinks by 2)
    16r     3x3 conv with a skip connection around it: act(conv(x)) + x
    M       2x2 max pool (followed by Dropout2d when conv_dropout > 0)
Every preset in conf/model/ (bn, nobn, deep_cnn, net*, cifar_cnn, session5) is one such spec.
"""

import re

import torch
from torch import nn

from cnnstudy.errors import UserError
from cnnstudy.models.blocks import ClassifierHead, ConvBlock

LAYER = re.compile(r"^(?P<out>\d+)(?:k(?P<k>\d+))?(?:p(?P<p>\d+))?(?P<res>r)?$")
HEADS = ("flatten_fc", "gap")


def parse_layer(item) -> dict | None:
    """A conv layer's settings from one spec item, or None for a max pool ('M')."""
    if str(item).upper() == "M":
        return None
    match = LAYER.match(str(item))
    if match is None:
        raise UserError(f"model.features item {item!r} is not a layer: use e.g. 32, 16k1, 16p0, 16r or M")
    kernel = int(match["k"] or 3)
    padding = int(match["p"]) if match["p"] is not None else (kernel - 1) // 2
    return {
        "out_channels": int(match["out"]),
        "kernel_size": kernel,
        "padding": padding,
        "residual": bool(match["res"]),
    }


class ConvNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        features: list,
        hidden: list[int] = (),
        norm: str = "none",
        norm_placement: str = "before_act",
        head_norm: bool = False,
        activation: str = "relu",
        conv_dropout: float = 0.0,
        dropout: float = 0.0,
        head: str = "flatten_fc",
    ):
        super().__init__()
        if head not in HEADS:
            raise UserError(f"model.head={head!r} is unknown: use flatten_fc or gap")
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for item in features:
            conv = parse_layer(item)
            if conv is None:
                layers.append(nn.MaxPool2d(2))
                if conv_dropout > 0:
                    layers.append(nn.Dropout2d(conv_dropout))
                size //= 2
            else:
                layers.append(ConvBlock(channels, **conv, norm=norm, placement=norm_placement, activation=activation))
                channels, size = conv["out_channels"], size + 2 * conv["padding"] - conv["kernel_size"] + 1
            if size < 1:
                raise UserError(f"model.features {list(features)} shrink a {image_size}px image to nothing")
        if head == "gap":
            layers.append(nn.AdaptiveAvgPool2d(1))
            size = 1
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(
            channels * size * size,
            list(hidden),
            num_classes,
            activation=activation,
            norm=norm if head_norm else "none",
            placement=norm_placement,
            dropout=dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
