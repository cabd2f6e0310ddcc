"""Building blocks of the transformer, named after the checkpoint keys they own. Linear layers are
`storage.Linear` (swapped for another storage at load); the feed-forward computes with its model's
ops (model/ops.py)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import UsesOps
from .storage import Linear

TIMESTEP_EMBEDDING_DIM = 256


class RMSNorm(nn.Module):
    """RMS normalisation with a learned weight (the query/key norms, over the full vector)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def timestep_sinusoid(t: torch.Tensor, dim: int = TIMESTEP_EMBEDDING_DIM) -> torch.Tensor:
    """Sinusoidal embedding of float32 timesteps (already × 1000): (...,) → (..., dim), cos half first."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    args = t.to(torch.float32)[..., None] * exponent.exp()
    return torch.cat([args.cos(), args.sin()], dim=-1)


class TimestepMLP(nn.Module):
    """linear_1 → SiLU → linear_2 over the sinusoidal embedding."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = Linear(in_dim, dim)
        self.linear_2 = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class AdaLNSingle(nn.Module):
    """adaLN-single (PixArt-α): one timestep MLP shared by all blocks.

    Returns the per-block modulation `linear(SiLU(emb))` with `n_params` vectors per token and
    the embedding itself ("embedded timestep"), which modulates the output layer.
    """

    def __init__(self, dim: int, n_params: int = 6) -> None:
        super().__init__()
        # `emb.timestep_embedder` mirrors the checkpoint keys
        self.emb = nn.ModuleDict({"timestep_embedder": TimestepMLP(TIMESTEP_EMBEDDING_DIM, dim)})
        self.linear = Linear(dim, n_params * dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """t: (B, T) float32 scaled timesteps, T = 1 or N → ((B, T, n_params·D), (B, T, D))."""
        emb = self.emb["timestep_embedder"](timestep_sinusoid(t).to(dtype))  # float32 → activations once
        return self.linear(F.silu(emb)), emb


class CaptionProjection(nn.Module):
    """T5 hidden states → transformer width: linear_1 → GELU(tanh) → linear_2."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = Linear(in_dim, dim)
        self.linear_2 = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


class _GeluProjection(UsesOps, nn.Module):
    def __init__(self, dim: int, inner_dim: int) -> None:
        super().__init__()
        self.proj = Linear(dim, inner_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.gelu_linear(self.proj, x)  # GELU(tanh)(proj(x))


class FeedForward(UsesOps, nn.Module):
    """Linear → GELU(tanh) → Linear, keyed `net.0.proj` and `net.2` as in the checkpoints."""

    def __init__(self, dim: int, inner_dim: int) -> None:
        super().__init__()
        # slot 1 held a dropout in the reference code; keeping it keeps the key `net.2`
        self.net = nn.ModuleList([_GeluProjection(dim, inner_dim), nn.Identity(), Linear(inner_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) → (B, N, D) through the 4×-wide hidden activations."""
        return self.ops.feed_forward(self.net[0].proj, self.net[2], x)
