"""ResNetDeep: the "NetResDeep" of Deep Learning with PyTorch ch. 8.

stem conv -> act -> pool -> n_blocks residual blocks (conv no bias -> BN -> act, + x) -> pool -> head.
The book builds the blocks as ``n_blocks * [ResBlock(...)]``: one block's weights at every
position. That is a bug in the book; here blocks are independent unless ``tied_blocks=True``,
kept so a study can show what the bug changed.
"""

import torch
from torch import nn

from cnnstudy import checks
from cnnstudy.models.blocks import ClassifierHead, ConvBlock, Norm


def residual_block(channels: int, norm: str, activation: str) -> ConvBlock:
    block = ConvBlock(channels, channels, norm=Norm(norm), activation=activation, residual=True, bias=False)
    conv, norm_layer = block[0], block[1]
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    if norm != "none":
        nn.init.constant_(norm_layer.weight, 0.5)
        nn.init.zeros_(norm_layer.bias)
    return block


class ResNetDeep(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        channels: int = 32,
        n_blocks: int = 10,
        tied_blocks: bool = False,
        hidden: list[int] = (32,),
        norm: str = "bn",
        activation: str = "relu",
    ):
        super().__init__()
        checks.whole("model.channels", channels)
        checks.whole("model.n_blocks", n_blocks, at_least=0)
        checks.flag("model.tied_blocks", tied_blocks)
        hidden = checks.whole_list("model.hidden", hidden)
        if tied_blocks:
            blocks = n_blocks * [residual_block(channels, norm, activation)]
        else:
            blocks = [residual_block(channels, norm, activation) for _ in range(n_blocks)]
        self.features = nn.Sequential(
            ConvBlock(in_channels, channels, activation=activation),
            nn.MaxPool2d(2),
            *blocks,
            nn.MaxPool2d(2),
        )
        size = image_size // 4
        self.head = ClassifierHead(channels * size * size, list(hidden), num_classes, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
