"""A process of a multi-process generation started by torchrun: its place in the group (from the
environment torchrun sets: WORLD_SIZE, RANK, LOCAL_RANK), its device and the process group.

    torchrun --nproc-per-node 2 -m ltx_core.generate --prompt "…" --cfg-parallel 2

Every process loads the same files and runs the same pipeline call with the same settings; `Parallel`
splits each step's model call and the decode between them, and only the first process (rank 0) needs
to write or show anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from .layout import Parallel, init_parallel

# How long a collective may wait for the slowest process. Long: the first process downloads the model
# files (tens of GB) while the others wait for it at a barrier (`first_on_rank0`).
GROUP_TIMEOUT = timedelta(hours=2)


def launched_world() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank among them (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def start(
    cfg: int | None = None, ulysses: int | None = None, device: torch.device | str | None = None
) -> tuple[Parallel, torch.device]:
    """Join the group torchrun started (NCCL on CUDA, gloo on the CPU) and lay it out as cfg × ulysses
    (`layout.choose_layout`). Returns the layout and this process's device: `device` as given, and for
    CUDA without an index the GPU of this process's LOCAL_RANK (made the current one)."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=GROUP_TIMEOUT)
    return init_parallel(cfg, ulysses), device


def stop() -> None:
    """Leave the group (after the last collective)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def first_on_rank0(parallel: Parallel | None) -> Iterator[None]:
    """Run the block on rank 0 first and on the others after it (downloads: once, then from the cache)."""
    if parallel is None:
        yield
        return
    if parallel.rank != 0:
        dist.barrier(group=parallel.group)
    yield
    if parallel.rank == 0:
        dist.barrier(group=parallel.group)
