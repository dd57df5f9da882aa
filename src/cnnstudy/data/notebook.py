"""The course notebooks' data path and training step, kept as the reference the bench and the speedrun compare
against: a torchvision dataset with per-sample ToTensor + Normalize (CIFAR-10 as PIL images) in a shuffling
DataLoader, and a hand-written loop's step."""

import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cnnstudy.data.sources import load


class PilImages(Dataset):
    """CIFAR-10 the torchvision way: a PIL image per sample through the transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images.permute(0, 2, 3, 1).numpy(), labels.tolist(), transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def notebook_loader(cfg) -> DataLoader:
    transform = torchvision.transforms.Compose(
        [torchvision.transforms.ToTensor(), torchvision.transforms.Normalize(cfg.data.mean, cfg.data.std)]
    )
    if cfg.data.name == "mnist":
        dataset = torchvision.datasets.MNIST(cfg.data.root, train=True, download=False, transform=transform)
    else:
        dataset = PilImages(*load(cfg.data.name, cfg.data.root, True), transform)
    return DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True)


def notebook_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, channels_last: bool, bf16: bool = False) -> None:
    """One step of the notebooks' hand-written loop. `bf16`: the forward pass and loss under bf16 autocast, the
    weights, their gradients and the step in fp32 (Lightning's bf16-mixed)."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer.zero_grad()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
