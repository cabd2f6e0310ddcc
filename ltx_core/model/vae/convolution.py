"""Causal 3D convolution and the space-to-depth / depth-to-space resamplers of the video VAE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..fusion import fused

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


class CausalConv3d(nn.Module):
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

    def forward(self, x: torch.Tensor, prologue: Prologue | None = None) -> torch.Tensor:
        """(B, C_in, T, H, W) → (B, C_out, T', H', W'). With a `prologue` (noise, shift, scale) the input
        first goes through `norm_silu_pad`, fused with the padding (frame by frame, so a causal stream's
        context frames, prepended to x, get the same treatment)."""
        if prologue is None:
            return self.conv(pad_time(x, *self.time_padding))
        return self.conv(norm_silu_pad(x, *prologue, *self.time_padding))


Prologue = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]  # noise, shift, scale


def pad_time(x: torch.Tensor, front: int, back: int) -> torch.Tensor:
    """Repeat the first frame `front` times in front of (B, C, T, H, W) and the last `back` times behind."""
    parts = [x[:, :, :1].expand(-1, -1, front, -1, -1), x, x[:, :, -1:].expand(-1, -1, back, -1, -1)]
    return torch.cat(parts, dim=2)


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """PixelNorm: x / sqrt(mean over channels of x² + 1e-8), no parameters. x: (B, C, T, H, W)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)


@fused
def norm_silu_pad(
    x: torch.Tensor,
    noise: torch.Tensor | None,
    shift: torch.Tensor | None,
    scale: torch.Tensor | None,
    front: int,
    back: int,
) -> torch.Tensor:
    """The elementwise work before a res block's convolution, one kernel on CUDA: [x + noise] →
    PixelNorm → [·(1 + scale) + shift] → SiLU → the time padding (`pad_time`)."""
    if noise is not None:
        x = x + noise
    h = pixel_norm(x)
    if scale is not None:
        h = h * (1 + scale) + shift
    return conv_layout(pad_time(F.silu(h), front, back))


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
        return space_to_depth(self.conv(x), self.stride) + skip


class DepthToSpaceUpsample(nn.Module):
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
        return unfold_and_skip(self.conv(x), x if self.residual else None, self.stride, self.repeats)


@fused
def unfold_and_skip(folded: torch.Tensor, residual: torch.Tensor | None, stride: Stride, repeats: int) -> torch.Tensor:
    """depth-to-space of a decoder upsampler's convolution output, the first frame dropped for a
    temporal stride, plus the unfolded input repeated over channels when `residual` is given."""
    drop = stride[0] - 1
    out = depth_to_space(folded, stride)[:, :, drop:]
    if residual is not None:
        out = out + depth_to_space(residual, stride).repeat(1, repeats, 1, 1, 1)[:, :, drop:]
    return conv_layout(out)
