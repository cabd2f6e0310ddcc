"""Device placement: components live where they were loaded and visit the compute device while used."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def free_device_memory() -> None:
    """Return cached blocks to the driver, so that the next component (or another program) gets them.
    (No gc.collect(): with the text encoder's many modules alive it costs ~0.3 s a call.)"""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """ "cuda" and "cuda:0" (the current device) are the same place."""
    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    current = torch.cuda.current_device() if a.type == "cuda" else 0
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


@contextmanager
def on_device(module: nn.Module, device: torch.device | str) -> Iterator[nn.Module]:
    """Move `module` to `device` for the block and back to where it was afterwards (also on errors),
    so that only the component in use occupies the accelerator."""
    home = next((t.device for t in (*module.parameters(), *module.buffers())), torch.device("cpu"))
    if same_device(device, home):
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to(home)
        free_device_memory()


def to_host(x: torch.Tensor) -> torch.Tensor:
    """Copy a device tensor to the CPU through pinned memory: ~50× faster than a pageable `.cpu()`
    for a decoded video (570 MB in 11 ms instead of 520 ms on an H100; PyTorch caches the buffer)."""
    if x.device.type != "cuda":
        return x.cpu()
    return torch.empty(x.shape, dtype=x.dtype, pin_memory=True).copy_(x)
