"""Block streaming: a model's repeated blocks stay in CPU memory and visit the GPU one at a time.

While a `BlockStreamer` is active, the owner's small parts (embeddings, projections, norms) sit on the
compute device, and each block's weights are copied into one of `prefetch + 1` device slots just
before the block runs. The copy of the next block is issued on a side CUDA stream while the current
block computes, so on a GPU the transfers hide behind the arithmetic whenever a block's compute takes
longer than its copy (the 2B transformer at 768×512×121 with guidance computes ~4 ms per 137 MB
block; on an H100 its streamed forward is bit-equal to the resident one and peaks at 0.85 GiB).
Device memory for weights is then the slots plus the small parts: ~0.35 GB for the 2B transformer
instead of 3.9 GB, ~1 GB for T5-XXL instead of 9.5 GB.

Each block's parameters and buffers are packed once into one host buffer; between visits they point
into it, so the model works as before (on the CPU) outside the `active` block. For asynchronous
copies the buffers are page-locked in place (`cudaHostRegister`) while pinned, and unlocked in place
by `unpin`: no copy either way, and exactly the packed bytes are locked (the 2B model's 3.76 GB lock
in 0.2-0.4 s and unlock in 0.08 s on an H200 host; copies from them run at ~51 GB/s, as from PyTorch's
pinned memory). PyTorch's own pinned allocator would round every block up to a power of two (256 MiB
for a 137 MB block: 7 GiB for the 2B model) and keep freed blocks cached for the life of the process.

The streamer holds its owner weakly, so a registry keyed by the owner (`memory.streamer_for`) lets
both go when the owner is dropped; its page locks are released then too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import mmap
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)
ALIGN = 256  # bytes: every tensor's offset in a packed block, more than any dtype's alignment
PORTABLE = 1  # cudaHostRegisterPortable: pinned for every CUDA context, so any GPU copies from it
_alive: weakref.WeakSet[BlockStreamer] = weakref.WeakSet()


@dataclass(frozen=True)
class _Slot:
    """Where one tensor of a block lives inside the block's packed bytes."""

    module: nn.Module
    name: str
    is_parameter: bool
    offset: int
    dtype: torch.dtype
    shape: torch.Size

    def view(self, flat: torch.Tensor) -> torch.Tensor:
        nbytes = self.shape.numel() * self.dtype.itemsize
        return flat[self.offset : self.offset + nbytes].view(self.dtype).view(self.shape)

    def point_at(self, flat: torch.Tensor) -> None:
        tensor = self.view(flat)
        if self.is_parameter:
            self.module._parameters[self.name].data = tensor
        else:
            self.module._buffers[self.name] = tensor


def module_tensors(modules: Iterator[nn.Module]) -> list[tuple[nn.Module, str, bool, torch.Tensor]]:
    """(module, name, is_parameter, tensor) of every parameter and buffer, each shared one once."""
    found, seen = [], set()
    for module in modules:
        for is_parameter, tensors in ((True, module._parameters), (False, module._buffers)):
            for name, tensor in tensors.items():
                if tensor is not None and id(tensor) not in seen:
                    seen.add(id(tensor))
                    found.append((module, name, is_parameter, tensor))
    return found


def _packed_size(block: nn.Module) -> int:
    """Bytes of `block`'s tensors packed at ALIGN offsets (a device slot holds this much)."""
    return sum(math.ceil(t.numel() * t.element_size() / ALIGN) * ALIGN for *_, t in module_tensors(block.modules()))


def host_buffer(size: int) -> torch.Tensor:
    """A CPU uint8 buffer of `size` bytes in pages of its own (an anonymous memory map): locking them
    locks no page of another allocation, the storage starts where the lock starts (which is what
    `is_pinned` checks), and freeing it gives the pages straight back to the system."""
    if not hasattr(mmap, "MAP_PRIVATE"):  # Windows: anonymous maps are private there
        return torch.frombuffer(mmap.mmap(-1, size), dtype=torch.uint8)
    # private: a shared anonymous map is shmem, 4× slower to fill (0.85 s instead of 0.22 s for the 2B
    # model's 3.76 GB on an H200 host); huge pages where the kernel gives them: 0.18 s
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(buffer, dtype=torch.uint8)


def _pack(block: nn.Module) -> tuple[torch.Tensor, list[_Slot]]:
    """Copy `block`'s parameters and buffers into one host uint8 buffer and point them at it."""
    entries = module_tensors(block.modules())
    slots, size = [], 0
    for module, name, is_parameter, tensor in entries:
        slots.append(_Slot(module, name, is_parameter, size, tensor.dtype, tensor.shape))
        size += math.ceil(tensor.numel() * tensor.element_size() / ALIGN) * ALIGN
    flat = host_buffer(max(size, 1))
    for slot, (*_, tensor) in zip(slots, entries, strict=True):
        slot.view(flat).copy_(tensor)
        slot.point_at(flat)
    return flat, slots


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Hand memory that the C heap holds free back to the system (glibc only). Packing frees the
    blocks' original tensors, which glibc allocates from its heap below 32 MB (its largest mmap
    threshold) and would otherwise keep, so that the process stays a model's size larger after
    streaming starts, until other allocations happen to reuse the space."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class PageLock:
    """Contiguous host tensors page-locked in place (cudaHostRegister) until `release` (idempotent)."""

    def __init__(self, buffers: list[torch.Tensor]) -> None:
        self.buffers: list[torch.Tensor] = []  # held: they must outlive their registration
        cudart = torch.cuda.cudart()
        try:
            for buffer in buffers:
                nbytes = buffer.numel() * buffer.element_size()
                torch.cuda.check_error(cudart.cudaHostRegister(buffer.data_ptr(), nbytes, PORTABLE))
                self.buffers.append(buffer)
        except Exception:
            self.release()
            raise

    @property
    def nbytes(self) -> int:
        return sum(buffer.numel() * buffer.element_size() for buffer in self.buffers)

    def release(self) -> None:
        cudart = torch.cuda.cudart()
        while self.buffers:
            torch.cuda.check_error(cudart.cudaHostUnregister(self.buffers.pop().data_ptr()))


def device_weight_bytes(owner: nn.Module, blocks: Sequence[nn.Module], prefetch: int = 1) -> int:
    """Bytes of weights on the device while `owner` runs with `blocks` streamed: its other tensors
    plus `prefetch + 1` slots of the largest block. Computed without packing anything."""
    inside = {id(m) for block in blocks for m in block.modules()}
    others = module_tensors(m for m in owner.modules() if id(m) not in inside)
    slot = max((_packed_size(block) for block in blocks), default=0)
    return sum(t.numel() * t.element_size() for *_, t in others) + (prefetch + 1) * slot


class BlockStreamer:
    """Streams `blocks` (the repeated blocks of `owner`) from host memory to a compute device.

    Creating it moves the blocks' weights into packed host buffers for good (the owner's other
    weights stay where they are). `active(device)` runs the owner there with the blocks streamed,
    page-locking the buffers first on CUDA; they stay locked until `unpin` (or until the streamer
    is dropped).
    """

    def __init__(self, owner: nn.Module, blocks: Sequence[nn.Module], prefetch: int = 1) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1 block, got {prefetch}")
        self._owner = weakref.ref(owner)  # weak: whoever keeps the owner keeps the streamer, never the reverse
        self.blocks = list(blocks)
        self.prefetch = prefetch
        with torch.inference_mode(False):
            self._packed = [_pack(block) for block in self.blocks]
        return_freed_memory()
        self._index = {id(block): i for i, block in enumerate(self.blocks)}
        self.slot_bytes = max((flat.numel() for flat, _ in self._packed), default=0)
        self._run: _Run | None = None
        self._lock: PageLock | None = None
        self._unlock_when_dropped: weakref.finalize | None = None
        _alive.add(self)

    @property
    def owner(self) -> nn.Module:
        owner = self._owner()
        if owner is None:
            raise RuntimeError("the module this BlockStreamer streams has been deleted")
        return owner

    @property
    def pinned_bytes(self) -> int:
        """Bytes of host memory page-locked for this streamer now."""
        return self._lock.nbytes if self._lock is not None else 0

    def pin(self) -> bool:
        """Page-lock the packed host buffers (CUDA only), so that every visit is one asynchronous copy.
        Returns whether they are locked; if locking fails the blocks stream from pageable memory
        (synchronous copies, slower) and a warning says so."""
        if self._lock is None and torch.cuda.is_available():
            try:
                self._lock = PageLock([flat for flat, _ in self._packed])
            except Exception as error:  # e.g. the driver's limit on locked memory
                log.warning("could not pin %d MB for block streaming (%s); copying from pageable memory",
                            self.streamed_bytes >> 20, error)  # fmt: skip
                return False
            self._unlock_when_dropped = weakref.finalize(self, self._lock.release)
            self._unlock_when_dropped.atexit = False  # the CUDA context may be gone by then
        return self._lock is not None

    def unpin(self) -> None:
        """Unlock the host buffers in place (they stay the blocks' weights, now in pageable memory)."""
        if self._lock is not None:
            self._lock.release()
            self._unlock_when_dropped.detach()
            self._lock = self._unlock_when_dropped = None

    @property
    def device_slots(self) -> list[torch.Tensor]:
        """The device buffers that hold the visiting blocks while active (none otherwise)."""
        return list(self._run.slots) if self._run is not None else []

    @property
    def streamed_bytes(self) -> int:
        """Bytes of weights that stay on the host and are copied on every pass."""
        return sum(flat.numel() for flat, _ in self._packed)

    @property
    def device_bytes(self) -> int:
        """Bytes of weights on the device while active (see `device_weight_bytes`)."""
        return device_weight_bytes(self.owner, self.blocks, self.prefetch)

    def _other_tensors(self) -> list[tuple[nn.Module, str, bool, torch.Tensor]]:
        """The owner's parameters and buffers outside the streamed blocks."""
        inside = {id(m) for block in self.blocks for m in block.modules()}
        return module_tensors(m for m in self.owner.modules() if id(m) not in inside)

    @contextmanager
    def active(self, device: torch.device | str) -> Iterator[nn.Module]:
        """Run the owner on `device` for the block: its small parts move there (and back afterwards),
        its blocks are streamed into `prefetch + 1` device slots."""
        device = torch.device(device)
        if device.type == "cuda":
            self.pin()
        others = self._other_tensors()
        homes = [tensor.data for *_, tensor in others]
        for (module, name, is_parameter, _), home in zip(others, homes, strict=True):
            assign(module, name, is_parameter, home.to(device))
        run = self._run = _Run(self, device)
        hooks = []
        for block in self.blocks:
            hooks.append(block.register_forward_pre_hook(run.before))
            hooks.append(block.register_forward_hook(run.after))
        try:
            yield self.owner
        finally:
            for hook in hooks:
                hook.remove()
            run.close()
            self._run = None
            for (module, name, is_parameter, _), home in zip(others, homes, strict=True):
                assign(module, name, is_parameter, home)


def assign(module: nn.Module, name: str, is_parameter: bool, tensor: torch.Tensor) -> None:
    """Point a parameter (its data: the Parameter object stays) or a buffer of `module` at `tensor`."""
    if is_parameter:
        module._parameters[name].data = tensor
    else:
        module._buffers[name] = tensor


class _Run:
    """The device side of one `active` period: slots, the copy stream and the hooks' bookkeeping."""

    def __init__(self, streamer: BlockStreamer, device: torch.device) -> None:
        self.streamer = streamer
        self.device = device
        self.cuda = device.type == "cuda"
        with torch.inference_mode(False):
            self.slots = [
                torch.empty(streamer.slot_bytes, dtype=torch.uint8, device=device) for _ in range(streamer.prefetch + 1)
            ]
        self.copies = torch.cuda.Stream(device) if self.cuda else None
        self.ready: dict[int, tuple[int, torch.cuda.Event | None]] = {}  # block → (slot, copy done)
        self.released: list[torch.cuda.Event | None] = [None] * len(self.slots)  # slot → last use done
        self.next_slot = 0

    def _load(self, index: int) -> None:
        """Issue the copy of block `index` into the next slot (after that slot's last use)."""
        if index in self.ready:
            return
        slot = self.next_slot
        self.next_slot = (slot + 1) % len(self.slots)
        flat, _ = self.streamer._packed[index]
        if not self.cuda:
            self.slots[slot][: flat.numel()].copy_(flat)
            self.ready[index] = (slot, None)
            return
        with torch.cuda.stream(self.copies):
            if self.released[slot] is not None:
                self.copies.wait_event(self.released[slot])
            self.slots[slot][: flat.numel()].copy_(flat, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.copies)
        self.ready[index] = (slot, done)

    def before(self, block: nn.Module, _args: object) -> None:
        index = self.streamer._index[id(block)]
        self._load(index)
        slot, done = self.ready.pop(index)
        if done is not None:
            torch.cuda.current_stream(self.device).wait_event(done)
        for entry in self.streamer._packed[index][1]:
            entry.point_at(self.slots[slot])
        self.in_use = slot
        count = len(self.streamer.blocks)
        for ahead in range(1, self.streamer.prefetch + 1):  # wraps: block 0 of the next pass too
            self._load((index + ahead) % count)

    def after(self, block: nn.Module, _args: object, _output: object) -> None:
        index = self.streamer._index[id(block)]
        if self.cuda:
            released = torch.cuda.Event()
            released.record(torch.cuda.current_stream(self.device))
            self.released[self.in_use] = released
        flat, entries = self.streamer._packed[index]
        for entry in entries:
            entry.point_at(flat)

    def close(self) -> None:
        """Wait for copies still in flight (the prefetch of the next pass), then free the slots."""
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_stream(self.copies)
        self.ready.clear()
        self.slots.clear()


def live_streamers() -> list[BlockStreamer]:
    """Every BlockStreamer that exists now (each holds its blocks' packed host copies)."""
    return list(_alive)
