"""Res blocks, res stages and the timestep conditioning of the video VAE, plus the block-kind tables.

Every block kind of the original block lists maps to a builder in `ENCODER_BUILDERS` or
`DECODER_BUILDERS`; adding a kind means adding an entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ...config import VAEBlock
from ..fusion import step
from ..layers import TIMESTEP_EMBEDDING_DIM, TimestepMLP, timestep_sinusoid
from ..ops import UsesOps
from .convolution import (
    CausalConv3d,
    DepthToSpaceUpsample,
    Prologue,
    SpaceToDepthDownsample,
    Stride,
    channel_noise,
    conv_layout,
    per_channel,
)


@step
def _add_noise_and_skip(
    h: torch.Tensor,
    bias: torch.Tensor | None,
    noise: torch.Tensor | None,
    noise_scale: torch.Tensor | None,
    skip: torch.Tensor,
) -> torch.Tensor:
    """skip + (h [+ bias] [+ noise]): the end of a res block, with its last convolution's left-out bias
    and the noise (a spatial map (H, W) times a per-channel scale (C,)). One pass on CUDA with fused
    ops (a Triton kernel)."""
    if bias is not None:
        h = h + per_channel(bias)
    if noise is not None:
        h = h + channel_noise(noise, noise_scale)
    return conv_layout(skip + h)


class NoiseField:
    """The injected noise of one decode (0.9.1): for each noisy convolution one standard-normal (H, W) map
    over the whole frame, shared over batch, channels and time, as the reference draws it on every call.

    Maps are drawn on first use, in float32 on the generator's device (the global RNG of the activations'
    device when None), so a seed gives the same maps on every dtype; a CPU generator seeded s draws what
    the global CPU RNG draws after torch.manual_seed(s), which is what the references use. The decoder
    uses its noisy convolutions in the same order however it is cut (whole, in spatial tiles, streamed
    in time), so every cut draws the same maps; a piece at `window` gets the part of each map under it.
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator
        self.maps: dict[tuple[nn.Module, int], torch.Tensor] = {}  # (res block, conv index) → whole-frame map
        self.window: tuple[slice, slice, tuple[int, int]] | None = None  # latent rows, columns, frame (h, w)

    def piece(self, rows: slice, cols: slice, frame: tuple[int, int]) -> NoiseField:
        """The same maps, seen by the piece at latent `rows` × `cols` of a latent frame of size `frame`."""
        view = NoiseField(self.generator)
        view.maps, view.window = self.maps, (rows, cols, frame)
        return view

    def draw(self, key: tuple[nn.Module, int], like: torch.Tensor) -> torch.Tensor:
        """The (H, W) map of `key` under this piece, for activations `like` (B, C, T, H, W), in like's dtype."""
        height, width = like.shape[-2:]
        rows, cols, frame = self.window or (slice(0, height), slice(0, width), (height, width))
        sh, sw = height // (rows.stop - rows.start), width // (cols.stop - cols.start)  # stage pixels per latent
        if key not in self.maps:
            device = self.generator.device if self.generator is not None else like.device
            size = (sh * frame[0], sw * frame[1])
            noise = torch.randn(size, generator=self.generator, device=device, dtype=torch.float32)
            self.maps[key] = noise.to(device=like.device, dtype=like.dtype)
        return self.maps[key][sh * rows.start : sh * rows.stop, sw * cols.start : sw * cols.stop]


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels of a (B, C, T, H, W) tensor; weights in `.norm` (key `norm3.norm.weight`)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.norm(rearrange(x, "b c t h w -> b t h w c")), "b t h w c -> b c t h w")


class ResBlock3D(UsesOps, nn.Module):
    """norm1 → [adaLN] → SiLU → conv1 → [noise] → norm2 → [adaLN] → SiLU → conv2 → [noise], plus the input
    (through LayerNorm and a 1×1×1 conv when the channel count changes)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        causal: bool,
        padding_mode: str,
        inject_noise: bool = False,
        timestep_conditioning: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(in_channels, out_channels, causal=causal, padding_mode=padding_mode)
        self.conv2 = CausalConv3d(out_channels, out_channels, causal=causal, padding_mode=padding_mode)
        self.inject_noise = inject_noise
        if inject_noise:
            # sized by the input channels as in the reference (the same as the output in every released VAE)
            self.per_channel_scale1 = nn.Parameter(torch.empty(in_channels, 1, 1))
            self.per_channel_scale2 = nn.Parameter(torch.empty(in_channels, 1, 1))
        if in_channels != out_channels:
            self.norm3 = ChannelLayerNorm(in_channels)
            self.conv_shortcut = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        else:
            self.norm3 = self.conv_shortcut = nn.Identity()
        self.timestep_conditioning = timestep_conditioning
        if timestep_conditioning:
            self.scale_shift_table = nn.Parameter(torch.empty(4, in_channels))  # shift1, scale1, shift2, scale2

    @property
    def time_padding(self) -> tuple[int, int]:
        """How far the block reaches back and ahead in time: output frame t reads input frames
        t − front … t + back (the sum over its two convolutions)."""
        (front1, back1), (front2, back2) = self.conv1.time_padding, self.conv2.time_padding
        return front1 + front2, back1 + back2

    def forward(
        self, x: torch.Tensor, time_emb: torch.Tensor | None = None, noise: NoiseField | None = None
    ) -> torch.Tensor:
        """x: (B, C_in, T, H, W); time_emb: (B, 4·C_in) when timestep-conditioned; `noise` supplies the maps
        of a noisy block (a fresh NoiseField on the global RNG when None) → (B, C_out, T, H, W)."""
        shift1 = scale1 = shift2 = scale2 = None
        if self.timestep_conditioning:
            if time_emb is None:
                raise ValueError("this res block is timestep-conditioned: pass the decode timestep")
            ada = self.scale_shift_table + time_emb.unflatten(1, (4, -1))  # (B, 4, C)
            shift1, scale1, shift2, scale2 = ada.unbind(1)  # (B, C) each
        # each convolution's bias is added by the next step, in the same pass as the rest of its work
        h = self.conv1(x, Prologue(shift=shift1, scale=scale1), add_bias=False)
        noise = NoiseField() if noise is None else noise
        noise_map, noise_scale = self._noise(h, 1, noise)
        prologue = Prologue(bias=self.conv1.bias, noise=noise_map, noise_scale=noise_scale, shift=shift2, scale=scale2)
        h = self.conv2(h, prologue, add_bias=False)
        noise_map, noise_scale = self._noise(h, 2, noise)
        skip = conv_layout(self.conv_shortcut(self.norm3(x)))  # one memory order for the fused add
        return self.ops.run(_add_noise_and_skip, h, self.conv2.bias, noise_map, noise_scale, skip)

    def _noise(
        self, like: torch.Tensor, index: int, noise: NoiseField
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The noise to inject after conv `index`: a spatial map (H, W) and its per-channel scale (C,),
        or (None, None) in blocks without noise."""
        if not self.inject_noise:
            return None, None
        return noise.draw((self, index), like), getattr(self, f"per_channel_scale{index}").flatten()


class TimeEmbedder(nn.Module):
    """Scaled timestep → sinusoid (float32) → MLP; keys `timestep_embedder.linear_{1,2}`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.timestep_embedder = TimestepMLP(TIMESTEP_EMBEDDING_DIM, dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """t: (B,) float32, already × 1000 → (B, dim) in `dtype`."""
        return self.timestep_embedder(timestep_sinusoid(t).to(dtype))


class ResStage(nn.Module):
    """`res_x`: num_layers res blocks at constant width, sharing one time embedder when conditioned."""

    def __init__(
        self, channels: int, num_layers: int, *, causal: bool, padding_mode: str, inject_noise: bool, timestep: bool
    ) -> None:
        super().__init__()
        self.time_embedder = TimeEmbedder(4 * channels) if timestep else None
        self.res_blocks = nn.ModuleList(
            ResBlock3D(
                channels,
                channels,
                causal=causal,
                padding_mode=padding_mode,
                inject_noise=inject_noise,
                timestep_conditioning=timestep,
            )
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, noise: NoiseField | None = None) -> torch.Tensor:
        """x: (B, C, T, H, W); t: (B,) float32 scaled timesteps, needed when conditioned."""
        emb = self.embed(t, x.dtype)
        for block in self.res_blocks:
            x = block(x, emb, noise)
        return x

    def embed(self, t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """The time embedding (B, 4C) in `dtype` that every block of the stage adds to its table; None
        when not conditioned."""
        if self.time_embedder is None:
            return None
        if t is None:
            raise ValueError("this decoder stage is timestep-conditioned: pass the decode timestep")
        return self.time_embedder(t, dtype)


# --- block-kind tables ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildContext:
    """What every builder needs besides the block and the current width."""

    causal: bool
    padding_mode: str
    timestep_conditioning: bool = False


Builder = Callable[[VAEBlock, int, BuildContext], tuple[nn.Module, int]]  # → (module, output channels)

_STRIDES: dict[str, Stride] = {"all": (2, 2, 2), "time": (2, 1, 1), "space": (1, 2, 2)}


def _res_x(block: VAEBlock, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
    stage = ResStage(
        channels,
        block.num_layers,
        causal=ctx.causal,
        padding_mode=ctx.padding_mode,
        inject_noise=block.inject_noise,
        timestep=ctx.timestep_conditioning,
    )
    return stage, channels


def _res_x_y(out_channels: Callable[[int, int], int]) -> Builder:
    def build(block: VAEBlock, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        out = out_channels(channels, block.multiplier)
        # never timestep-conditioned, as in the reference decoder
        res = ResBlock3D(
            channels, out, causal=ctx.causal, padding_mode=ctx.padding_mode, inject_noise=block.inject_noise
        )
        return res, out

    return build


def _strided_conv(axes: str, widen: bool) -> Builder:
    def build(block: VAEBlock, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        out = channels * block.multiplier if widen else channels
        conv = CausalConv3d(channels, out, stride=_STRIDES[axes], causal=ctx.causal, padding_mode=ctx.padding_mode)
        return conv, out

    return build


def _space_to_depth(axes: str) -> Builder:
    def build(block: VAEBlock, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        out = channels * block.multiplier
        return SpaceToDepthDownsample(channels, out, _STRIDES[axes], ctx.padding_mode), out

    return build


def _depth_to_space(axes: str) -> Builder:
    def build(block: VAEBlock, channels: int, ctx: BuildContext) -> tuple[nn.Module, int]:
        up = DepthToSpaceUpsample(
            channels,
            _STRIDES[axes],
            residual=block.residual,
            reduction=block.multiplier,
            causal=ctx.causal,
            padding_mode=ctx.padding_mode,
        )
        return up, channels // block.multiplier

    return build


ENCODER_BUILDERS: dict[str, Builder] = {
    "res_x": _res_x,
    "res_x_y": _res_x_y(lambda c, m: c * m),
    "compress_all": _strided_conv("all", widen=False),
    "compress_time": _strided_conv("time", widen=False),
    "compress_space": _strided_conv("space", widen=False),
    "compress_all_x_y": _strided_conv("all", widen=True),
    "compress_all_res": _space_to_depth("all"),
    "compress_space_res": _space_to_depth("space"),
    "compress_time_res": _space_to_depth("time"),
}

DECODER_BUILDERS: dict[str, Builder] = {
    "res_x": _res_x,
    "res_x_y": _res_x_y(lambda c, m: c // m),
    "compress_all": _depth_to_space("all"),
    "compress_time": _depth_to_space("time"),
    "compress_space": _depth_to_space("space"),
}
