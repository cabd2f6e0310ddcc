"""The LTX-Video diffusion transformer (DiT with adaLN-single, 3D RoPE and text cross-attention).

What is computed, in plain torch; how (kernels, compiled steps, fp8 products, weight storage, LoRA)
comes from the model's ops (model/ops.py) and its layers' storage (model/storage.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TransformerConfig
from ..loading.materialize import DtypeChoice, materialize
from .attention import text_mask_bias
from .fusion import step
from .layers import AdaLNSingle, CaptionProjection, FeedForward, Linear, RMSNorm
from .ops import UsesOps
from .rope import apply_rope, rope_tables

# Spatio-temporal guidance (STG) runs some batch samples through a weakened model: in chosen blocks their
# self-attention, or the whole block, is replaced. What replaces the attention (before `to_out`), given
# the attention's input and its values, as the official `SkipLayerStrategy` modes do:
SKIPPED_ATTENTION: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "attention_values": lambda x, v: v,  # every token attends only to itself: the output is its value
    "attention_skip": lambda x, v: x,  # the attention is left out: its input goes on to `to_out`
}
SKIP_MODES = (*SKIPPED_ATTENTION, "transformer_block")  # "transformer_block": the block returns its input


@dataclass(frozen=True)
class SkipLayers:
    """Which batch samples a forward pass perturbs for STG, in which blocks and how.

    mode: one of SKIP_MODES. blocks: indices into `transformer_blocks`. samples: (B,) bool, True for the
    perturbed samples; the others run exactly as without it. (The official "residual" mode is no mode
    here: it perturbs nothing in these blocks, see `sampling.guidance`.)
    """

    mode: str
    blocks: frozenset[int]
    samples: torch.Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", frozenset(self.blocks))
        if self.mode not in SKIP_MODES:
            raise ValueError(f"unknown skip mode {self.mode!r}; choose one of {', '.join(SKIP_MODES)}")
        if self.samples.ndim != 1 or self.samples.dtype != torch.bool:
            raise ValueError(f"samples must be a (B,) bool mask, got {self.samples.dtype} {tuple(self.samples.shape)}")

    def replace(self, out: torch.Tensor, replacement: torch.Tensor) -> torch.Tensor:
        """out (B, N, D) with the perturbed samples' rows taken from replacement (B, N, D), exactly."""
        return torch.where(self.samples.to(out.device)[:, None, None], replacement, out)


class Attention(UsesOps, nn.Module):
    """Self-attention (with RoPE) or cross-attention (context given) with RMS-normed queries and keys."""

    def __init__(self, dim: int, heads: int, context_dim: int, qk_norm_eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = Linear(dim, dim)
        self.to_k = Linear(context_dim, dim)
        self.to_v = Linear(context_dim, dim)
        self.q_norm = RMSNorm(dim, qk_norm_eps)
        self.k_norm = RMSNorm(dim, qk_norm_eps)
        self.to_out = nn.ModuleList([Linear(dim, dim)])  # key `to_out.0`

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        bias: torch.Tensor | None = None,
        skip: SkipLayers | None = None,
    ) -> torch.Tensor:
        """x: (B, N, D); context: (B, L, C) or None for self-attention → (B, N, D). skip: the STG
        perturbation of this layer (an attention mode of SKIPPED_ATTENTION), or None."""
        ops = self.ops
        if context is None:
            q, k, v = ops.project(x, self.to_q, self.to_k, self.to_v)
        else:
            q, (k, v) = self.to_q(x), ops.project(context, self.to_k, self.to_v)
        if rope is None:
            q, k = self.q_norm(q), self.k_norm(k)
        else:
            q, k = ops.run(rms_norm_rope_qk, q, k, self.q_norm.weight, self.k_norm.weight, self.q_norm.eps, *rope)
        attend = ops.attention if context is None else ops.cross_attention
        out = attend(q, k, v, self.heads, bias)  # (B, N, D)
        if skip is not None:
            out = skip.replace(out, SKIPPED_ATTENTION[skip.mode](x, v))
        return self.to_out[0](out)


class TransformerBlock(UsesOps, nn.Module):
    """adaLN-modulated self-attention, ungated cross-attention, adaLN-modulated feed-forward."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        dim = config.hidden_dim
        self.norm_eps = config.norm_eps
        self.attn1 = Attention(dim, config.num_heads, dim, config.qk_norm_eps)
        self.attn2 = Attention(dim, config.num_heads, config.cross_attention_dim, config.qk_norm_eps)
        self.ff = FeedForward(dim, config.ff_mult * dim)
        self.scale_shift_table = nn.Parameter(torch.empty(6, dim))

    def forward(
        self,
        x: torch.Tensor,
        modulation: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        context: torch.Tensor,
        context_bias: torch.Tensor | None,
        skip: SkipLayers | None = None,
    ) -> torch.Tensor:
        """x: (B, N, D); modulation: (B, T, 6, D) with T = 1 or N; context: (B, L, D); skip: the STG
        perturbation of this block, or None (only self-attention is perturbed, as in the official code).

        The six modulation vectors are, in order: shift, scale, gate of the attention branch, then of
        the feed-forward branch (index 0 … 5 into table + modulation)."""
        table, eps, run = self.scale_shift_table, self.norm_eps, self.ops.run
        attn_skip = skip if skip is not None and skip.mode in SKIPPED_ATTENTION else None
        attended = self.attn1(run(modulated_rms_norm, x, table, modulation, 0, eps), rope=rope, skip=attn_skip)
        out = run(gated_residual, x, attended, table, modulation, 2)
        cross = self.attn2(out, context=context, bias=context_bias)
        out, normed = run(add_then_modulated_rms_norm, out, cross, table, modulation, eps)
        out = run(gated_residual, out, self.ff(normed), table, modulation, 5)
        return skip.replace(out, x) if skip is not None and skip.mode == "transformer_block" else out


@step
def modulated_rms_norm(
    x: torch.Tensor, table: torch.Tensor, modulation: torch.Tensor, index: int, eps: float
) -> torch.Tensor:
    """RMSNorm(x)·(1 + scale) + shift, shift and scale being entries `index`, `index + 1` of
    table (6, D) + modulation (B, T, 6, D); the sum is formed per entry, never for all six."""
    shift = table[index] + modulation[:, :, index]
    scale = table[index + 1] + modulation[:, :, index + 1]
    return F.rms_norm(x, (x.shape[-1],), eps=eps) * (1 + scale) + shift


@step
def add_then_modulated_rms_norm(
    x: torch.Tensor, branch: torch.Tensor, table: torch.Tensor, modulation: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """x + branch (the ungated cross-attention residual) and its modulated norm for the feed-forward
    (entries 3, 4), in one pass over x."""
    x = x + branch
    return x, modulated_rms_norm.__wrapped__(x, table, modulation, 3, eps)


@step
def gated_residual(
    x: torch.Tensor, branch: torch.Tensor, table: torch.Tensor, modulation: torch.Tensor, index: int
) -> torch.Tensor:
    """x + gate·branch with gate = entry `index` of table + modulation."""
    return x + (table[index] + modulation[:, :, index]) * branch


def rms_norm_rope(
    x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """The query/key path: RMSNorm with a learned weight over the full vector, then RoPE."""
    return apply_rope(F.rms_norm(x, (x.shape[-1],), weight, eps), cos, sin)


@step
def rms_norm_rope_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`rms_norm_rope` of the queries and of the keys of self-attention, each with its norm weight."""
    return rms_norm_rope(q, q_weight, eps, cos, sin), rms_norm_rope(k, k_weight, eps, cos, sin)


class LTXVideoTransformer(nn.Module):
    """The denoiser: latent tokens, noise level, text and token positions → flow velocity."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_dim
        self.patchify_proj = Linear(config.in_channels, dim)
        self.adaln_single = AdaLNSingle(dim)
        self.caption_projection = CaptionProjection(config.caption_channels, dim)
        self.transformer_blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.scale_shift_table = nn.Parameter(torch.empty(2, dim))
        self.proj_out = Linear(dim, config.out_channels)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: that of the unquantized parameters (fp8 weights are upcast to it)."""
        return self.scale_shift_table.dtype

    @property
    def streamed_blocks(self) -> nn.ModuleList:
        """The blocks that low-VRAM mode streams (see `ltx_core.streaming`)."""
        return self.transformer_blocks

    @classmethod
    def from_state_dict(
        cls,
        config: TransformerConfig,
        state_dict: Mapping[str, torch.Tensor],
        *,
        dtype: DtypeChoice = None,
        device: torch.device | str | None = None,
        consume: bool = False,
    ) -> LTXVideoTransformer:
        """Build on the `meta` device and adopt the tensors of an original-key state dict
        (see `materialize` for dtype, device and consume)."""
        with torch.device("meta"):
            model = cls(config)
        return materialize(model, state_dict, dtype=dtype, device=device, what="LTX-Video transformer", consume=consume)

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        positions: torch.Tensor,
        skip: SkipLayers | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity (noise − clean) of latent tokens.

        x: (B, N, in_channels) tokens in (f, h, w) order.
        sigma: (B,) one noise level per sample, or (B, N) per token, in [0, 1]; kept in float32.
        context: (B, L, caption_channels) T5 hidden states; context_mask: (B, L), 1 = keep, or None.
        positions: (B or 1, 3, N) RoPE coordinates (see `rope.video_positions`).
        skip: STG's perturbation of some samples in some blocks (see SkipLayers), or None.
        Returns (B, N, out_channels).
        """
        batch, tokens, _ = x.shape
        if sigma.shape not in ((batch,), (batch, tokens)):
            raise ValueError(f"sigma must have shape ({batch},) or ({batch}, {tokens}), got {tuple(sigma.shape)}")
        if positions.shape[1:] != (3, tokens):
            raise ValueError(f"positions must have shape (B, 3, {tokens}), got {tuple(positions.shape)}")
        cfg = self.config
        if skip is not None:
            self._check_skip(skip, batch)
        dtype = self.dtype
        x = self.patchify_proj(x.to(dtype))

        # Timesteps stay float32 up to the sinusoid: σ·1000 in bf16 would be off by up to 2.
        t = sigma.to(torch.float32).reshape(batch, -1) * cfg.timestep_scale_multiplier  # (B, T)
        modulation, embedded_t = self.adaln_single(t, dtype)  # (B, T, 6D), (B, T, D)
        modulation = modulation.unflatten(-1, (6, -1))  # (B, T, 6, D)

        rope = rope_tables(positions, cfg.hidden_dim, cfg.rope_theta, cfg.rope_max_pos)  # once per forward
        context = self.caption_projection(context.to(dtype))  # (B, L, D)
        context_bias = None if context_mask is None else text_mask_bias(context_mask, dtype)

        for i, block in enumerate(self.transformer_blocks):
            block_skip = skip if skip is not None and i in skip.blocks else None
            x = block(x, modulation, rope, context, context_bias, block_skip)

        shift, scale = (self.scale_shift_table + embedded_t[:, :, None]).unbind(2)  # (B, T, D) each
        x = F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + scale) + shift
        return self.proj_out(x)

    def _check_skip(self, skip: SkipLayers, batch: int) -> None:
        layers = self.config.num_layers
        if skip.samples.shape != (batch,):
            raise ValueError(f"skip.samples must have shape ({batch},), got {tuple(skip.samples.shape)}")
        outside = sorted(i for i in skip.blocks if not 0 <= i < layers)
        if outside:
            raise ValueError(f"cannot skip blocks {outside}: this model has blocks 0 … {layers - 1}")
