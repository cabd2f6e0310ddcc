"""Tiled and temporally chunked decode: overlapping latent tiles decoded one at a time and blended
with linear ramps, so peak memory follows the tile rather than the whole video.

Tiles are not exact: every decoder conv sees the tile border instead of its neighbours. The overlap
and the blending hide most of it (see tests/test_vae.py for the measured error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...config import VAEConfig
from ...types import VAE_SPATIAL_SCALE, VAE_TEMPORAL_SCALE
from .autoencoder import VideoVAE

# live activations per decoder stage: the input, the padded copy, the conv output and a norm temporary
_LIVE_TENSORS = 4
_UPSAMPLE_VOLUME = {"compress_all": 8, "compress_space": 4, "compress_time": 2}


@dataclass(frozen=True)
class DecodeTiling:
    """Latent tile size and overlap: `tile` × `tile` spatially, `frames` latent frames per chunk."""

    tile: int = 16
    overlap: int = 4
    frames: int = 8
    frame_overlap: int = 2

    def __post_init__(self) -> None:
        if not (0 <= self.overlap < self.tile and 0 <= self.frame_overlap < self.frames - 1):
            raise ValueError(f"overlaps must be smaller than the tile: {self}")


def decoder_bytes_per_pixel(config: VAEConfig, dtype: torch.dtype) -> float:
    """Estimated peak decoder activation bytes per output pixel (per frame and batch item)."""
    channels = config.decoder_base_channels
    for block in config.decoder_blocks:
        channels *= block.multiplier if block.kind == "res_x_y" or block.kind.startswith("compress") else 1
    pixels_per_element = VAE_TEMPORAL_SCALE * VAE_SPATIAL_SCALE**2  # at the latent resolution
    worst = channels / pixels_per_element
    for block in reversed(config.decoder_blocks):
        if block.kind.startswith("compress"):
            pixels_per_element /= _UPSAMPLE_VOLUME[block.kind]
            worst = max(worst, 8 * channels / pixels_per_element)  # the conv before depth-to-space
            channels //= block.multiplier
        elif block.kind == "res_x_y":
            channels //= block.multiplier
        worst = max(worst, channels / pixels_per_element)
    return _LIVE_TENSORS * worst * torch.finfo(dtype).bits / 8


def plan_decode_tiling(
    config: VAEConfig, latent_shape: tuple[int, ...], budget_bytes: int, dtype: torch.dtype
) -> DecodeTiling | None:
    """The largest square tile (and chunk length) whose decode fits `budget_bytes`; None if the whole
    video fits. latent_shape: (B, C, F, h, w)."""
    batch, _, frames, height, width = latent_shape
    per_pixel = decoder_bytes_per_pixel(config, dtype) * batch

    def pixels(f: int, h: int, w: int) -> int:  # decoded pixels of an (f, h, w) latent block
        return (VAE_TEMPORAL_SCALE * (f - 1) + 1) * h * w * VAE_SPATIAL_SCALE**2

    if pixels(frames, height, width) * per_pixel <= budget_bytes:
        return None
    chunk = min(frames, 8)
    for tile in range(max(height, width), 3, -1):
        if pixels(chunk, min(tile, height), min(tile, width)) * per_pixel <= budget_bytes:
            return DecodeTiling(tile=tile, overlap=max(1, tile // 4), frames=chunk, frame_overlap=min(2, chunk - 2))
    return DecodeTiling(tile=4, overlap=1, frames=3, frame_overlap=1)


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    stride = (size - tile) / (count - 1)
    return [round(i * stride) for i in range(count)]


def _ramp(length: int, fade_in: int, fade_out: int) -> torch.Tensor:
    """Weights 1 in the middle, rising over `fade_in` and falling over `fade_out` samples (never 0)."""
    w = torch.ones(length)
    if fade_in:
        w[:fade_in] = torch.arange(1, fade_in + 1) / (fade_in + 1)
    if fade_out:
        w[length - fade_out :] = torch.arange(fade_out, 0, -1) / (fade_out + 1)
    return w


def _fades(starts: list[int], tile: int, size: int, index: int, scale: int, offset: int = 0) -> tuple[int, int]:
    """Pixel overlap with the previous and next tile along one axis."""
    end = min(starts[index] + tile, size)
    fade_in = (starts[index - 1] + tile - starts[index]) * scale + offset if index else 0
    fade_out = (end - starts[index + 1]) * scale + offset if index + 1 < len(starts) else 0
    return max(fade_in, 0), max(fade_out, 0)


def tiled_decode(
    vae: VideoVAE,
    latents: torch.Tensor,
    timestep: float | torch.Tensor | None = None,
    *,
    tiling: DecodeTiling = DecodeTiling(),
    noise_scale: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`vae.decode` by overlapping tiles: normalised latents (B, C, F, h, w) → (B, 3, 8(F−1)+1, 32h, 32w)."""
    b, _, frames, height, width = latents.shape
    t_starts = _starts(frames, tiling.frames, tiling.frame_overlap)
    h_starts, w_starts = _starts(height, tiling.tile, tiling.overlap), _starts(width, tiling.tile, tiling.overlap)
    out = weight = None
    for ti, f0 in enumerate(t_starts):
        f1 = min(f0 + tiling.frames, frames)
        # chunk [f0, f1) decodes to pixel frames [8·f0, 8·(f1−1)]: its first latent frame becomes one frame
        fades_t = _fades(t_starts, tiling.frames, frames, ti, VAE_TEMPORAL_SCALE, offset=-VAE_TEMPORAL_SCALE + 1)
        for hi, h0 in enumerate(h_starts):
            for wi, w0 in enumerate(w_starts):
                tile = latents[:, :, f0:f1, h0 : h0 + tiling.tile, w0 : w0 + tiling.tile]
                pixels = vae.decode(tile, timestep, noise_scale=noise_scale, generator=generator)
                if out is None:
                    shape = (b, pixels.shape[1], VAE_TEMPORAL_SCALE * (frames - 1) + 1, 32 * height, 32 * width)
                    out = torch.zeros(shape, dtype=torch.float32, device=pixels.device)
                    weight = torch.zeros(shape[2:], dtype=torch.float32, device=pixels.device)
                _, _, pt, ph, pw = pixels.shape
                mask = (
                    _ramp(pt, *fades_t)[:, None, None]
                    * _ramp(ph, *_fades(h_starts, tiling.tile, height, hi, VAE_SPATIAL_SCALE))[None, :, None]
                    * _ramp(pw, *_fades(w_starts, tiling.tile, width, wi, VAE_SPATIAL_SCALE))[None, None, :]
                ).to(out.device)  # (pt, ph, pw)
                region = (slice(VAE_TEMPORAL_SCALE * f0, VAE_TEMPORAL_SCALE * f0 + pt),
                          slice(32 * h0, 32 * h0 + ph), slice(32 * w0, 32 * w0 + pw))  # fmt: skip
                out[(slice(None), slice(None), *region)] += pixels.float() * mask
                weight[region] += mask
    return (out / weight).to(latents.dtype)
