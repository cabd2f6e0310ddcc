"""Cutting a video into the pieces of a TilingPlan and joining their results: spatial tiles cross-faded
over the middle of their overlaps, temporal chunks streamed exactly (tiling.py says what is exact)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ...types import VAE_SPATIAL_SCALE, VAE_TEMPORAL_SCALE
from .blocks import NoiseField
from .causal_stream import CausalStream
from .decoder_stream import stream
from .tiling import TilingPlan

if TYPE_CHECKING:
    from .autoencoder import Decoder, Encoder


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts of `tile`-long pieces covering `size`, overlapping by at least `overlap`."""
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    stride = (size - tile) / (count - 1)
    return [round(i * stride) for i in range(count)]


@dataclass(frozen=True)
class _Tile:
    """One tile along one axis: its latent range and its output range and blend weights."""

    latent: slice
    out: slice
    weight: torch.Tensor  # (length of `out`,)


def _blend(length: int, fade_in: int, fade_out: int) -> torch.Tensor:
    """Weights over a tile of `length` samples: 1 in the middle, 0 over the outer quarter of each overlap
    (the tile's edge, where it is most wrong), and a linear cross-fade over the middle half. Neighbours'
    weights add up to 1 across an overlap, so the blend is a partition of unity."""
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


def _tiles(size: int, tile: int, overlap: int, scale: int) -> list[_Tile]:
    """Tiles along one axis of `size` latent samples; latent [a, b) covers output [scale·a, scale·b)."""
    spans = [(a, min(a + tile, size)) for a in _starts(size, tile, overlap)]
    tiles = []
    for i, (a, b) in enumerate(spans):
        fade_in = scale * (spans[i - 1][1] - a) if i else 0
        fade_out = scale * (b - spans[i + 1][0]) if i + 1 < len(spans) else 0
        tiles.append(_Tile(slice(a, b), slice(scale * a, scale * b), _blend(scale * (b - a), fade_in, fade_out)))
    return tiles


def _joined(
    grid: tuple[list[_Tile], list[_Tile]],
    run: Callable[[slice, slice], Iterator[tuple[int, torch.Tensor]]],
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The (B, C, T, H, W) result of shape `shape` from `run(rows, cols)`, which yields each tile's result
    as (first frame, (B, C, t, h, w)) pieces along time. One tile is copied in; several are summed with
    their weights in float32 and divided by the sum of the weights (separable: a product of per-axis sums)."""
    rows, cols = grid
    if len(rows) == len(cols) == 1:
        out = torch.empty(shape, dtype=dtype, device=device)
        for start, x in run(rows[0].latent, cols[0].latent):
            out[:, :, start : start + x.shape[2]] = x
        return out
    out = torch.zeros(shape, dtype=torch.float32, device=device)
    for ph, pw in itertools.product(rows, cols):
        weight = (ph.weight[:, None] * pw.weight[None, :]).to(device)
        for start, x in run(ph.latent, pw.latent):
            out[:, :, start : start + x.shape[2], ph.out, pw.out] += x.float() * weight
    totals = []
    for tiles, size in zip(grid, shape[-2:], strict=True):
        total = torch.zeros(size)
        for p in tiles:
            total[p.out] += p.weight
        totals.append(total)
    return out.div_((totals[0][:, None] * totals[1][None, :]).to(device)).to(dtype)


def decode_tiles(
    decoder: Decoder, z: torch.Tensor, timestep: torch.Tensor | None, plan: TilingPlan, noise: NoiseField
) -> torch.Tensor:
    """`decoder(z, timestep, noise)` piece by piece: un-normalised latents (B, C, F, h, w) →
    (B, 3, 8(F−1)+1, 32h, 32w) in z's dtype. Each tile is streamed along time in chunks of `plan.frames`
    latent frames (exact), and sees the part of `noise`'s whole-frame maps under it."""
    assert plan.overlap is not None, "resolve the overlap first (TilingPlan.with_overlap)"
    b, _, frames, height, width = z.shape
    grid = (
        _tiles(height, plan.tile, plan.overlap, VAE_SPATIAL_SCALE),
        _tiles(width, plan.tile, plan.overlap, VAE_SPATIAL_SCALE),
    )

    def run(rows: slice, cols: slice) -> Iterator[tuple[int, torch.Tensor]]:
        steps = decoder.steps(timestep, noise.piece(rows, cols, (height, width)), z.dtype)
        start = 0
        for x in stream(steps, z[:, :, :, rows, cols], plan.frames):
            yield start, x
            start += x.shape[2]

    channels = decoder.conv_out.conv.out_channels // decoder.patch_size**2
    shape = (b, channels, VAE_TEMPORAL_SCALE * (frames - 1) + 1, VAE_SPATIAL_SCALE * height, VAE_SPATIAL_SCALE * width)
    return _joined(grid, run, shape, z.dtype, z.device)


def encode_tiles(encoder: Encoder, video: torch.Tensor, plan: TilingPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """`encoder(video)` piece by piece: video (B, 3, 1+8k, H, W) → mean (B, 128, 1+k, H/32, W/32) and
    log-variance (B, 1, 1+k, H/32, W/32). Temporal chunks of `plan.frames` latent frames are exact;
    spatial tiles are blended in latent space."""
    assert plan.overlap is not None, "resolve the overlap first (TilingPlan.with_overlap)"
    b, _, frames, height, width = video.shape
    h, w = height // VAE_SPATIAL_SCALE, width // VAE_SPATIAL_SCALE
    step = VAE_TEMPORAL_SCALE * plan.frames
    bounds = [0, *range(1 + step, frames, step), frames]  # pixel frames: 1 + 8·frames, then 8·frames each

    def run(rows: slice, cols: slice) -> Iterator[tuple[int, torch.Tensor]]:
        rows, cols = (slice(VAE_SPATIAL_SCALE * s.start, VAE_SPATIAL_SCALE * s.stop) for s in (rows, cols))
        start = 0
        with CausalStream(encoder):
            for a, c in itertools.pairwise(bounds):
                x = torch.cat(encoder(video[:, :, a:c, rows, cols]), dim=1)  # (B, 129, t, tile, tile)
                yield start, x
                start += x.shape[2]

    grid = (_tiles(h, plan.tile, plan.overlap, 1), _tiles(w, plan.tile, plan.overlap, 1))
    channels = encoder.conv_out.conv.out_channels
    latents = _joined(grid, run, (b, channels, 1 + (frames - 1) // VAE_TEMPORAL_SCALE, h, w), video.dtype, video.device)
    return latents[:, :-1], latents[:, -1:]
