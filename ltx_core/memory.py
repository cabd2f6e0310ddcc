"""Device placement: components live where they were loaded and visit the compute device while used."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def free_device_memory() -> None:
    """Return cached blocks to the driver, so that the next component (or another program) gets them."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def on_device(module: nn.Module, device: torch.device | str) -> Iterator[nn.Module]:
    """Move `module` to `device` for the block and back to where it was afterwards (also on errors),
    so that only the component in use occupies the accelerator."""
    home = next((t.device for t in (*module.parameters(), *module.buffers())), torch.device("cpu"))
    if torch.device(device) == home:
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to(home)
        free_device_memory()
