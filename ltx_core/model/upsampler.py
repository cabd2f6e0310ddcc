"""The latent upsampler of LTX-Video 0.9.7+: un-normalised VAE latents in, ×2 in space or in time out.

A small convolutional network over un-normalised VAE latents (B, 128, F, H, W): a 3×3×3 conv into
`mid_channels`, a stage of residual blocks, one conv whose extra channels become sub-pixel positions
(depth to space), a second stage of residual blocks and a conv back to the latent channels. Module
names are the keys of the released files (`ltxv-spatial-upscaler-0.9.7.safetensors`, …), which
diffusers' `LTXLatentUpsamplerModel` shares, so both formats load without renaming.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..loading.materialize import materialize
from .vae.convolution import depth_to_space

GROUPS = 32  # every GroupNorm of the references has 32 groups, so widths must be multiples of 32

# (spatial_upsample, temporal_upsample) → the factors (frames, height, width) of the depth-to-space
# step. The released files are spatial (0.9.7, 0.9.8) and temporal (0.9.7); the references also
# build the combined kind.
UPSAMPLE_FACTORS: dict[tuple[bool, bool], tuple[int, int, int]] = {
    (True, False): (1, 2, 2),
    (False, True): (2, 1, 1),
    (True, True): (2, 2, 2),
}
KIND_NAMES = {(True, False): "spatial ×2", (False, True): "temporal ×2", (True, True): "spatial and temporal ×2"}

# Config keys of the original metadata and diffusers' config.json (spelled alike) → field types.
CONFIG_KEYS = {
    "in_channels": int,
    "mid_channels": int,
    "num_blocks_per_stage": int,
    "dims": int,
    "spatial_upsample": bool,
    "temporal_upsample": bool,
}
# Keys of later upsamplers (LTX-2's, in ComfyUI core) and the only values this model runs.
FIXED_VALUES: dict[str, tuple[Any, ...]] = {"spatial_scale": (2.0,), "rational_resampler": (False,)}


@dataclass(frozen=True)
class LatentUpsamplerConfig:
    """Shape of a latent upsampler. The defaults are the released spatial upsamplers' (0.9.7 and
    0.9.8, as diffusers' conversion script states them); a loaded file's own values come from its
    config and tensors."""

    in_channels: int = 128  # the VAE's latent channels
    mid_channels: int = 512
    num_blocks_per_stage: int = 4  # residual blocks before and again after the upsampling step
    dims: int = 3  # 3-D convolutions; the references' per-frame dims=2 variant is not supported
    spatial_upsample: bool = True
    temporal_upsample: bool = False

    def __post_init__(self) -> None:
        kind = (self.spatial_upsample, self.temporal_upsample)
        if kind not in UPSAMPLE_FACTORS:
            raise ValueError("a latent upsampler needs spatial_upsample or temporal_upsample (both are False)")
        if self.dims != 3:
            raise ValueError(f"dims={self.dims} is not supported; the released upsamplers have dims=3")
        if self.mid_channels <= 0 or self.mid_channels % GROUPS:
            raise ValueError(
                f"mid_channels must be a positive multiple of {GROUPS} (GroupNorm), got {self.mid_channels}"
            )
        if self.in_channels <= 0 or self.num_blocks_per_stage < 0:
            raise ValueError(
                f"in_channels must be positive and num_blocks_per_stage not negative, got "
                f"{self.in_channels} and {self.num_blocks_per_stage}"
            )

    @property
    def factors(self) -> tuple[int, int, int]:
        """How many times (frames, height, width) grow in the depth-to-space step."""
        return UPSAMPLE_FACTORS[(self.spatial_upsample, self.temporal_upsample)]

    @property
    def kind(self) -> str:
        return KIND_NAMES[(self.spatial_upsample, self.temporal_upsample)]

    @staticmethod
    def stated_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The fields an original `config` metadata entry or a diffusers config.json states, typed.
        Absent keys are absent here: the two references fill them with different defaults
        (`LatentUpsampler.from_config`: 4, 128, 4, 2; diffusers: the defaults above), and a diffusers
        config.json may name only the class, so the loader reads absent fields off the tensors."""
        for key, allowed in FIXED_VALUES.items():
            if key in cfg and cfg[key] not in allowed:
                raise ValueError(
                    f"{key}={cfg[key]!r} belongs to a later upsampler (LTX-2), not LTX-Video 0.9.7+; "
                    f"this model runs only {key}={allowed[0]!r}"
                )
        stated = {}
        for key, kind in CONFIG_KEYS.items():
            if key in cfg:
                value = cfg[key]
                if not isinstance(value, (bool, int)) or (kind is int and isinstance(value, bool)):
                    raise ValueError(f"{key} must be {kind.__name__}, got {value!r}")
                stated[key] = kind(value)
        return stated


def config_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> LatentUpsamplerConfig:
    """The config of an upsampler's tensors: widths from `initial_conv`, the block count from the keys,
    the kind from the upsampling conv (2-D with 4× channels: spatial; 3-D with 2×: temporal; 3-D with
    8×: both). KeyError for a missing tensor, ValueError for shapes no upsampler has."""
    mid, in_channels, *kernel = shapes["initial_conv.weight"]
    up_out, _, *up_kernel = shapes["upsampler.0.weight"]
    dims = len(kernel)
    # (2-D or 3-D conv, output channels per mid channel) → kind
    by_layout = {(2 if f[0] == 1 else 3, math.prod(f)): kind for kind, f in UPSAMPLE_FACTORS.items()}
    layout = (len(up_kernel), up_out // mid if up_out % mid == 0 else 0)
    if layout not in by_layout:
        raise ValueError(f"upsampler.0.weight has shape {shapes['upsampler.0.weight']}, which no upsampler kind has")
    blocks = {int(k.split(".")[1]) for k in shapes if k.startswith("res_blocks.")}
    spatial, temporal = by_layout[layout]
    return LatentUpsamplerConfig(
        in_channels=in_channels,
        mid_channels=mid,
        num_blocks_per_stage=max(blocks) + 1 if blocks else 0,
        dims=dims,
        spatial_upsample=spatial,
        temporal_upsample=temporal,
    )


class ResBlock(nn.Module):
    """conv → GroupNorm → SiLU → conv → GroupNorm, plus the input, then SiLU (after the sum)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.GroupNorm(GROUPS, channels)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(GROUPS, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(h)) + x)


class LatentUpsampler(nn.Module):
    """Un-normalised latents (B, C, F, H, W) → (B, C, F', H·s, W·s): spatial ×2 gives F' = F, s = 2;
    temporal ×2 gives F' = 2F − 1, s = 1 (pixel frames 1 + 8k → 1 + 16k). Convolutions pad every
    axis with zeros (not causally): each output frame sees its neighbours on both sides."""

    def __init__(self, config: LatentUpsamplerConfig) -> None:
        super().__init__()
        self.config = config
        mid = config.mid_channels
        self.initial_conv = nn.Conv3d(config.in_channels, mid, kernel_size=3, padding=1)
        self.initial_norm = nn.GroupNorm(GROUPS, mid)
        self.res_blocks = nn.ModuleList(ResBlock(mid) for _ in range(config.num_blocks_per_stage))
        frames, height, width = config.factors
        # The spatial kind convolves each frame alone (2-D); the others convolve in time too. A
        # one-element Sequential keeps the files' key `upsampler.0.*` (the references put their
        # pixel shuffle second in it; here it is the depth_to_space call in `upsample`).
        conv = nn.Conv2d if frames == 1 else nn.Conv3d
        self.upsampler = nn.Sequential(conv(mid, mid * frames * height * width, kernel_size=3, padding=1))
        self.post_upsample_res_blocks = nn.ModuleList(ResBlock(mid) for _ in range(config.num_blocks_per_stage))
        self.final_conv = nn.Conv3d(mid, config.in_channels, kernel_size=3, padding=1)

    @classmethod
    def from_state_dict(
        cls,
        config: LatentUpsamplerConfig,
        state_dict: Mapping[str, torch.Tensor],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> LatentUpsampler:
        """Build on the `meta` device and adopt the tensors of a released file (no prefix)."""
        with torch.device("meta"):
            model = cls(config)
        return materialize(model, state_dict, dtype=dtype, device=device, what="LTX-Video latent upsampler")

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """(B, mid, F, H, W) → (B, mid, F·t − (t − 1), H·s, W·s) for factors (t, s, s)."""
        frames, height, width = self.config.factors
        conv = self.upsampler[0]
        if frames == 1:
            f = x.shape[2]
            x = rearrange(x, "b c f h w -> (b f) c h w")  # one 2-D conv per frame
            x = rearrange(conv(x), "(b f) c h w -> b c f h w", f=f)
        else:
            x = conv(x)
        x = depth_to_space(x, (frames, height, width))  # (B, mid, F·t, H·s, W·s), sub-positions (t, h, w) in c
        if frames > 1:
            # The first latent frame stands for one pixel frame, the others for eight each; of the two
            # frames made from it only the second is kept, so F latent frames become 1 + 2(F − 1).
            x = x[:, :, 1:]
        return x

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: un-normalised (B, in_channels, F, H, W), in the model's dtype."""
        x = F.silu(self.initial_norm(self.initial_conv(latents)))  # (B, mid, F, H, W)
        for block in self.res_blocks:
            x = block(x)
        x = self.upsample(x)
        for block in self.post_upsample_res_blocks:
            x = block(x)
        return self.final_conv(x)  # (B, in_channels, F', H', W')
