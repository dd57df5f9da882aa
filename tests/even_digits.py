"""A dataset defined outside the package, as a user would add one: MNIST's even digits, relabelled 0-4.
Importing it registers `data.name=even_digits`; `python -m even_digits [overrides]` trains on it through
`cnnstudy.train`. Its config is EVEN_DIGITS_CONFIG, written to a --config-dir by the tests."""

import runpy

from cnnstudy.data.sources import Mnist, register

EVEN_DIGITS_CONFIG = """\
defaults:
  - /base/data@_here_
  - _self_
name: even_digits
channels: 1
image_size: 28
num_classes: 5
mean: [0.1307]
std: [0.3081]
"""


@register
class EvenDigits(Mnist):
    name = "even_digits"

    def select(self, images, labels):
        keep = labels % 2 == 0
        return images[keep], labels[keep] // 2


if __name__ == "__main__":
    runpy.run_module("cnnstudy.train", run_name="__main__")
