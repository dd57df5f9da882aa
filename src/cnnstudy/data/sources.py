"""The datasets by name (MNIST, CIFAR-10, CIFAR-2), as in-memory uint8 tensors (N, C, H, W) with int64 labels.

Each dataset is a `Source` subclass registered with `@register`; `data.name` looks it up in `DATASETS`.

Files are looked for under the data root in the layout of ``../shared/datasets``
(``MNIST/raw/*-ubyte``, ``cifar10/cifar10.npz``). If they are missing, torchvision's download is
tried (for users with internet); if that fails too, a ``UserError`` names the paths tried.

Decoded splits are cached in the process, keyed by the files' paths, sizes and modification
times: the jobs of a sweep (the basic launcher runs them in one process) share one copy and read
nothing from disk after the first, while a file replaced on disk is read (and checked) again.
Known files are checked against their published sha256 when they are read. Callers share the
returned tensors and must not modify them in place.
"""

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from cnnstudy.errors import UserError

SHA256 = {
    "MNIST/raw/train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "MNIST/raw/train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "MNIST/raw/t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "MNIST/raw/t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "cifar10/cifar10.npz": "1e55708c42d0051bc00b3610df632f97ebc05b1cf016b93090b12da8f92555aa",
}
MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def default_root() -> str:
    return os.environ.get("CNNSTUDY_DATA_DIR") or "./data"


def _verify(path: Path, relative: str) -> None:
    """Raise a one-line UserError if a known file is truncated or altered."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    if digest.hexdigest() != SHA256[relative]:
        raise UserError(
            f"dataset file {path} has the wrong sha256 (truncated or altered): replace it with the "
            f"original (see ../shared/datasets/README.md)"
        )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise UserError(f"dataset file {path} is truncated ({len(data)} bytes)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims))
    if len(data) != expected:
        raise UserError(f"dataset file {path} is truncated ({len(data)} of {expected} bytes)")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find(root: Path, relative: str) -> Path | None:
    for candidate in (root / relative, root / (relative + ".gz")):
        if candidate.exists():
            return candidate
    return None


def _try_download(dataset, root: Path, train: bool) -> None:
    """torchvision's download, for users with internet; any failure is reported by the caller."""
    try:
        dataset(root=str(root), train=train, download=True)
    except Exception:  # noqa: BLE001 - no internet, read-only root, ...: the caller names the paths tried
        return


def _verify_known(root: Path, paths: list[Path]) -> None:
    for path in paths:
        relative = path.relative_to(root).as_posix()
        if relative in SHA256:  # a .gz copy has no published digest
            _verify(path, relative)


class Source:
    """One dataset: where its files lie under the data root, how to download and decode them.

    A subclass registered with `@register` is what `data.name=<name>` selects (conf/data/<name>.yaml sets the
    name, the image shape and the normalisation). `files` and `decode` are all a new dataset must define."""

    name: str
    wanted = ""  # the files `files` looks for, as the error for missing data names them

    def files(self, root: Path, train: bool) -> list[Path] | None:
        """The files that hold one split under `root`, or None if any is missing."""
        raise NotImplementedError

    def decode(self, paths: list[Path], train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) uint8 and labels (N,) int64 from the files `files` found."""
        raise NotImplementedError

    def download(self, root: Path, train: bool) -> None:
        """Fetch the files into `root` (torchvision's download); by default there is none."""

    def select(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A view of the decoded split (a subset of classes, relabelled); by default all of it."""
        return images, labels

    def read_split(self, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One split: from the cache, or verified and decoded from its files (None if they are missing)."""
        paths = self.files(root, train)
        if paths is None:
            return None
        signature = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
        key = (type(self).decode, root, train)  # sources that decode the same files share one copy
        cached = _decoded.get(key)
        if cached is None or cached[0] != signature:
            _verify_known(root, paths)
            cached = _decoded[key] = (signature, self.decode(paths, train))
        return cached[1]

    def load(self, root: str, train: bool, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        root_path = Path(root).expanduser().resolve()
        result = self.read_split(root_path, train)
        if result is None and download:
            self.download(root_path, train)
            result = self.read_split(root_path, train)
        if result is None:
            tried = "torchvision's download failed" if download else "download is off (data.download=false)"
            raise UserError(
                f"{self.name} not found: looked for {root_path}/{self.wanted} and {tried}; "
                f"set data.root=<dir> or CNNSTUDY_DATA_DIR=<dir> to a folder with that layout "
                f"(e.g. ../shared/datasets)"
            )
        return self.select(*result)


# (a source's decode, root, train) -> (the files' (path, size, mtime_ns), (images, labels)): see the module docstring.
_decoded: dict[tuple, tuple[tuple, tuple[torch.Tensor, torch.Tensor]]] = {}

# data.name -> its source: filled by @register, here and in any module that defines a dataset
DATASETS: dict[str, Source] = {}


def register(source: type[Source]) -> type[Source]:
    """Class decorator: `data.name=<source.name>` reads this source."""
    DATASETS[source.name] = source()
    return source


def dataset(name: str) -> Source:
    if name not in DATASETS:
        raise UserError(f"data.name={name!r} is unknown: use one of {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


@register
class Mnist(Source):
    name = "mnist"
    wanted = "MNIST/raw/*-ubyte"

    def files(self, root: Path, train: bool) -> list[Path] | None:
        paths = [_find(root, f"MNIST/raw/{name}") for name in MNIST_FILES[train]]
        return None if None in paths else paths

    def decode(self, paths: list[Path], train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = (_read_idx(p) for p in paths)
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))

    def download(self, root: Path, train: bool) -> None:
        import torchvision

        _try_download(torchvision.datasets.MNIST, root, train)


@register
class Cifar10(Source):
    name = "cifar10"
    wanted = "cifar10/cifar10.npz"

    def files(self, root: Path, train: bool) -> list[Path] | None:
        npz = _find(root, "cifar10/cifar10.npz")
        if npz is not None:
            return [npz]
        batches = root / "cifar-10-batches-py"  # torchvision's download
        if batches.exists():
            return sorted(batches.glob("data_batch_*" if train else "test_batch")) or None
        return None

    def decode(self, paths: list[Path], train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        split = "train" if train else "test"
        if paths[0].suffix == ".npz":
            try:
                with np.load(paths[0]) as z:
                    images, labels = z[f"x_{split}"], z[f"y_{split}"]
            except (OSError, ValueError, KeyError) as e:
                raise UserError(f"dataset file {paths[0]} cannot be read ({e})") from None
        else:
            import torchvision

            ds = torchvision.datasets.CIFAR10(root=str(paths[0].parents[1]), train=train, download=False)
            images, labels = ds.data, np.asarray(ds.targets)
        images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return images, torch.from_numpy(labels.astype(np.int64))

    def download(self, root: Path, train: bool) -> None:
        import torchvision

        _try_download(torchvision.datasets.CIFAR10, root, train)


@register
class Cifar2(Cifar10):
    """CIFAR-10's airplanes and birds, relabelled 0 and 1."""

    name = "cifar2"
    classes = (0, 2)  # airplane -> 0, bird -> 1

    def select(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = torch.isin(labels, torch.tensor(self.classes))
        return images[keep], (labels[keep] == self.classes[1]).long()


def load(name: str, root: str, train: bool, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) uint8 and labels (N,) int64 of one split of a registered dataset."""
    return dataset(name).load(root, train, download)
