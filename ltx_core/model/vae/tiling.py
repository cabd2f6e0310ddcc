"""Bounded-memory encode and decode: the video is cut into temporal chunks and spatial tiles that go
through the VAE one at a time, so peak memory follows the piece instead of the whole video.

What is exact and what is not:

- Encoder temporal chunks are exact (to float rounding). Every encoder op is per frame or causal in
  time, so a chunk starting at pixel frame 1 + 8·m computes the latents of the whole video when each
  causal conv (and each time-folding downsample) is handed the last input frames of the previous
  chunk instead of its replicated first frame (`CausalStream`). Boundaries at 1 + 8·m keep every
  temporal stride of the encoder aligned: latent frame 0 stays pixel frame 0 alone.
- Spatial tiles (encode and decode) and decoder temporal chunks are approximate: a conv at a tile edge
  sees padding instead of the neighbours, and the decoder is non-causal in time. Neighbouring pieces
  overlap and are cross-faded over the middle of the overlap (`_blend`), away from the edges where
  the error lives. tests/test_vae_tiling.py states and checks the error.

Seeded noise under tiled decode: the `decode_noise_scale` mix is drawn once for the whole latent,
before tiling (the same draws as the untiled decode). The 0.9.1 decoder's injected noise is one
(H, W) map per res-block conv, shared over time; every piece decodes with the generator restored to
the same state, so each piece draws the same sequence of maps, sized to the piece. Temporal chunks
thus get exactly the untiled maps; spatial tiles get maps of their own, blended in the overlaps. The
result is a deterministic function of the seed and the plan (with `generator=None` the global RNG is
used and, as untiled, nothing is reproducible).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, TypeVar

import torch

from ...config import VAEConfig
from ...types import VAE_SPATIAL_SCALE, VAE_TEMPORAL_SCALE
from .causal_stream import CausalStream

if TYPE_CHECKING:
    from .autoencoder import Decoder, Encoder

log = logging.getLogger(__name__)

CPU_BUDGET = 16 * 2**30  # bytes; the default budget off CUDA, where free memory is not a useful number
CUDA_BUDGET_FRACTION = 0.8  # of the free memory: headroom for the allocator's fragmentation and cuDNN workspaces
# Copies of the widest activation alive at the peak of a call. Counted: a res block holds its input
# (kept for the skip), the normalised/modulated copy, the SiLU output, its time-padded copy and the conv
# output; an upsampler its conv output, the depth-to-space copy and the repeated residual. Measured on
# an H100 in bf16 at 768×512×121 (max_memory_allocated minus what was allocated before the call):
# 128.5 bytes per pixel-frame = 8.0 copies for the 0.9.0 and 0.9.1 encoders and decoders and the 0.9.5
# encoder, 146 = 9.1 copies for the 0.9.5 decoder. 10 leaves headroom.
LIVE_TENSORS = 10
CALL_OVERHEAD = 2**28  # bytes per call whatever its size (cuDNN workspaces, the narrow stages): 0.1–0.2 GiB measured


@dataclass(frozen=True)
class TilingPlan:
    """How to cut a video, in latent units: `tile` × `tile` spatial tiles overlapping by `overlap`,
    and `frames` latent frames per temporal chunk, consecutive decode chunks sharing `frame_overlap`.

    Encode chunks cover 8·`frames` pixel frames (the first one 1 + 8·`frames`) and need no overlap:
    they are exact. Decode chunks need `frame_overlap` ≥ 1 (one shared latent frame = one shared pixel
    frame; each more adds 8).
    """

    tile: int = 16
    overlap: int = 4
    frames: int = 8
    frame_overlap: int = 2

    def __post_init__(self) -> None:
        if not (0 <= self.overlap < self.tile and 0 <= self.frame_overlap < self.frames):
            raise ValueError(
                f"TilingPlan needs 0 ≤ overlap < tile and 0 ≤ frame_overlap < frames, got {self}. "
                "Make the tiles larger or the overlaps smaller."
            )


Tiling = Literal["auto", "off"] | TilingPlan
MIN_PLAN = TilingPlan(tile=4, overlap=1, frames=2, frame_overlap=1)  # the smallest plan `shrink_plan` goes to


# --- memory estimates and plans -------------------------------------------------------------------


_STRIDES = {"compress_all": (2, 2, 2), "compress_space": (1, 2, 2), "compress_time": (2, 1, 1)}  # frames, h, w


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
                volume *= math.prod(_STRIDES[block.kind.removesuffix("_res").removesuffix("_x_y")])
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


def _decoded_pixels(frames: int, height: int, width: int) -> int:
    return (VAE_TEMPORAL_SCALE * (frames - 1) + 1) * height * width * VAE_SPATIAL_SCALE**2


def plan_decode(
    config: VAEConfig, latent_shape: tuple[int, ...], budget_bytes: int, dtype: torch.dtype
) -> TilingPlan | None:
    """The cheapest plan whose pieces fit `budget_bytes`, or None if the whole decode does.

    latent_shape (B, C, F, h, w). `CALL_OVERHEAD` and, when tiling, the whole output (its float32 blend
    buffer and the result) are paid first.
    Temporal chunks are preferred (whole frames, no spatial seams), down to 4 latent frames; then
    square spatial tiles in 8-frame chunks, as large as fit.
    """
    batch, _, frames, height, width = latent_shape
    per_pixel = decoder_bytes_per_pixel(config, dtype) * batch
    budget_bytes -= CALL_OVERHEAD
    if _decoded_pixels(frames, height, width) * per_pixel <= budget_bytes:
        return None
    out_bytes = 4 + torch.finfo(dtype).bits // 8  # the float32 blend buffer and the result in `dtype`
    budget_bytes -= _decoded_pixels(frames, height, width) * batch * config.out_channels * out_bytes
    chunk = frames
    while chunk > 4:
        chunk = max(4, chunk // 2)
        if _decoded_pixels(chunk, height, width) * per_pixel <= budget_bytes:
            return TilingPlan(tile=max(height, width), overlap=1, frames=chunk, frame_overlap=max(2, chunk // 4))
    chunk = min(frames, 8) if frames > 2 else 2
    for tile in range(max(height, width), MIN_PLAN.tile, -1):
        if _decoded_pixels(chunk, min(tile, height), min(tile, width)) * per_pixel <= budget_bytes:
            return TilingPlan(tile=tile, overlap=max(2, tile // 4), frames=chunk, frame_overlap=min(2, chunk - 1))
    return MIN_PLAN


def plan_encode(
    config: VAEConfig, video_shape: tuple[int, ...], budget_bytes: int, dtype: torch.dtype
) -> TilingPlan | None:
    """The cheapest encode plan that fits `budget_bytes`, or None if the whole encode does.

    video_shape (B, 3, T, H, W). Temporal chunks are exact, so they come first, down to one latent
    frame (8 pixel frames) per chunk; then square spatial tiles with a quarter overlap.
    """
    batch, _, frames, height, width = video_shape
    per_pixel = encoder_bytes_per_pixel(config, dtype) * batch
    budget_bytes -= CALL_OVERHEAD
    if frames * height * width * per_pixel <= budget_bytes:
        return None
    h, w = height // VAE_SPATIAL_SCALE, width // VAE_SPATIAL_SCALE
    for chunk in (16, 8, 4, 2, 1):
        if (1 + VAE_TEMPORAL_SCALE * chunk) * height * width * per_pixel <= budget_bytes:
            return TilingPlan(tile=max(h, w), overlap=1, frames=chunk, frame_overlap=0)
    for tile in range(max(h, w), MIN_PLAN.tile, -1):
        pixels = (1 + VAE_TEMPORAL_SCALE) * (VAE_SPATIAL_SCALE * min(tile, h)) * (VAE_SPATIAL_SCALE * min(tile, w))
        if pixels * per_pixel <= budget_bytes:
            return TilingPlan(tile=tile, overlap=max(1, tile // 4), frames=1, frame_overlap=0)
    return replace(MIN_PLAN, frames=1, frame_overlap=0)


def shrink_plan(plan: TilingPlan | None, latent_shape: tuple[int, ...]) -> TilingPlan | None:
    """The next plan to try after an out-of-memory error: halve the tile side and the chunk length
    (untiled → half the largest side, half the frames); None once `MIN_PLAN` has been tried."""
    _, _, frames, height, width = latent_shape
    if plan is None:
        plan = TilingPlan(tile=max(height, width, MIN_PLAN.tile + 1), overlap=1, frames=max(frames, 3))
    if plan.tile <= MIN_PLAN.tile and plan.frames <= MIN_PLAN.frames:
        return None
    tile = max(MIN_PLAN.tile, math.ceil(plan.tile / 2))
    chunk = max(MIN_PLAN.frames, math.ceil(plan.frames / 2))
    return TilingPlan(tile=tile, overlap=max(1, tile // 4), frames=chunk, frame_overlap=min(2, chunk - 1))


T = TypeVar("T")


def run_planned(
    run: Callable[[TilingPlan | None], T],
    tiling: Tiling,
    plan_for_budget: Callable[[int], TilingPlan | None],
    latent_shape: tuple[int, ...],
    budget_bytes: int,
    what: str,
) -> T:
    """`run(plan)` with the plan `tiling` names: "off" → None (untiled), a TilingPlan as given, "auto"
    → `plan_for_budget(budget_bytes)`, and on torch.OutOfMemoryError again with `shrink_plan` until
    `MIN_PLAN` fails too, which raises torch.OutOfMemoryError saying what was tried."""
    if tiling == "off":
        return run(None)
    if isinstance(tiling, TilingPlan):
        return run(tiling)
    if tiling != "auto":
        raise ValueError(f"tiling must be 'auto', 'off' or a TilingPlan, got {tiling!r}")
    plan, tried = plan_for_budget(budget_bytes), []
    while True:
        try:
            return run(plan)
        except torch.OutOfMemoryError as error:
            last = str(error).splitlines()[0] if str(error) else "out of memory"
        tried.append("untiled" if plan is None else str(plan))  # outside `except`: the failed tensors are freed
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        plan = shrink_plan(plan, latent_shape)
        if plan is None:
            raise torch.OutOfMemoryError(
                f"VAE {what} ran out of memory with every plan tried ({'; '.join(tried)}); last error: {last}. "
                "Free memory (offload the other models), lower the resolution or frame count, or pass a "
                "smaller TilingPlan."
            )
        log.warning("VAE %s ran out of memory (%s); retrying with %s", what, tried[-1], plan)


# --- piece geometry and blending ------------------------------------------------------------------


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts of `tile`-long pieces covering `size`, overlapping by at least `overlap`."""
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    stride = (size - tile) / (count - 1)
    return [round(i * stride) for i in range(count)]


@dataclass(frozen=True)
class _Piece:
    """One piece along one axis: its latent range and its output range and blend weights."""

    latent: slice
    out: slice
    weight: torch.Tensor  # (length of `out`,)


def _blend(length: int, fade_in: int, fade_out: int) -> torch.Tensor:
    """Weights over a piece of `length` samples: 1 in the middle, 0 over the outer quarter of each
    overlap (the piece's edge, where it is most wrong), and a linear cross-fade over the middle half.
    Neighbours' weights add up to 1 across an overlap, so the blend is a partition of unity."""
    w = torch.ones(length)
    for fade, flip in ((fade_in, False), (fade_out, True)):
        if fade:
            edge = fade // 4
            ramp = torch.cat([torch.zeros(edge), torch.arange(1, fade - 2 * edge + 1) / (fade - 2 * edge + 1)])
            ramp = torch.cat([ramp, torch.ones(fade - ramp.numel())])
            if flip:
                w[length - fade :] *= ramp.flip(0)
            else:
                w[:fade] *= ramp
    return w


def _pieces(size: int, tile: int, overlap: int, scale: int, extra: int, out_size: int) -> list[_Piece]:
    """Pieces along one axis of `size` latent samples; latent [a, b) covers output [scale·a, scale·b + extra)."""
    starts = _starts(size, tile, overlap)
    spans = [(a, min(a + tile, size)) for a in starts]
    out = [(scale * a, min(scale * b + extra, out_size)) for a, b in spans]
    pieces = []
    for i, ((a, b), (lo, hi)) in enumerate(zip(spans, out, strict=True)):
        fade_in = out[i - 1][1] - lo if i else 0
        fade_out = hi - out[i + 1][0] if i + 1 < len(out) else 0
        pieces.append(_Piece(slice(a, b), slice(lo, hi), _blend(hi - lo, max(fade_in, 0), max(fade_out, 0))))
    return pieces


def _blended(
    pieces: tuple[list[_Piece], list[_Piece], list[_Piece]],
    run: Callable[[tuple[slice, slice, slice]], torch.Tensor],
    out_shape: tuple[int, int],
) -> torch.Tensor:
    """Σ weight·run(piece) / Σ weight over the grid of (time, height, width) pieces, in float32.
    The weights are separable, so their sum is the product of three per-axis sums (no full-size buffer)."""
    out = None
    for pt in pieces[0]:
        for ph in pieces[1]:
            for pw in pieces[2]:
                x = run((pt.latent, ph.latent, pw.latent))  # (B, C, t, h, w)
                if out is None:
                    sizes = tuple(p[-1].out.stop for p in pieces)
                    out = torch.zeros((*out_shape, *sizes), dtype=torch.float32, device=x.device)
                w = pt.weight[:, None, None] * ph.weight[None, :, None] * pw.weight[None, None, :]
                out[:, :, pt.out, ph.out, pw.out] += x.float() * w.to(x.device)
    assert out is not None
    totals = [torch.zeros(p[-1].out.stop) for p in pieces]
    for total, axis in zip(totals, pieces, strict=True):
        for p in axis:
            total[p.out] += p.weight
    return out.div_((totals[0][:, None, None] * totals[1][None, :, None] * totals[2][None, None, :]).to(out.device))


# --- decode ---------------------------------------------------------------------------------------


def decode_tiles(
    decoder: Decoder,
    z: torch.Tensor,
    timestep: torch.Tensor | None,
    plan: TilingPlan,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`decoder(z, timestep, generator)` piece by piece: un-normalised latents (B, C, F, h, w) →
    (B, 3, 8(F−1)+1, 32h, 32w) in z's dtype. Each piece starts from the same generator state."""
    b, _, frames, height, width = z.shape
    if plan.frames < frames and plan.frame_overlap < 1:
        raise ValueError(f"decode chunks must share at least one latent frame (frame_overlap ≥ 1), got {plan}")
    state = generator.get_state() if generator is not None else None
    pieces = (
        # latent chunk [a, b) decodes to pixel frames [8a, 8(b−1)]: its first latent frame becomes one frame
        _pieces(
            frames,
            plan.frames,
            plan.frame_overlap,
            VAE_TEMPORAL_SCALE,
            1 - VAE_TEMPORAL_SCALE,
            VAE_TEMPORAL_SCALE * (frames - 1) + 1,
        ),
        _pieces(height, plan.tile, plan.overlap, VAE_SPATIAL_SCALE, 0, VAE_SPATIAL_SCALE * height),
        _pieces(width, plan.tile, plan.overlap, VAE_SPATIAL_SCALE, 0, VAE_SPATIAL_SCALE * width),
    )

    def run(region: tuple[slice, slice, slice]) -> torch.Tensor:
        if state is not None:
            generator.set_state(state)
        return decoder(z[:, :, region[0], region[1], region[2]], timestep, generator)

    return _blended(pieces, run, (b, decoder.conv_out.conv.out_channels // decoder.patch_size**2)).to(z.dtype)


# --- encode ---------------------------------------------------------------------------------------


def encode_tiles(encoder: Encoder, video: torch.Tensor, plan: TilingPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """`encoder(video)` piece by piece: video (B, 3, 1+8k, H, W) → mean (B, 128, 1+k, H/32, W/32) and
    log-variance (B, 1, 1+k, H/32, W/32). Temporal chunks of `plan.frames` latent frames are exact;
    spatial tiles are blended in latent space."""
    b, _, frames, height, width = video.shape
    h, w = height // VAE_SPATIAL_SCALE, width // VAE_SPATIAL_SCALE
    step = VAE_TEMPORAL_SCALE * plan.frames
    bounds = [0, *range(1 + step, frames, step), frames]  # pixel frames: 1 + 8·frames, then 8·frames each
    whole_time = [_Piece(slice(None), slice(0, 1 + (frames - 1) // VAE_TEMPORAL_SCALE), torch.ones(1))]

    def run(region: tuple[slice, slice, slice]) -> torch.Tensor:
        rows, cols = (slice(VAE_SPATIAL_SCALE * s.start, VAE_SPATIAL_SCALE * s.stop) for s in region[1:])
        with CausalStream(encoder):
            parts = [torch.cat(encoder(video[:, :, a:b, rows, cols]), dim=1) for a, b in itertools.pairwise(bounds)]
        return torch.cat(parts, dim=2)  # (B, 129, 1+k, tile, tile)

    pieces = (whole_time, _pieces(h, plan.tile, plan.overlap, 1, 0, h), _pieces(w, plan.tile, plan.overlap, 1, 0, w))
    latents = _blended(pieces, run, (b, encoder.conv_out.conv.out_channels)).to(video.dtype)
    return latents[:, :-1], latents[:, -1:]
