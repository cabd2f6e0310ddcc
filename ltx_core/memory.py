"""Device placement: components live where they were loaded and visit the compute device while used."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from weakref import WeakKeyDictionary

import torch
from torch import nn

from .streaming import BlockStreamer, assign, module_tensors

# How components use the compute device:
#   default   each component moves there whole while it is used (the fastest that fits 24 GB);
#   low_vram  the transformer's and T5's blocks are streamed from pinned CPU memory (see streaming.py)
#             and the VAE decodes in tiles under LOW_VRAM_VAE_BUDGET: under 8 GB at 768×512×121.
MEMORY_MODES = ("default", "low_vram")
LOW_VRAM_VAE_BUDGET = 3 * 2**30  # bytes of VAE activations per tile

_streamers: WeakKeyDictionary[nn.Module, BlockStreamer] = WeakKeyDictionary()


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
    """Copy `module`'s weights to `device` for the block and point them back at their home copies
    afterwards (also on errors; no copy back, so the weights must not be changed inside), so that
    only the component in use occupies the accelerator."""
    home = next((t.device for t in (*module.parameters(), *module.buffers())), torch.device("cpu"))
    if same_device(device, home):
        yield module
        return
    tensors = module_tensors(module.modules())
    homes = [tensor.data for *_, tensor in tensors]
    for (owner, name, is_parameter, _), data in zip(tensors, homes, strict=True):
        assign(owner, name, is_parameter, data.to(device, copy=True))
    try:
        yield module
    finally:  # weights are read-only here: point back at the home copies instead of copying back
        for (owner, name, is_parameter, _), data in zip(tensors, homes, strict=True):
            assign(owner, name, is_parameter, data)
        free_device_memory()


def to_host(x: torch.Tensor) -> torch.Tensor:
    """Copy a device tensor to the CPU through pinned memory: ~50× faster than a pageable `.cpu()`
    for a decoded video (570 MB in 11 ms instead of 520 ms on an H100; PyTorch caches the buffer)."""
    if x.device.type != "cuda":
        return x.cpu()
    return torch.empty(x.shape, dtype=x.dtype, pin_memory=True).copy_(x)


def check_memory_mode(memory: str) -> str:
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory mode {memory!r} is not one of {', '.join(MEMORY_MODES)}")
    return memory


def streamer_for(module: nn.Module) -> BlockStreamer:
    """The module's BlockStreamer, made (and its blocks pinned) on first use. The module names its
    repeated blocks in a `streamed_blocks` property."""
    if module not in _streamers:
        _streamers[module] = BlockStreamer(module, module.streamed_blocks)
    return _streamers[module]


@contextmanager
def placed(module: nn.Module, device: torch.device | str, memory: str = "default") -> Iterator[nn.Module]:
    """Use `module` on `device` for the block: moved there whole (`on_device`), or in low_vram mode
    with its blocks streamed, when it has blocks to stream and the device is not the CPU."""
    check_memory_mode(memory)
    if memory == "low_vram" and torch.device(device).type != "cpu" and hasattr(module, "streamed_blocks"):
        with streamer_for(module).active(device):
            yield module
    else:
        with on_device(module, device):
            yield module


def vae_budget(memory: str) -> int | None:
    """The VAE's activation budget for a memory mode (None: from the device's free memory)."""
    return LOW_VRAM_VAE_BUDGET if check_memory_mode(memory) == "low_vram" else None
