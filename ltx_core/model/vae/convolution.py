"""Causal 3D convolution and the space-to-depth / depth-to-space resamplers of the video VAE."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..fusion import step
from ..ops import UsesOps

PIXEL_NORM_EPS = 1e-8
Stride = tuple[int, int, int]  # frames, height, width


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, T, H, W) → (B, C·p·p, T, H/p, W/p); channel index c·p² + w_sub·p + h_sub (w before h)."""
    return rearrange(x, "b c t (h q) (w r) -> b (c r q) t h w", q=patch, r=patch)


def unpatchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of `patchify`: (B, C·p·p, T, H, W) → (B, C, T, H·p, W·p)."""
    return rearrange(x, "b (c r q) t h w -> b c t (h q) (w r)", q=patch, r=patch)


def space_to_depth(x: torch.Tensor, stride: Stride) -> torch.Tensor:
    """(B, C, T, H, W) → (B, C·st·sh·sw, T/st, H/sh, W/sw), sub-positions in (t, h, w) order inside c."""
    return rearrange(x, "b c (t p1) (h p2) (w p3) -> b (c p1 p2 p3) t h w", p1=stride[0], p2=stride[1], p3=stride[2])


def depth_to_space(x: torch.Tensor, stride: Stride) -> torch.Tensor:
    """Inverse of `space_to_depth`: (B, C·st·sh·sw, T, H, W) → (B, C, T·st, H·sh, W·sw)."""
    return rearrange(x, "b (c p1 p2 p3) t h w -> b c (t p1) (h p2) (w p3)", p1=stride[0], p2=stride[1], p3=stride[2])


class CausalConv3d(UsesOps, nn.Module):
    """k×k×k convolution, padded in time by repeating edge frames and in space by `padding_mode`.

    Causal: the first frame is repeated k−1 times in front, so output frame t sees only frames ≤ t.
    Non-causal: (k−1)/2 copies of the first frame in front and of the last frame behind.
    The weights live in `.conv`, as in the checkpoints (`….conv.weight`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: Stride = (1, 1, 1),
        causal: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.causal = causal
        pad = kernel_size // 2
        self.conv = nn.Conv3d(
            in_channels, out_channels, kernel_size, stride=stride, padding=(0, pad, pad), padding_mode=padding_mode
        )

    @property
    def time_padding(self) -> tuple[int, int]:
        """Copies of the first and of the last frame the input needs in front and behind."""
        if self.causal:
            return self.kernel_size - 1, 0
        return (self.kernel_size - 1) // 2, (self.kernel_size - 1) // 2

    @property
    def bias(self) -> torch.Tensor | None:
        return self.conv.bias

    def forward(self, x: torch.Tensor, prologue: Prologue | None = None, *, add_bias: bool = True) -> torch.Tensor:
        """(B, C_in, T, H, W) → (B, C_out, T', H', W').

        With a `prologue` the input first goes through `_norm_silu_pad`, fused with the time padding
        (frame by frame, so a causal stream's context frames, prepended to x, get the same treatment).
        With `add_bias=False` the output leaves the bias out, for the caller to add in its next fused
        step (a `Prologue`, `add_noise_and_skip`, `unfold_and_skip`): on CUDA the convolution would
        otherwise add it in a pass of its own over the output.
        """
        conv, (front, back) = self.conv, self.time_padding
        bias = conv.bias if add_bias else None
        if prologue is None:
            return conv._conv_forward(pad_time(x, front, back), conv.weight, bias)
        p = prologue
        args = (x, p.bias, p.noise, p.noise_scale, p.shift, p.scale, front, back)
        if conv.padding_mode == "zeros":  # cuDNN pads zeros itself, at no cost
            x = self.ops.run(_norm_silu_pad, *args, "zeros", 0, PIXEL_NORM_EPS)
            return F.conv3d(x, conv.weight, bias, conv.stride, conv.padding)
        # reflect / replicate: the prologue pads space too, in the same pass
        x = self.ops.run(_norm_silu_pad, *args, conv.padding_mode, self.kernel_size // 2, PIXEL_NORM_EPS)
        return F.conv3d(x, conv.weight, bias, conv.stride)


@dataclass(frozen=True)
class Prologue:
    """The elementwise work before a res block's (or conv_out's) convolution, all optional but the norm:
    the previous convolution's left-out bias (C,), injected noise (a spatial map (H, W) times a
    per-channel scale (C,)), then PixelNorm, the adaLN shift and scale (B, C), SiLU."""

    bias: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    noise_scale: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    scale: torch.Tensor | None = None


def pad_time(x: torch.Tensor, front: int, back: int) -> torch.Tensor:
    """Repeat the first frame `front` times in front of (B, C, T, H, W) and the last `back` times behind."""
    parts = [x[:, :, :1].expand(-1, -1, front, -1, -1), x, x[:, :, -1:].expand(-1, -1, back, -1, -1)]
    return torch.cat(parts, dim=2)


def pixel_norm(x: torch.Tensor, eps: float = PIXEL_NORM_EPS) -> torch.Tensor:
    """PixelNorm: x / sqrt(mean over channels of x² + eps), no parameters. x: (B, C, T, H, W)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def channel_noise(noise: torch.Tensor, noise_scale: torch.Tensor) -> torch.Tensor:
    """A spatial map (H, W) times a per-channel scale (C,) → (C, 1, H, W), broadcast over (B, C, T, H, W)."""
    return (noise * noise_scale[:, None, None])[:, None]


def per_channel(v: torch.Tensor) -> torch.Tensor:
    """(C,) → (C, 1, 1, 1) or (B, C) → (B, C, 1, 1, 1), to broadcast over (B, C, T, H, W)."""
    return v[..., None, None, None]


@step
def _norm_silu_pad(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    noise: torch.Tensor | None,
    noise_scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    scale: torch.Tensor | None,
    front: int,
    back: int,
    space_mode: str,
    space: int,
    eps: float = PIXEL_NORM_EPS,
) -> torch.Tensor:
    """[x + bias] [+ noise] → PixelNorm → [·(1 + scale) + shift] → SiLU → `pad_time(…, front, back)`
    [→ `space` pixels of `space_mode` padding around H and W]: the elementwise work before a
    convolution (see Prologue), one pass over x on CUDA with fused ops (a Triton kernel)."""
    if bias is not None:
        x = x + per_channel(bias)
    if noise is not None:
        x = x + channel_noise(noise, noise_scale)
    h = pixel_norm(x, eps)
    if scale is not None:
        h = h * (1 + per_channel(scale)) + per_channel(shift)
    h = pad_time(F.silu(h), front, back)
    if space:
        h = F.pad(h, (space, space, space, space, 0, 0), mode=space_mode)
    return conv_layout(h)


def conv_layout(x: torch.Tensor) -> torch.Tensor:
    """On CUDA, (B, C, T, H, W) activations in channels-last order: cuDNN's 3D convolutions compute in
    that order, so every convolution input that arrives so (and every output, which follows its input)
    saves two layout transposes. Inside a fused function the reordering costs nothing extra."""
    return x.contiguous(memory_format=torch.channels_last_3d) if x.is_cuda else x


class SpaceToDepthDownsample(nn.Module):
    """Encoder `compress_*_res`: conv to C_out/prod(stride) channels, folded to C_out by space-to-depth,
    plus a parameter-free residual (the folded input averaged over groups of channels)."""

    def __init__(self, in_channels: int, out_channels: int, stride: Stride, padding_mode: str) -> None:
        super().__init__()
        self.stride = stride
        volume = math.prod(stride)
        if (in_channels * volume) % out_channels or out_channels % volume:
            raise ValueError(f"space-to-depth {in_channels}→{out_channels} channels does not divide stride {stride}")
        self.group_size = in_channels * volume // out_channels
        self.conv = CausalConv3d(in_channels, out_channels // volume, causal=True, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T, H, W) → (B, C_out, T/st, H/sh, W/sw), where T counts the prepended frame."""
        if self.stride[0] == 2:
            x = torch.cat([x[:, :, :1], x], dim=2)  # 1 + 8k frames → an even count; frame 0 stays alone
        skip = space_to_depth(x, self.stride)  # (B, C_in·V, T', H', W')
        skip = skip.unflatten(1, (-1, self.group_size)).mean(dim=2)  # (B, C_out, T', H', W')
        return conv_layout(space_to_depth(self.conv(x), self.stride) + skip)


class DepthToSpaceUpsample(UsesOps, nn.Module):
    """Decoder `compress_*`: conv to prod(stride)·C/reduction channels, unfolded by depth-to-space.

    A temporal stride drops the first output frame (F latent frames → 2F − 1). With `residual`, the
    unfolded input repeated over channels is added back.
    """

    def __init__(
        self, in_channels: int, stride: Stride, *, residual: bool, reduction: int, causal: bool, padding_mode: str
    ) -> None:
        super().__init__()
        self.stride = stride
        self.residual = residual
        self.repeats = math.prod(stride) // reduction
        self.conv = CausalConv3d(in_channels, self.repeats * in_channels, causal=causal, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) → (B, C/reduction, st·T − (st−1), sh·H, sw·W)."""
        folded = self.conv(x, add_bias=False)
        residual = x if self.residual else None
        return self.ops.run(unfold_and_skip, folded, self.conv.bias, residual, self.stride, self.repeats)


@step
def unfold_and_skip(
    folded: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None, stride: Stride, repeats: int
) -> torch.Tensor:
    """depth-to-space of a decoder upsampler's convolution output (plus its left-out bias), the first
    frame dropped for a temporal stride, plus the unfolded input repeated over channels when
    `residual` is given."""
    if bias is not None:
        folded = folded + per_channel(bias)
    drop = stride[0] - 1
    out = depth_to_space(folded, stride)[:, :, drop:]
    if residual is not None:
        out = out + depth_to_space(residual, stride).repeat(1, repeats, 1, 1, 1)[:, :, drop:]
    return conv_layout(out)
