"""Reading and writing checkpoints safely.

Checkpoints are only ever read with `weights_only=True`: tensors and plain containers, never
arbitrary pickled objects, so opening a checkpoint cannot run code. They are written to a temp file
and renamed, so a kill never leaves a truncated checkpoint behind.
"""

import os
import pickle
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cnnstudy.errors import StorageError, UserError

CONFIG_KEY = "cnnstudy"  # {"config": resolved train config, "choices": Hydra group choices}


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        """A failed write (disk full, permission lost, read-only file system) leaves no partial file and
        the previous checkpoint of that name intact, and is raised as a StorageError naming the path."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
            tmp.unlink(missing_ok=True)
            raise StorageError.of(path, e) from e


def load_checkpoint(path) -> dict:
    """A cnnstudy checkpoint as a dict, or a one-line UserError saying why it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):  # weights_only refused a pickled class or function
            raise UserError(f"{path} was refused: it holds pickled objects, not only tensors and plain data") from None
        raise UserError(f"{path} is not a checkpoint or is truncated") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a checkpoint or is truncated ({type(e).__name__})") from None
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise UserError(f"{path} is not a cnnstudy checkpoint (no config or state_dict in it)")
    return checkpoint
