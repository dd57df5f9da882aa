"""ConvNet: a plain stack of conv blocks and pools, then a classifier head.

The layer list is a short spec, VGG style:
    32      3x3 conv to 32 channels, padding 1 (output size kept)
    16k1    1x1 conv to 16 channels (padding (k-1)//2 = 0)
    16p0    3x3 conv, padding 0 (output shrinks by 2)
    16r     3x3 conv with a skip connection around it: act(conv(x)) + x
    M       2x2 max pool (followed by Dropout2d when conv_dropout > 0)
Every preset in conf/model/ (bn, nobn, deep_cnn, net*, cifar_cnn, session5) is one such spec; their shared
defaults are conf/base/convnet.yaml, which states this constructor's defaults.

`norm` picks the normalisation of every conv block (and, with `head_norm`, of the hidden FC layers):
none, bn, bn_scratch, gn (`norm_groups` groups), ln or noisy_bn (`noise_kind` and its settings); see
`blocks.Norm`. `init_scale` multiplies every conv and linear weight after torch's default init (1.0: as is).
"""

import re

import torch
from torch import nn

from cnnstudy import checks
from cnnstudy.errors import UserError
from cnnstudy.models.blocks import NO_NORM, ClassifierHead, ConvBlock, Norm

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
    if int(match["out"]) < 1 or kernel < 1:
        raise UserError(f"model.features item {item!r} has no channels or no kernel: widths and k must be >= 1")
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
        norm_groups: int = 8,
        noise_kind: str = "channel",
        noise_mean_std: float = 0.5,
        noise_scale_std: float = 0.5,
        noise_mean_max: float = 0.5,
        noise_std_max: float = 1.25,
        init_scale: float = 1.0,
    ):
        super().__init__()
        if head not in HEADS:
            raise UserError(f"model.head={head!r} is unknown: use flatten_fc or gap")
        checks.positive("model.init_scale", init_scale)  # 1.0 keeps torch's default init
        checks.probability("model.dropout", dropout)
        checks.probability("model.conv_dropout", conv_dropout)
        checks.flag("model.head_norm", head_norm)
        hidden = checks.whole_list("model.hidden", hidden)
        if not list(features):
            raise UserError("model.features is empty: give the layer list, e.g. [32, M, 64, M]")
        noise = {"noise_kind": noise_kind, "noise_mean_std": noise_mean_std, "noise_scale_std": noise_scale_std}
        noise |= {"noise_mean_max": noise_mean_max, "noise_std_max": noise_std_max}
        norms = Norm(norm, groups=norm_groups, **noise)
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
                layers.append(ConvBlock(channels, **conv, norm=norms, placement=norm_placement, activation=activation))
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
            norm=norms if head_norm else NO_NORM,
            placement=norm_placement,
            dropout=dropout,
        )
        if init_scale != 1.0:
            with torch.no_grad():
                for module in self.modules():
                    if isinstance(module, nn.Conv2d | nn.Linear):
                        module.weight.mul_(init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
