"""Bounded-memory encode and decode: which plan to cut a video by (temporal chunks, spatial tiles), from
a memory budget; pieces.py cuts and joins.

What is exact and what is not:

- Temporal chunks are exact (to float rounding), for both halves. The encoder is causal: a chunk
  starting at pixel frame 1 + 8·m is handed the last input frames of the previous chunk at every causal
  conv and time fold (causal_stream.py). The decoder is not causal but local in time: each of its steps
  reads two frames behind and two ahead, so it runs as a stream whose steps keep the last frames of
  their previous piece and hold back the last two until the next piece arrives (decoder_stream.py).
- Spatial tiles are approximate: a conv at a tile edge sees padding instead of the neighbours, and the
  error reaches as far into the tile as the network's receptive field (`decoder_reach`, `encoder_reach`:
  one pixel of its stage per 3×3 conv). Tiles overlap by `OVERLAP_PER_REACH` × that reach, and are
  cross-faded over the middle of the overlap (pieces.py), where the edge error has decayed.

The planners prefer no cut, then temporal chunks (exact), then spatial tiles no smaller than twice the
overlap; a budget not met by those raises `VAEMemoryError`, saying how much memory the smallest such plan
needs. tests/test_vae_tiling.py states and checks the error of every plan shape the planner can choose.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

import torch

from ...config import VAEConfig
from ...types import VAE_SPATIAL_SCALE, VAE_TEMPORAL_SCALE

log = logging.getLogger(__name__)

GiB = 2**30
CPU_BUDGET = 16 * GiB  # bytes; the default budget off CUDA, where free memory is not a useful number
CUDA_BUDGET_FRACTION = 0.8  # of the free memory: headroom for the allocator's fragmentation and cuDNN workspaces
# Copies of the widest activation alive at the peak of a call. Counted: a res block holds its input
# (kept for the skip), the normalised/modulated copy, the SiLU output, its time-padded copy and the conv
# output; an upsampler its conv output, the depth-to-space copy and the repeated residual. Measured on
# an H100 in bf16 at 768×512×121 (max_memory_allocated minus what was allocated before the call):
# 128.5 bytes per pixel-frame = 8.0 copies for the 0.9.0 and 0.9.1 encoders and decoders and the 0.9.5
# encoder, 146 = 9.1 copies for the 0.9.5 decoder. 10 leaves headroom.
LIVE_TENSORS = 10
CALL_OVERHEAD = 2**28  # bytes per call whatever its size (cuDNN workspaces, the narrow stages): 0.1–0.2 GiB measured
# Pixel frames a chunk holds beyond its 8 per latent frame. Decode: the 4 frames of context a last-stage
# res block recomputes in front of its piece, the frames every last-stage step keeps for the next piece
# (4 per res block, one copy each against LIVE_TENSORS copies of a working frame) and the next piece
# waiting in its queue. Encode: the 3 frames of context in front of each causal conv's chunk. Measured
# on an H200 in bf16 at 768×512×121 (0.9.1, 0.9.5): decode 0.91–1.69 GiB against 1.45–2.86 estimated
# for chunks of 1–4 latent frames; encode 1.79–2.35 GiB in chunks of 4 latent frames.
STREAM_EXTRA_FRAMES = 8
# Tile overlap in units of the receptive field. On the random tiny models of the tests a cut tile's error
# is zero beyond the reach and about halves per latent pixel before it; the cross-fade sits half an
# overlap from the tile edges. Over 40 seeded tiny models the worst max error of the smallest decode
# tiles was 4.5 % at 1 reach, 3.0 % at 1.25 and 1.2 % at 1.5 (of the largest |output|); 1.25 keeps the
# bounds stated in tests/test_vae_tiling.py with a margin.
OVERLAP_PER_REACH = 1.25


class VAEMemoryError(torch.OutOfMemoryError):
    """No plan within the stated error bound fits the memory budget."""


@dataclass(frozen=True)
class TilingPlan:
    """How to cut a video, in latent units: square spatial tiles of `tile` × `tile` (clipped to the frame)
    overlapping by `overlap` (None: the layout's receptive-field overlap, `tile_overlap`), and temporal
    chunks of `frames` latent frames (8·`frames` pixel frames; the first encode chunk 1 + 8·`frames`).
    Temporal chunks are exact; tiles are not (see the module docstring)."""

    tile: int = 16
    overlap: int | None = None
    frames: int = 8

    def __post_init__(self) -> None:
        if self.tile < 1 or self.frames < 1 or not (self.overlap is None or 0 <= self.overlap < self.tile):
            raise ValueError(
                f"TilingPlan needs tile ≥ 1, frames ≥ 1 and 0 ≤ overlap < tile, got {self}. "
                "Make the tiles larger or the overlap smaller."
            )

    def with_overlap(self, overlap: int) -> TilingPlan:
        """This plan, with `overlap` when it names none."""
        return self if self.overlap is not None else replace(self, overlap=min(overlap, self.tile - 1))


Tiling = Literal["auto", "off"] | TilingPlan


# --- receptive field --------------------------------------------------------------------------------


_STRIDES = {"compress_all": (2, 2, 2), "compress_space": (1, 2, 2), "compress_time": (2, 1, 1)}  # frames, h, w


def _stride(kind: str) -> tuple[int, int, int]:
    return _STRIDES[kind.removesuffix("_res").removesuffix("_x_y")]


def decoder_reach(config: VAEConfig) -> float:
    """How far, in latent pixels, the decoder's output reads around its latent position: every 3×3
    convolution reaches one pixel of its stage, 1/s latent pixel at a stage s times finer than the
    latent (conv_in, the res blocks and each upsampler's convolution; conv_out at the last stage).
    Released layouts: 0.9.0 23.9, 0.9.1 30.1, 0.9.5+ 21.6; the tiny test layouts 12.1 and 8.6."""
    reach, scale = 1.0, 1  # conv_in
    for block in reversed(config.decoder_blocks):
        if block.kind.startswith("compress"):
            reach += 1 / scale
            scale *= _stride(block.kind)[1]
        else:
            reach += 2 * (block.num_layers if block.kind == "res_x" else 1) / scale
    return reach + 1 / scale  # conv_out


def encoder_reach(config: VAEConfig) -> float:
    """The same for the encoder: how far, in latent pixels, a latent reads around its own footprint."""
    scale = VAE_SPATIAL_SCALE // config.patch_size  # stage pixels per latent pixel at conv_in
    reach = 1 / scale
    for block in config.encoder_blocks:
        if block.kind.startswith("compress"):
            reach += 1 / scale
            scale //= _stride(block.kind)[1]
        else:
            reach += 2 * (block.num_layers if block.kind == "res_x" else 1) / scale
    return reach + 1 / scale  # conv_out


def tile_overlap(reach: float) -> int:
    """The overlap, in latent pixels, of the tiles the planners choose; tiles are at least twice that."""
    return math.ceil(OVERLAP_PER_REACH * reach)


# --- memory estimates -------------------------------------------------------------------------------


def _widest(stages: Iterator[tuple[int, int]]) -> float:
    """Largest activation in elements per pixel over (channels, pixels per element) stages."""
    return max(c / v for c, v in stages)


def decoder_bytes_per_pixel(config: VAEConfig, dtype: torch.dtype) -> float:
    """Estimated peak decoder activation bytes per output pixel-frame (per batch item).

    Derived by walking the block list from the latent up: each stage's activation has C channels with
    one element per V output pixels (V = 8·32·32 at the latent, divided by each upsampler's volume),
    and an upsampler's conv briefly holds 8·C/reduction channels before depth-to-space. The widest
    of these, C/V, times `LIVE_TENSORS` copies alive at once, times the dtype size, is the estimate.
    For the released decoders the widest is the last stage (128 channels at H/4 × W/4, every frame:
    8 elements per pixel), so 0.9.x decodes are estimated at 160 bytes per pixel-frame in bf16
    (measured 128.5–146, see `LIVE_TENSORS`); add `CALL_OVERHEAD` per call.
    """
    channels = config.decoder_base_channels
    for block in config.decoder_blocks:
        channels *= block.multiplier if block.kind == "res_x_y" or block.kind.startswith("compress") else 1

    def stages() -> Iterator[tuple[int, int]]:
        c, volume = channels, VAE_TEMPORAL_SCALE * VAE_SPATIAL_SCALE**2
        yield c, volume
        for block in reversed(config.decoder_blocks):
            if block.kind.startswith("compress"):
                stride = _STRIDES[block.kind]
                yield math.prod(stride) * c // block.multiplier, volume  # the conv before depth-to-space
                volume //= math.prod(stride)
                c //= block.multiplier
            elif block.kind == "res_x_y":
                c //= block.multiplier
            yield c, volume
        yield config.out_channels * config.patch_size**2, config.patch_size**2  # conv_out

    return LIVE_TENSORS * _widest(stages()) * torch.finfo(dtype).bits / 8


def encoder_bytes_per_pixel(config: VAEConfig, dtype: torch.dtype) -> float:
    """Estimated peak encoder activation bytes per input pixel-frame (per batch item), derived as for
    the decoder from the encoder's block list (the widest is the first stage: 128 channels at H/4 × W/4)."""

    def stages() -> Iterator[tuple[int, int]]:
        c, volume = config.encoder_base_channels, config.patch_size**2
        yield c, volume
        for block in config.encoder_blocks:
            if block.kind.startswith("compress"):
                volume *= math.prod(_stride(block.kind))
                c *= block.multiplier if block.kind.endswith(("_res", "_x_y")) else 1
            elif block.kind == "res_x_y":
                c *= block.multiplier
            yield c, volume

    return LIVE_TENSORS * _widest(stages()) * torch.finfo(dtype).bits / 8


def default_budget(device: torch.device | str) -> int:
    """Bytes the activations may take: on CUDA a fraction of what is free (the driver's free memory plus
    what PyTorch holds cached but unused), elsewhere `CPU_BUDGET`."""
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_BUDGET
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(CUDA_BUDGET_FRACTION * (free + cached))


def decode_bytes(config: VAEConfig, latent_shape: tuple[int, ...], plan: TilingPlan | None, dtype: torch.dtype) -> int:
    """Estimated peak bytes of a decode of latents (B, C, F, h, w) with `plan` (None: whole): the
    largest piece's activations, `CALL_OVERHEAD`, and when cut the output (with spatial tiles also its
    float32 blend buffer)."""
    batch, _, frames, height, width = latent_shape
    pixel_frames = VAE_TEMPORAL_SCALE * (frames - 1) + 1
    out = pixel_frames * height * width * VAE_SPATIAL_SCALE**2 * batch * config.out_channels
    if plan is None:
        return int(out * decoder_bytes_per_pixel(config, dtype) / config.out_channels) + CALL_OVERHEAD
    tiled = plan.tile < max(height, width)
    piece_frames = pixel_frames if plan.frames >= frames else VAE_TEMPORAL_SCALE * plan.frames + STREAM_EXTRA_FRAMES
    piece = piece_frames * VAE_SPATIAL_SCALE**2 * min(plan.tile, height) * min(plan.tile, width) * batch
    out_bytes = torch.finfo(dtype).bits // 8 + (4 if tiled else 0)  # the result, and the float32 blend buffer
    return int(piece * decoder_bytes_per_pixel(config, dtype)) + CALL_OVERHEAD + out * out_bytes


def encode_bytes(config: VAEConfig, video_shape: tuple[int, ...], plan: TilingPlan | None, dtype: torch.dtype) -> int:
    """Estimated peak bytes of an encode of a video (B, 3, T, H, W) with `plan` (None: whole): the
    largest piece's activations and `CALL_OVERHEAD` (the latents are 1/48 of the video: left out)."""
    batch, _, frames, height, width = video_shape
    if plan is None:
        return int(batch * frames * height * width * encoder_bytes_per_pixel(config, dtype)) + CALL_OVERHEAD
    side = VAE_SPATIAL_SCALE * plan.tile
    chunk = 1 + VAE_TEMPORAL_SCALE * plan.frames
    piece = (frames if chunk >= frames else chunk + STREAM_EXTRA_FRAMES) * min(side, height) * min(side, width) * batch
    return int(piece * encoder_bytes_per_pixel(config, dtype)) + CALL_OVERHEAD


# --- plans ------------------------------------------------------------------------------------------


def candidate_plans(frames: int, height: int, width: int, overlap: int) -> Iterator[TilingPlan]:
    """Every plan the planners can choose for latent (F, h, w), in their order of preference: whole frames
    in shorter and shorter chunks (exact), then smaller and smaller tiles, each in the longest chunks
    first, down to tiles of twice the overlap in 1-frame chunks, the smallest plan within the bound."""
    side = max(height, width)
    for chunk in range(frames - 1, 0, -1):
        yield TilingPlan(tile=side, overlap=min(overlap, side - 1), frames=chunk)
    for tile in range(side - 1, 2 * overlap - 1, -1):
        for chunk in range(frames, 0, -1):
            yield TilingPlan(tile=tile, overlap=overlap, frames=chunk)


def _first_fit(
    what: str,
    shape: tuple[int, ...],
    latent: tuple[int, int, int],
    overlap: int,
    cost: Callable[[TilingPlan | None], int],
    budget_bytes: int,
) -> TilingPlan | None:
    plans = [None, *candidate_plans(*latent, overlap)]
    costs = [cost(plan) for plan in plans]
    for plan, bytes_needed in zip(plans, costs, strict=True):
        if bytes_needed <= budget_bytes:
            return plan
    side = max(latent[1:])
    smallest = f"tiles of {2 * overlap}×{2 * overlap} latent pixels" if 2 * overlap < side else "whole frames"
    raise VAEMemoryError(
        f"VAE {what} of shape {tuple(shape)} needs {min(costs) / GiB:.1f} GiB even in the smallest pieces "
        f"within the error bound (chunks of 1 latent frame, {smallest}), but the budget is "
        f"{budget_bytes / GiB:.1f} GiB. Lower the resolution or the length, set memory = low_vram on the "
        "loaders (other models stay in CPU memory), or use a GPU with more memory."
    )


def plan_decode(
    config: VAEConfig, latent_shape: tuple[int, ...], budget_bytes: int, dtype: torch.dtype
) -> TilingPlan | None:
    """The cheapest plan whose decode of latents (B, C, F, h, w) fits `budget_bytes` (`decode_bytes`):
    None if the whole decode does, else the longest chunks of whole frames (exact), else the largest
    tiles (at least twice `tile_overlap`) with the longest chunks. Raises VAEMemoryError if none fits."""
    overlap = tile_overlap(decoder_reach(config))
    cost = lambda plan: decode_bytes(config, latent_shape, plan, dtype)  # noqa: E731
    return _first_fit("decode", latent_shape, latent_shape[2:], overlap, cost, budget_bytes)


def plan_encode(
    config: VAEConfig, video_shape: tuple[int, ...], budget_bytes: int, dtype: torch.dtype
) -> TilingPlan | None:
    """The same for the encode of a video (B, 3, T, H, W) (`encode_bytes`, `encoder_reach`)."""
    _, _, frames, height, width = video_shape
    latent = (1 + (frames - 1) // VAE_TEMPORAL_SCALE, height // VAE_SPATIAL_SCALE, width // VAE_SPATIAL_SCALE)
    overlap = tile_overlap(encoder_reach(config))
    cost = lambda plan: encode_bytes(config, video_shape, plan, dtype)  # noqa: E731
    return _first_fit("encode", video_shape, latent, overlap, cost, budget_bytes)


def shrink_plan(plan: TilingPlan | None, latent: tuple[int, int, int], overlap: int) -> TilingPlan | None:
    """The next plan to try after an out-of-memory error, for latent (F, h, w): half the chunk length
    (untiled → half the frames), then half the tile side, never below twice `overlap`; None once the
    smallest plan has been tried."""
    frames, height, width = latent
    side = max(height, width)
    if plan is None:
        plan = TilingPlan(tile=side, overlap=min(overlap, side - 1), frames=frames)
    if plan.frames > 1:
        return replace(plan, frames=min(plan.frames, frames) // 2)
    tile = max(min(plan.tile, side) // 2, 2 * overlap)
    return TilingPlan(tile=tile, overlap=overlap, frames=1) if tile < min(plan.tile, side) else None


T = TypeVar("T")


def run_planned(
    run: Callable[[TilingPlan | None], T],
    tiling: Tiling,
    plan_for_budget: Callable[[int], TilingPlan | None],
    shrink: Callable[[TilingPlan | None], TilingPlan | None],
    budget_bytes: int,
    device_budget: int,
    what: str,
) -> T:
    """`run(plan)` with the plan `tiling` names: "off" → None (whole), a TilingPlan as given, "auto" →
    `plan_for_budget(budget_bytes)` (or, when no plan within the bound meets that budget but the device
    has more free memory, `plan_for_budget(device_budget)`), and on torch.OutOfMemoryError again with
    `shrink(plan)` until the smallest plan fails too, which raises torch.OutOfMemoryError saying what
    was tried."""
    if tiling == "off":
        return run(None)
    if isinstance(tiling, TilingPlan):
        return run(tiling)
    if tiling != "auto":
        raise ValueError(f"tiling must be 'auto', 'off' or a TilingPlan, got {tiling!r}")
    try:
        plan = plan_for_budget(budget_bytes)
    except VAEMemoryError as error:
        if device_budget <= budget_bytes:
            raise
        plan = plan_for_budget(device_budget)
        first = str(error).split(". ")[0]
        log.warning("%s; using the %.1f GiB of free device memory instead", first, device_budget / GiB)
    tried = []
    while True:
        try:
            return run(plan)
        except torch.OutOfMemoryError as error:
            last = str(error).splitlines()[0] if str(error) else "out of memory"
        tried.append("whole" if plan is None else str(plan))  # outside `except`: the failed tensors are freed
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        plan = shrink(plan)
        if plan is None:
            raise torch.OutOfMemoryError(
                f"VAE {what} ran out of memory with every plan within the error bound ({'; '.join(tried)}); "
                f"last error: {last}. Free memory (memory = low_vram on the loaders keeps the other models in CPU "
                "memory), lower the resolution or the length, or use a GPU with more memory."
            )
        log.warning("VAE %s ran out of memory (%s); retrying with %s", what, tried[-1], plan)
