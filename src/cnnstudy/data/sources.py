"""Load MNIST and CIFAR-10 as in-memory uint8 tensors (N, C, H, W) with int64 labels.

Files are looked for under the data root in the layout of ``../shared/datasets``
(``MNIST/raw/*-ubyte``, ``cifar10/cifar10.npz``). If they are missing, torchvision's download is
tried (for users with internet); if that fails too, a ``UserError`` names the paths tried.
Known files are checked against their published sha256 once per process.
"""

import gzip
import hashlib
import os
from functools import cache
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
CIFAR2_CLASSES = (0, 2)  # airplane -> 0, bird -> 1


def default_root() -> str:
    return os.environ.get("CNNSTUDY_DATA_DIR") or "./data"


@cache
def _verify(path: Path, relative: str) -> None:
    """Raise a one-line UserError if a known file is truncated or altered (hashed once per process)."""
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
            if candidate.name == Path(relative).name and relative in SHA256:
                _verify(candidate, relative)
            return candidate
    return None


def _try_download(name: str, root: Path) -> None:
    """torchvision's download, for users with internet; any failure is reported by the caller."""
    import torchvision

    try:
        if name == "mnist":
            for train in (True, False):
                torchvision.datasets.MNIST(root=str(root), train=train, download=True)
        else:
            torchvision.datasets.CIFAR10(root=str(root), train=True, download=True)
    except Exception:  # noqa: BLE001 - no internet, read-only root, ...: the caller names the paths tried
        return


def _load_mnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    paths = [_find(root, f"MNIST/raw/{name}") for name in MNIST_FILES[train]]
    if None in paths:
        return None
    images, labels = (_read_idx(p) for p in paths)
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _load_cifar10(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    split = "train" if train else "test"
    npz = _find(root, "cifar10/cifar10.npz")
    if npz is not None:
        try:
            with np.load(npz) as z:
                images, labels = z[f"x_{split}"], z[f"y_{split}"]
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"dataset file {npz} cannot be read ({e})") from None
    elif (root / "cifar-10-batches-py").exists():
        import torchvision

        ds = torchvision.datasets.CIFAR10(root=str(root), train=train, download=False)
        images, labels = ds.data, np.asarray(ds.targets)
    else:
        return None
    images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return images, torch.from_numpy(labels.astype(np.int64))


@cache
def load(name: str, root: str, train: bool, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) uint8 and labels (N,) int64 of one split of mnist, cifar10 or cifar2."""
    loader = _load_mnist if name == "mnist" else _load_cifar10
    base = "mnist" if name == "mnist" else "cifar10"
    root_path = Path(root).expanduser()
    result = loader(root_path, train)
    if result is None and download:
        _try_download(base, root_path)
        result = loader(root_path, train)
    if result is None:
        wanted = "MNIST/raw/*-ubyte" if base == "mnist" else "cifar10/cifar10.npz"
        tried = "torchvision's download failed" if download else "download is off (data.download=false)"
        raise UserError(
            f"{name} not found: looked for {root_path.resolve()}/{wanted} and {tried}; "
            f"set data.root=<dir> or CNNSTUDY_DATA_DIR=<dir> to a folder with that layout "
            f"(e.g. ../shared/datasets)"
        )
    images, labels = result
    if name == "cifar2":
        keep = torch.isin(labels, torch.tensor(CIFAR2_CLASSES))
        images, labels = images[keep], (labels[keep] == CIFAR2_CLASSES[1]).long()
    return images, labels
