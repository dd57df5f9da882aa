"""The global random state that dropout, augmentation and noisy BN draw from: saved into checkpoints (Lightning keeps
no RNG state, and an exactly resumed run needs the same stream), and kept around a measurement that must not change
the training that follows (the probes, the train-mode evaluation pass)."""

import contextlib

import torch


def rng_state() -> dict:
    """torch's CPU generator state and, where there is CUDA, every device's (the keys checkpoints hold)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back a `rng_state()`; a checkpoint written without CUDA resumes on a GPU machine, and the reverse."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def rng_kept():
    """The global random state as it was before the block, whatever the block drew."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
