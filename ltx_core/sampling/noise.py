"""Seeded noise that is identical on every device: drawn on the CPU in float32, then moved."""

from __future__ import annotations

import torch


def seeded_noise(
    shape: tuple[int, ...], seed: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard normal noise of `shape` from `seed`; the same numbers on CPU and GPU, in any dtype
    (ComfyUI draws its noise the same way, so a seed gives the same noise there)."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
