"""Pixel ↔ latent geometry shared by the VAE, the transformer and the sampler."""

from __future__ import annotations

LATENT_CHANNELS = 128
VAE_TEMPORAL_SCALE = 8  # latent frame k ≥ 1 covers pixel frames 8k−7 … 8k; latent frame 0 is pixel frame 0
VAE_SPATIAL_SCALE = 32


def _nearest(valid: list[int]) -> str:
    return " or ".join(str(v) for v in valid)


def check_frames(frames: int) -> None:
    """Raise ValueError unless `frames` is 1 + 8·k (k ≥ 0), naming the nearest valid counts."""
    if frames >= 1 and (frames - 1) % VAE_TEMPORAL_SCALE == 0:
        return
    below = 1 + max(0, (frames - 1) // VAE_TEMPORAL_SCALE) * VAE_TEMPORAL_SCALE
    above = below + VAE_TEMPORAL_SCALE if frames > below else below
    raise ValueError(f"got {frames} frames; LTX-Video needs 1 + 8·k frames: use {_nearest(sorted({below, above}))}")


def check_spatial(name: str, size: int) -> None:
    """Raise ValueError unless the pixel `size` of axis `name` is a positive multiple of 32."""
    if size >= VAE_SPATIAL_SCALE and size % VAE_SPATIAL_SCALE == 0:
        return
    below = size // VAE_SPATIAL_SCALE * VAE_SPATIAL_SCALE
    above = below + VAE_SPATIAL_SCALE
    raise ValueError(
        f"got {name} {size}; LTX-Video needs a multiple of {VAE_SPATIAL_SCALE} pixels: "
        f"use {_nearest([v for v in (below, above) if v > 0])}"
    )


def check_video_shape(frames: int, height: int, width: int) -> None:
    """The encoder's input rules: 1 + 8·k frames, height and width multiples of 32."""
    check_frames(frames)
    check_spatial("height", height)
    check_spatial("width", width)


def latent_frames(frames: int) -> int:
    """Pixel frames (1 + 8·k) → latent frames (1 + k)."""
    check_frames(frames)
    return (frames - 1) // VAE_TEMPORAL_SCALE + 1


def pixel_frames(latent_frames: int) -> int:
    """Latent frames F → decoded pixel frames 8·(F − 1) + 1."""
    if latent_frames < 1:
        raise ValueError(f"got {latent_frames} latent frames; need at least 1")
    return (latent_frames - 1) * VAE_TEMPORAL_SCALE + 1
