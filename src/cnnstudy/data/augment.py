"""Batched augmentation: random parameters per sample, one `grid_sample` for the whole batch.

`RandomZoomRotate` reproduces the session-5 augmentation on tensors instead of PIL images:
with probability `crop_p` a CenterCrop(`crop_size`) resized back to full size (a zoom by
size / crop_size about the centre), then a rotation by U(-degrees, degrees), filling with 0.
Both are affine maps of the sampling grid, so they compose into one matrix per sample.
It runs on [0, 1] images before normalisation, so fill 0 is black, as `fill=0` was in the source.
Interpolation is bilinear for both (torchvision's RandomRotation defaults to nearest).
"""

import math

import torch
import torch.nn.functional as F

from cnnstudy import checks
from cnnstudy.errors import UserError


class RandomZoomRotate:
    def __init__(self, degrees: float = 10.0, crop_p: float = 0.1, crop_size: int = 22, image_size: int = 28):
        checks.positive("data.augment.degrees", degrees, zero_allowed=True)
        checks.probability("data.augment.crop_p", crop_p, one_allowed=True)
        if checks.whole("data.augment.crop_size", crop_size) > checks.whole("data.augment.image_size", image_size):
            raise UserError(f"data.augment.crop_size={crop_size} is larger than the image ({image_size})")
        self.degrees, self.crop_p = degrees, crop_p
        self.crop_scale = crop_size / image_size  # a centre crop resized back samples a smaller grid

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, device = images.shape[0], images.device
        angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(self.degrees)
        cropped = torch.rand(n, device=device) < self.crop_p
        scale = torch.where(cropped, self.crop_scale, 1.0)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
