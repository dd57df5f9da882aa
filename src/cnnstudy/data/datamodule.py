"""One LightningDataModule for every registered dataset (`cnnstudy.data.sources.DATASETS`).

The splits live in memory as uint8 tensors; a batch is fetched with one tensor index and turned
into normalised float32 in ``on_after_batch_transfer`` (on the training device, after the
transfer, so a GPU does that work). No PIL and no per-sample Python on the default path.
"""

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnstudy import checks
from cnnstudy.data.sources import dataset, default_root
from cnnstudy.errors import UserError


class TensorBatches(Dataset):
    """Images and labels that a DataLoader fetches a whole batch at a time (``__getitems__``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def _keep_batch(batch):
    return batch


class EpochShuffle(Sampler):
    """A permutation that depends only on (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        name: str,
        channels: int,
        image_size: int,
        num_classes: int,
        mean: list[float],
        std: list[float],
        root: str | None = None,
        batch_size: int = 100,
        eval_batch_size: int = 100,
        val_size: float | int = 0.1,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        num_workers: int = 0,
        download: bool = True,
        augment=None,
    ):
        super().__init__()
        self.source = dataset(name)
        checks.whole("data.batch_size", batch_size)
        checks.whole("data.eval_batch_size", eval_batch_size)
        checks.whole("data.channels", channels)
        checks.whole("data.image_size", image_size)
        checks.whole("data.num_classes", num_classes, at_least=2)
        checks.whole("data.split_seed", split_seed, at_least=0)
        checks.whole("data.shuffle_seed", shuffle_seed, at_least=0)
        checks.whole("data.num_workers", num_workers, at_least=0)
        checks.flag("data.download", download)
        for key, values in (("data.mean", mean), ("data.std", std)):
            if len(values) != channels or not all(checks.is_number(v) for v in values):
                raise UserError(f"{key}={list(values)!r} must hold one number per channel ({channels})")
        if min(std) <= 0:
            raise UserError(f"data.std={list(std)!r} must be > 0")
        if isinstance(val_size, float) and not 0 < val_size < 1:
            raise UserError(f"data.val_size={val_size!r} must be a fraction in (0, 1) or a count of images >= 1")
        if not isinstance(val_size, float):
            checks.whole("data.val_size", val_size)
        self.name, self.root = name, root or default_root()
        self.channels, self.image_size, self.num_classes = channels, image_size, num_classes
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.shuffle_seed = val_size, split_seed, shuffle_seed
        self.num_workers, self.download, self.augment = num_workers, download, augment
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        images, labels = self.source.load(self.root, True, self.download)
        self._check_shape(images)
        n_val = round(self.val_size * len(labels)) if isinstance(self.val_size, float) else int(self.val_size)
        if not 0 <= n_val < len(labels):
            raise UserError(f"data.val_size={self.val_size} leaves no training images (split has {len(labels)})")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed))
        train_idx, val_idx = order[n_val:].sort().values, order[:n_val].sort().values
        self.train_set = TensorBatches(images[train_idx], labels[train_idx])
        self.val_set = TensorBatches(images[val_idx], labels[val_idx])
        self.test_set = TensorBatches(*self.source.load(self.root, False, self.download))
        if self.batch_size > len(self.train_set):
            raise UserError(
                f"data.batch_size={self.batch_size} is larger than the training split ({len(self.train_set)} images)"
            )

    def _check_shape(self, images: torch.Tensor) -> None:
        """The data config's shape against the files (a new dataset's config written for another)."""
        expected = (self.channels, self.image_size, self.image_size)
        if tuple(images.shape[1:]) != expected:
            raise UserError(
                f"data.name={self.name!r} holds images of shape {tuple(images.shape[1:])}, but its config says "
                f"channels={self.channels}, image_size={self.image_size}: correct conf/data/{self.name}.yaml"
            )

    def _loader(self, dataset: TensorBatches, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = EpochShuffle(len(dataset), self.shuffle_seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=_keep_batch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    def normalize(self, images: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 in [0, 1] -> [augmented] -> (x - mean) / std per channel."""
        x = images.to(torch.float32).div_(255)
        if augment and self.augment is not None:
            x = self.augment(x)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.normalize(images, augment=training), labels
