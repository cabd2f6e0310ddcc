"""3D rotary position embedding of the LTX-Video transformer.

Every token has a coordinate (t, y, x) in pixel units, with t divided by the frame rate. Each axis is
made fractional by its `max_pos`, mapped to [−1, 1], and rotates its own third of the frequency
bands. Tables and rotation run in float32 (as diffusers does); the result is cast back to the
activation dtype once.
"""

from __future__ import annotations

import math

import torch

from ..types import VAE_SPATIAL_SCALE, VAE_TEMPORAL_SCALE


def video_positions(
    frames: int,
    height: int,
    width: int,
    *,
    frame_rate: float,
    causal_fix: bool,
    start_frame: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """RoPE coordinates of a latent video's tokens, in token order (f, then h, then w).

    Returns (1, 3, F·H·W) float32: pixel-space corner of each latent cell, time in seconds-like
    units `pixel_frame / frame_rate`. With `causal_fix` (0.9.5+) latent frame 0 is one pixel frame
    long, so frames 0, 1, 2, … sit at pixel frames 0, 1, 9, 17, … `start_frame` shifts the time
    axis by whole pixel frames, for condition tokens placed later in the video (added before the
    division, in integers, as the references do).
    """
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    grid = torch.meshgrid(
        torch.arange(frames, device=device),
        torch.arange(height, device=device),
        torch.arange(width, device=device),
        indexing="ij",
    )
    scale = torch.tensor([VAE_TEMPORAL_SCALE, VAE_SPATIAL_SCALE, VAE_SPATIAL_SCALE], device=device)
    coords = torch.stack(grid).flatten(1) * scale[:, None]  # (3, N) pixel units, integer
    if causal_fix:
        coords[0] = (coords[0] + 1 - VAE_TEMPORAL_SCALE).clamp(min=0)
    coords[0] += start_frame
    return fractional_positions(coords, frame_rate)


def fractional_positions(coords: torch.Tensor, frame_rate: float) -> torch.Tensor:
    """Integer pixel coordinates (3, N) → the (1, 3, N) float32 positions the model takes: time in
    `pixel_frame / frame_rate`, as the references divide it."""
    coords = coords.to(torch.float32, copy=True)
    coords[0] = coords[0] * (1.0 / frame_rate)  # the same float op as the official pipeline
    return coords[None]


def rope_tables(
    positions: torch.Tensor, dim: int, theta: float, max_pos: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for `apply_rope` on a `dim`-wide query/key vector.

    positions: (B, 3, N) coordinates from `video_positions` (or keyframe tokens' own).
    Returns two (B, N, dim // 2) float32 tables, one entry per interleaved channel pair.
    """
    n_freq = dim // 6  # bands per axis
    base = theta ** torch.linspace(0.0, 1.0, n_freq, device=positions.device, dtype=torch.float32)
    base = base * (math.pi / 2)
    # per-axis division by Python numbers: no host-to-device copy (so CUDA graphs can capture it)
    positions = positions.to(torch.float32)
    fractional = torch.stack([positions[:, axis] / max_pos[axis] for axis in range(3)], dim=-1)  # (B, N, 3)
    angles = base * (fractional[..., None] * 2 - 1)  # (B, N, 3, n_freq)
    angles = angles.transpose(-1, -2).flatten(2)  # (B, N, 3·n_freq), frequency-major, axis-minor
    cos, sin = angles.cos(), angles.sin()
    pad_pairs = (dim % 6) // 2  # the first dim % 6 channels are not rotated
    if pad_pairs:
        cos = torch.cat([cos.new_ones(*cos.shape[:2], pad_pairs), cos], dim=-1)
        sin = torch.cat([sin.new_zeros(*sin.shape[:2], pad_pairs), sin], dim=-1)
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs (x0, x1) → (x0·cos − x1·sin, x1·cos + x0·sin).

    x: (B, N, D) query or key before the head split, so each head sees its own frequency band.
    cos, sin: (B or 1, N, D // 2) float32 from `rope_tables`.
    """
    x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, N, D/2) each
    out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)
    return out.flatten(-2).to(x.dtype)
