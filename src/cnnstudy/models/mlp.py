"""MLP: fully connected hidden layers on the flattened image, no convolutions.

It is the shared `ClassifierHead` on its own: flatten -> (Linear -> [norm] -> act) per `hidden` width ->
Linear(num_classes). Built for Ioffe & Szegedy 2015's MNIST net (figure 1: 3 hidden layers of 100 sigmoid
units, conf/model/ioffe_mlp.yaml), any widths, activation and norm work.

`norm` (none, bn, bn_scratch, gn, ln, noisy_bn; see `blocks.Norm`'s 1-d forms) goes between each hidden
Linear and its activation (`norm_placement`), and a normed Linear has no bias: the norm's shift replaces it,
as in Ioffe & Szegedy's section 3.1. `init_std` draws every Linear weight from N(0, init_std^2) and zeroes
the biases ("small random Gaussian values"); None keeps torch's default init.
"""

import torch
from torch import nn

from cnnstudy import checks
from cnnstudy.models.blocks import ClassifierHead, Norm


class MLP(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        hidden: list[int] = (100, 100, 100),
        norm: str = "none",
        norm_placement: str = "before_act",
        activation: str = "sigmoid",
        dropout: float = 0.0,
        init_std: float | None = None,
    ):
        super().__init__()
        hidden = checks.whole_list("model.hidden", hidden)
        checks.probability("model.dropout", dropout)
        if init_std is not None:
            checks.positive("model.init_std", init_std)
        self.head = ClassifierHead(
            in_channels * image_size * image_size,
            hidden,
            num_classes,
            activation=activation,
            norm=Norm(norm),
            placement=norm_placement,
            dropout=dropout,
            bias=False,
        )
        if init_std is not None:
            with torch.no_grad():
                for module in self.modules():
                    if isinstance(module, nn.Linear):
                        module.weight.normal_(0.0, init_std)
                        if module.bias is not None:
                            module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)
