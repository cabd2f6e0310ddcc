"""Frame conditioning: images or short clips pinned to frames of the video, as clean latents plus a
per-token strength.

A conditioned token with strength s starts at `s·clean + (1 − s)·noise` and runs on its own noise
level `σ·(1 − s)`: at strength 1 it sits at σ = 0 the whole time (kept exactly, as in diffusers'
image-to-video pipeline and ComfyUI), at strength s < 1 it is partly re-generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..types import VAE_TEMPORAL_SCALE


@dataclass(frozen=True)
class FrameCondition:
    """Normalised latents (1 or B, 128, f, h, w) of an image (f = 1) or a clip of 1 + 8·(f − 1) frames,
    pinned from pixel frame `frame` (0 or a multiple of 8) with `strength` in [0, 1]."""

    latents: torch.Tensor
    frame: int = 0
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.latents.ndim != 5:
            raise ValueError(f"condition latents must be (B, C, f, h, w), got shape {tuple(self.latents.shape)}")
        if self.frame < 0 or self.frame % VAE_TEMPORAL_SCALE:
            below = self.frame // VAE_TEMPORAL_SCALE * VAE_TEMPORAL_SCALE
            raise ValueError(
                f"a condition can start at frame 0 or a multiple of {VAE_TEMPORAL_SCALE}, got {self.frame}: "
                f"use {max(below, 0)} or {max(below, 0) + VAE_TEMPORAL_SCALE}"
            )
        if not 0 <= self.strength <= 1:
            raise ValueError(f"condition strength must be in [0, 1], got {self.strength}")

    @property
    def latent_frame(self) -> int:
        """Latent frame k holds pixel frames 8k − 7 … 8k, so pixel frame 8k sits in latent frame k."""
        return self.frame // VAE_TEMPORAL_SCALE


def check_fits(cond: FrameCondition, shape: Sequence[int]) -> None:
    """Raise ValueError unless `cond` fits a latent video of `shape` (B, C, F, H, W)."""
    b, c, f, h, w = shape
    cb, cc, cf, ch, cw = cond.latents.shape
    if cc != c or (ch, cw) != (h, w) or cb not in (1, b):
        raise ValueError(
            f"condition latents {tuple(cond.latents.shape)} do not fit the video latents {tuple(shape)}: "
            "encode the image at the video's width and height"
        )
    if cond.latent_frame + cf > f:
        raise ValueError(
            f"a condition of {cf} latent frames at frame {cond.frame} runs past the video's {f} latent "
            f"frames ({1 + (f - 1) * VAE_TEMPORAL_SCALE} pixel frames): start it earlier or make the video longer"
        )


def condition_latents(
    shape: Sequence[int], conditions: Sequence[FrameCondition], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean latents (B, C, F, H, W) and strength mask (B, 1, F, H, W), both float32, from `conditions`
    on a latent video of `shape`; a later condition overwrites an earlier one where they overlap."""
    b, c, f, h, w = shape
    clean = torch.zeros(b, c, f, h, w, device=device)
    strength = torch.zeros(b, 1, f, h, w, device=device)
    for cond in conditions:
        check_fits(cond, shape)
        start, cf = cond.latent_frame, cond.latents.shape[2]
        clean[:, :, start : start + cf] = cond.latents.to(device=device, dtype=torch.float32)
        strength[:, :, start : start + cf] = cond.strength
    return clean, strength
