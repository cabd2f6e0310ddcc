"""Device placement: components live where they were loaded and visit the compute device while used."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from weakref import WeakKeyDictionary

import torch
from torch import nn

from .model.ops import choose_ops, use_ops
from .streaming import BlockStreamer, PageLock, assign, host_buffer, live_streamers, module_tensors

# How components use the compute device:
#   default   each component moves there whole while it is used (the fastest that fits 24 GB);
#   low_vram  the transformer's and T5's blocks are streamed from pinned CPU memory (see streaming.py)
#             and the VAE plans its pieces for LOW_VRAM_VAE_BUDGET (model/vae/tiling.py): at 768×512×121
#             exact temporal chunks, under 8 GB in all.
MEMORY_MODES = ("default", "low_vram")
LOW_VRAM_VAE_BUDGET = 3 * 2**30  # bytes the VAE plans its activations and output for

# module → its BlockStreamer. The streamer holds the module weakly, so dropping the module drops both
# (and the streamer's page locks); `release` drops the streamer of a module that lives on.
_streamers: WeakKeyDictionary[nn.Module, BlockStreamer] = WeakKeyDictionary()
_stream_devices = {"cuda"}  # device types low_vram streams to (tests add "cpu": see stream_on_cpu)


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
    """Copy a device tensor to the CPU through page-locked memory: a decoded video of 570 MB in 0.13 s
    instead of 0.41 s through pageable memory (H200 host). The buffer is locked for this copy only, so
    nothing stays pinned; PyTorch's pinned allocator copies in 11 ms but keeps a power-of-two block
    (1 GiB for that video) cached for the life of the process."""
    if x.device.type != "cuda":
        return x.cpu()
    out = host_buffer(max(x.numel() * x.element_size(), 1))[: x.numel() * x.element_size()]
    out = out.view(x.dtype).view(x.shape)
    try:
        lock = PageLock([out])
    except RuntimeError:  # the driver refused to lock more memory: a plain copy
        return out.copy_(x)
    try:
        out.copy_(x, non_blocking=True)
        torch.cuda.current_stream(x.device).synchronize()
    finally:
        lock.release()
    return out


def check_memory_mode(memory: str) -> str:
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory mode {memory!r} is not one of {', '.join(MEMORY_MODES)}")
    return memory


# Activations alive at the peak of a transformer block, in units of one (batch, tokens, hidden) tensor
# in the compute dtype: the block's input and normed input, q, k, v and the normed-and-rotated q, k
# (7 in self-attention), or input, normed input and the 4×-wide feed-forward hidden state with its
# GELU (10 in the feed-forward), plus the float32 RoPE tables (1 at batch 2). Measured on an H200
# (peak device memory of a streamed forward minus the streamed weights): 9.96 units for the 2B model
# at 768×512×121 with guidance, 16.9 with per-token noise levels; 12 (19) leave room for the
# allocator's rounding. Per-token noise levels (image conditions) keep the per-token modulation
# (B, N, 6, D) and the embedded timestep (B, N, D) alive for the whole forward: 7 more.
TRANSFORMER_PEAK_UNITS = 12
PER_TOKEN_SIGMA_UNITS = 7


def transformer_activation_bytes(
    hidden_dim: int, batch: int, tokens: int, dtype: torch.dtype, per_token_sigma: bool = False
) -> int:
    """Peak bytes of activations of one transformer forward on `batch` × `tokens` latent tokens
    (batch counts both halves of classifier-free guidance), with fused attention (no N² scores)."""
    units = TRANSFORMER_PEAK_UNITS + (PER_TOKEN_SIGMA_UNITS if per_token_sigma else 0)
    return units * batch * tokens * hidden_dim * dtype.itemsize


def t5_activation_bytes(d_model: int, d_ff: int, heads: int, batch: int, tokens: int) -> int:
    """Peak bytes of activations of one T5 encoder forward, counted in float32 (T5 upcasts its norms
    and softmax): 8 model-wide tensors (hidden state, normed, q, k, v, attention output, projection,
    residual), 3 feed-forward-wide ones (the two gated projections and their product), and 4 copies
    of the (batch, heads, tokens, tokens) position bias and attention scores. An upper bound: T5-XXL
    in bf16 with a prompt and a negative prompt measured 138 MiB at 256 tokens (this says 252) and
    1.5 GiB at 1024 (2.5) on an H200, next to 1.2 GiB of streamed weights."""
    return 4 * (batch * tokens * (8 * d_model + 3 * d_ff) + 4 * batch * heads * tokens**2)


def module_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of `module`, persistent or not (a GGUF model's quantized
    weights are non-persistent buffers), each shared tensor once: what the module holds."""
    return sum(t.numel() * t.element_size() for *_, t in module_tensors(module.modules()))


def streamer_for(module: nn.Module) -> BlockStreamer:
    """The module's BlockStreamer, made (and its blocks packed) on first use. The module names its
    repeated blocks in a `streamed_blocks` property."""
    if module not in _streamers:
        _streamers[module] = BlockStreamer(module, module.streamed_blocks)
    return _streamers[module]


def streams(module: nn.Module, device: torch.device | str, memory: str) -> bool:
    """Whether `placed(module, device, memory)` streams the module's blocks: low_vram mode, a module
    with blocks to stream, and a device to stream to (not the CPU, where the weights already are)."""
    streamable = hasattr(module, "streamed_blocks") and torch.device(device).type in _stream_devices
    return check_memory_mode(memory) == "low_vram" and streamable


def stream_on_cpu(enabled: bool) -> None:
    """Stream to the CPU as to a GPU (for tests on machines without one: the streamer's bookkeeping
    then runs where it can be checked; it gains nothing there)."""
    (_stream_devices.add if enabled else _stream_devices.discard)("cpu")


def release(module: nn.Module) -> None:
    """Give back what streaming `module` holds beyond its weights: its streamer's page locks, and the
    streamer itself (the weights stay in its packed host buffers, now plain CPU memory); then return
    cached device blocks to the driver. The next streamed use packs and pins again."""
    streamer = _streamers.pop(module, None)
    if streamer is not None:
        streamer.unpin()
        free_device_memory()


def streaming_now(module: nn.Module) -> bool:
    """Whether `module` runs with its blocks streamed right now (inside `placed`): its blocks' tensors
    must not change then (the streamer points them at its packed copies and back)."""
    streamer = _streamers.get(module)
    return streamer is not None and bool(streamer.device_slots)


def streaming_report() -> dict[str, int]:
    """What block streaming holds in this process: streamers alive, bytes of packed host copies, bytes
    of them page-locked. Every streamer belongs to a live module; none outlives it."""
    streamers = live_streamers()
    return {
        "streamers": len(streamers),
        "host_bytes": sum(s.streamed_bytes for s in streamers),
        "pinned_bytes": sum(s.pinned_bytes for s in streamers),
    }


@contextmanager
def placed(
    module: nn.Module, device: torch.device | str, memory: str = "default", *, keep_pinned: bool = False
) -> Iterator[nn.Module]:
    """Use `module` on `device` for the block: moved there whole (`on_device`), or in low_vram mode
    with its blocks streamed (see `streams`). Streaming page-locks the blocks' host copies; they are
    unlocked when the block ends unless `keep_pinned` (for a caller that runs the module again soon
    and calls `release` when it is done with it, as the ComfyUI nodes do through ComfyUI's memory
    manager). Device memory is given back when the block ends either way. This is where a model meets
    its compute device, so its ops are chosen here (`model.ops.choose_ops`; logged when they change)."""
    use_ops(module, choose_ops(device), device)
    if streams(module, device, memory):
        streamer = streamer_for(module)
        try:
            with streamer.active(device):
                yield module
        finally:
            if not keep_pinned:
                streamer.unpin()
            free_device_memory()
    else:
        with on_device(module, device):
            yield module


def vae_budget(memory: str) -> int | None:
    """The VAE's planning budget for a memory mode (None: from the device's free memory). A budget that no
    plan within the tiling error bound meets falls back to the free memory (`run_planned`)."""
    return LOW_VRAM_VAE_BUDGET if check_memory_mode(memory) == "low_vram" else None
