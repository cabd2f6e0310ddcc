"""Building blocks of the transformer, named after the checkpoint keys they own."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .fp8 import Fp8Linear, gelu_quantize_rows
from .fusion import fusion_enabled

TIMESTEP_EMBEDDING_DIM = 256


class Linear(nn.Linear):
    """nn.Linear whose weight may be stored narrower than the activations (fp8): cast per call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if weight.dtype != x.dtype:
            weight = weight.to(x.dtype)
            bias = None if bias is None else bias.to(x.dtype)
        return F.linear(x, weight, bias)


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


class _GeluProjection(nn.Module):
    def __init__(self, dim: int, inner_dim: int) -> None:
        super().__init__()
        self.proj = Linear(dim, inner_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.proj
        if x.is_cuda and fusion_enabled("cuda") and type(proj) is Linear and proj.weight.dtype == x.dtype:
            # GELU(tanh) in the matmul's epilogue (cuBLASLt): the 4×-wide activation is written once
            # and never re-read (on the CPU this op computes the erf GELU, hence CUDA only)
            flat = torch._addmm_activation(proj.bias, x.flatten(0, -2), proj.weight.t(), use_gelu=True)
            return flat.unflatten(0, x.shape[:-1])
        return F.gelu(proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """Linear → GELU(tanh) → Linear, keyed `net.0.proj` and `net.2` as in the checkpoints."""

    def __init__(self, dim: int, inner_dim: int) -> None:
        super().__init__()
        # slot 1 held a dropout in the reference code; keeping it keeps the key `net.2`
        self.net = nn.ModuleList([_GeluProjection(dim, inner_dim), nn.Identity(), Linear(inner_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net[2]
        if isinstance(out, Fp8Linear) and out.fast(x):  # GELU and the second product's quantization in one pass
            hidden = self.net[0].proj(x)
            return out.from_rows(*gelu_quantize_rows(hidden.reshape(-1, hidden.shape[-1])), hidden)
        return out(self.net[0](x))
