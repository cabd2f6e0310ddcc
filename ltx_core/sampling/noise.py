"""Seeded noise that is identical on every device: drawn on the CPU in float32, then moved."""

from __future__ import annotations

import torch


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator for `seed`: the video's noise and, after it, the noise of appended condition
    tokens and of re-noised conditions (see sampler.sample) come from it in that order."""
    return torch.Generator("cpu").manual_seed(int(seed))


def draw_noise(
    shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The next standard normal numbers of `generator` (a CPU one), drawn in float32, moved to `device`."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def seeded_noise(
    shape: tuple[int, ...], seed: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard normal noise of `shape` from `seed`; the same numbers on CPU and GPU, in any dtype
    (ComfyUI and diffusers draw their noise the same way on the CPU, so a seed gives the same noise there)."""
    return draw_noise(shape, seeded_generator(seed), device=device, dtype=dtype)
