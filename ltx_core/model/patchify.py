"""Latent video (B, C, F, H, W) ↔ transformer tokens (B, N, C), N = F·H·W in (f, h, w) order (patch 1×1×1)."""

from __future__ import annotations

import torch


def to_tokens(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) → (B, F·H·W, C)."""
    b, c = latents.shape[:2]
    return latents.permute(0, 2, 3, 4, 1).reshape(b, -1, c)


def from_tokens(tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """(B, F·H·W, C) → (B, C, F, H, W)."""
    b, _, c = tokens.shape
    return tokens.reshape(b, frames, height, width, c).permute(0, 4, 1, 2, 3)
