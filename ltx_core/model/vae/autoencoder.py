"""Encoder, Decoder and VideoVAE: pixels (B, 3, T, H, W) in [-1, 1] ↔ normalised latents (B, 128, F, H/32, W/32)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import torch
from torch import nn

from ...config import VAEConfig
from ...loading.keymaps import vae_state_dict
from ...loading.materialize import materialize
from ...types import VAE_SPATIAL_SCALE, VAE_TEMPORAL_SCALE, check_video_shape
from .. import fusion
from ..ops import UsesOps
from .blocks import DECODER_BUILDERS, ENCODER_BUILDERS, BuildContext, NoiseField, ResBlock3D, ResStage, TimeEmbedder
from .convolution import CausalConv3d, Prologue, conv_layout, patchify, per_channel, unpatchify
from .decoder_stream import Step
from .pieces import decode_tiles, encode_tiles
from .tiling import (
    Tiling,
    TilingPlan,
    decoder_reach,
    default_budget,
    encoder_reach,
    plan_decode,
    plan_encode,
    run_planned,
    shrink_plan,
    tile_overlap,
)

LOGVAR_RANGE = (-30.0, 20.0)  # clamp of the posterior's log-variance, as in diffusers' DiagonalGaussian
STATISTICS = ("mean-of-means", "std-of-means")  # the per-channel statistics this VAE keeps


class Encoder(nn.Module):
    """patchify → conv_in → down_blocks → PixelNorm → SiLU → conv_out: 128 means + 1 shared log-variance."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        ctx = BuildContext(causal=config.causal_encoder, padding_mode=config.spatial_padding_mode)
        channels = config.encoder_base_channels
        self.conv_in = CausalConv3d(
            config.in_channels * config.patch_size**2, channels, causal=ctx.causal, padding_mode=ctx.padding_mode
        )
        self.down_blocks = nn.ModuleList()
        for block in config.encoder_blocks:
            module, channels = ENCODER_BUILDERS[block.kind](block, channels, ctx)
            self.down_blocks.append(module)
        # latent_log_var "uniform": one log-variance channel shared by all latent channels
        self.conv_out = CausalConv3d(
            channels, config.latent_channels + 1, causal=ctx.causal, padding_mode=ctx.padding_mode
        )

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T, H, W) → mean (B, 128, F, H/32, W/32) and log-variance (B, 1, F, H/32, W/32)."""
        x = self.conv_in(conv_layout(patchify(video, self.patch_size)))  # (B, base, T, H/4, W/4)
        for block in self.down_blocks:
            x = block(x)
        x = self.conv_out(x, Prologue())  # PixelNorm → SiLU → conv: (B, 129, F, H/32, W/32)
        return x[:, :-1], x[:, -1:]


class Decoder(UsesOps, nn.Module):
    """conv_in → up_blocks (the block list reversed) → PixelNorm → [adaLN] → SiLU → conv_out → unpatchify."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        ctx = BuildContext(config.causal_decoder, config.decoder_padding, config.timestep_conditioning)
        channels = config.decoder_base_channels
        for block in config.decoder_blocks:  # the width after conv_in undoes every narrowing block
            channels *= block.multiplier if block.kind == "res_x_y" or block.kind.startswith("compress") else 1
        self.conv_in = CausalConv3d(config.latent_channels, channels, causal=ctx.causal, padding_mode=ctx.padding_mode)
        self.up_blocks = nn.ModuleList()
        for block in reversed(config.decoder_blocks):
            module, channels = DECODER_BUILDERS[block.kind](block, channels, ctx)
            self.up_blocks.append(module)
        self.conv_out = CausalConv3d(
            channels, config.out_channels * config.patch_size**2, causal=ctx.causal, padding_mode=ctx.padding_mode
        )
        self.timestep_conditioning = config.timestep_conditioning
        if config.timestep_conditioning:
            self.timestep_scale_multiplier = nn.Parameter(torch.empty(()))  # 1000 in every checkpoint
            self.last_time_embedder = TimeEmbedder(2 * channels)
            self.last_scale_shift_table = nn.Parameter(torch.empty(2, channels))  # shift, scale

    def forward(
        self, z: torch.Tensor, timestep: torch.Tensor | None = None, noise: NoiseField | None = None
    ) -> torch.Tensor:
        """z: un-normalised latents (B, 128, F, h, w); timestep: (B,) float32 in [0, 1], needed when
        timestep-conditioned; `noise`: the injected noise maps (0.9.1; None: the global RNG)
        → (B, 3, 8(F−1)+1, 32h, 32w)."""
        x = conv_layout(z)
        for step in self.steps(timestep, noise, z.dtype):
            x = step.run(x)
        return x

    def steps(self, timestep: torch.Tensor | None, noise: NoiseField | None, dtype: torch.dtype) -> list[Step]:
        """The decoder as a chain of steps that are local in time (see decoder_stream.py): conv_in, each
        res block, each upsampler, then norm → [adaLN] → SiLU → conv_out → unpatchify; `dtype` is the
        activations'. Running them in order is the decode."""
        t = None
        if self.timestep_conditioning:
            if timestep is None:
                raise ValueError("this VAE decoder is timestep-conditioned: pass a timestep (0.05 is the default)")
            # float32 all the way to the sinusoid, whatever the weights' dtype
            t = timestep.to(torch.float32) * self.timestep_scale_multiplier.to(torch.float32)  # (B,)
        noise = NoiseField() if noise is None else noise
        steps = [Step(self.conv_in, *self.conv_in.time_padding)]
        for block in self.up_blocks:
            if isinstance(block, ResStage):
                emb = block.embed(t, dtype)  # (B, 4C), shared by the stage's blocks
                steps += [Step(partial(res, time_emb=emb, noise=noise), *res.time_padding) for res in block.res_blocks]
            elif isinstance(block, ResBlock3D):
                steps.append(Step(partial(block, noise=noise), *block.time_padding))
            else:
                steps.append(Step(block, *block.conv.time_padding, stride=block.stride[0]))
        shift = scale = None
        if t is not None:
            emb = self.last_time_embedder(t, dtype).unflatten(1, (2, -1))  # (B, 2, C)
            shift, scale = (self.last_scale_shift_table + emb).unbind(1)  # (B, C) each

        def out(x: torch.Tensor) -> torch.Tensor:
            x = self.conv_out(x, Prologue(shift=shift, scale=scale), add_bias=False)  # (B, 3·p², T, H/4, W/4)
            return self.ops.run(add_bias_and_unpatchify, x, self.conv_out.bias, self.patch_size)

        return [*steps, Step(out, *self.conv_out.time_padding)]


@fusion.step
def add_bias_and_unpatchify(x: torch.Tensor, bias: torch.Tensor | None, patch: int) -> torch.Tensor:
    """The decoder's last step: conv_out's left-out bias, then `unpatchify`, in one pass on CUDA."""
    return unpatchify(x if bias is None else x + per_channel(bias), patch)


class LatentStatistics(nn.Module):
    """Per-channel latent statistics, under their checkpoint names `mean-of-means` and `std-of-means`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        for name in STATISTICS:
            self.register_buffer(name, torch.empty(channels))

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The statistic as (1, C, 1, 1, 1) in the dtype and device of `like`."""
        return getattr(self, name).to(like)[None, :, None, None, None]


class VideoVAE(nn.Module):
    """The causal video VAE with latent normalisation: `encode` and `decode` speak normalised latents,
    `z_model = (z − mean_of_means) / std_of_means`, as the transformer sees them."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.per_channel_statistics = LatentStatistics(config.latent_channels)

    @classmethod
    def from_state_dict(
        cls,
        config: VAEConfig,
        state_dict: Mapping[str, torch.Tensor],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> VideoVAE:
        """Build on the `meta` device and adopt original-key tensors (a `vae.` prefix is stripped; the
        unused statistics `channel`, `mean-of-stds`, `mean-of-stds_over_std-of-means` are dropped)."""
        with torch.device("meta"):
            model = cls(config)
        return materialize(model, vae_state_dict(state_dict), dtype=dtype, device=device, what="LTX-Video VAE")

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        stats = self.per_channel_statistics
        return (z - stats.get("mean-of-means", z)) / stats.get("std-of-means", z)

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        stats = self.per_channel_statistics
        return z * stats.get("std-of-means", z) + stats.get("mean-of-means", z)

    def encode(
        self,
        video: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        tiling: Tiling = "auto",
        memory_budget: int | None = None,
    ) -> torch.Tensor:
        """video (B, 3, 1+8k, H, W) in [-1, 1] → normalised latents (B, 128, 1+k, H/32, W/32).

        Uses the posterior mean (as ComfyUI); `sample=True` draws from the posterior with `generator`
        (as the official pipeline and diffusers), once for the whole video whatever the tiling.
        `tiling`: "auto" plans from `memory_budget` bytes (default: `default_budget` of the device) and
        retries smaller on out-of-memory, "off" runs whole, a TilingPlan is used as given (see tiling.py:
        temporal chunks are exact, spatial tiles approximate).
        """
        if video.ndim != 5:
            raise ValueError(f"encode expects a (B, 3, T, H, W) video, got shape {tuple(video.shape)}")
        check_video_shape(*video.shape[2:])
        video = video.to(self.encoder.conv_in.conv.weight.dtype)

        overlap = tile_overlap(encoder_reach(self.config))

        def run(plan: TilingPlan | None) -> tuple[torch.Tensor, torch.Tensor]:
            if plan is None:
                return self.encoder(video)
            return encode_tiles(self.encoder, video, plan.with_overlap(overlap))

        latent = _latent_size(video.shape)
        mean, logvar = run_planned(
            run,
            tiling,
            lambda budget: plan_encode(self.config, video.shape, budget, video.dtype),
            lambda plan: shrink_plan(plan, latent, overlap),
            default_budget(video.device) if memory_budget is None else memory_budget,
            default_budget(video.device),
            "encode",
        )
        if sample:
            std = torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))
            mean = mean + std * _randn_like(mean, generator)
        return self.normalise(mean)

    def decode(
        self,
        latents: torch.Tensor,
        timestep: float | torch.Tensor | None = None,
        *,
        noise_scale: float = 0.0,
        generator: torch.Generator | None = None,
        tiling: Tiling = "auto",
        memory_budget: int | None = None,
    ) -> torch.Tensor:
        """Normalised latents (B, 128, F, h, w) → video (B, 3, 8(F−1)+1, 32h, 32w), about [-1, 1].

        As the official pipeline and ComfyUI: `z = (1 − s)·z + s·randn` on the normalised latents, then
        un-normalise, then decode at `timestep` (0.9.1+; ignored by the 0.9.0 decoder, as upstream).
        `generator` also drives the 0.9.1 decoder's noise injection; None uses the global RNG.
        `tiling`: "auto" plans from `memory_budget` bytes (default: `default_budget` of the device) and
        retries smaller on out-of-memory, "off" runs whole, a TilingPlan is used as given (tiling.py says
        what tiles do to the error and to the seeded noise).
        """
        z, t, noise = self.decoder_input(latents, timestep, noise_scale=noise_scale, generator=generator)
        overlap = tile_overlap(decoder_reach(self.config))

        def run(plan: TilingPlan | None) -> torch.Tensor:
            if plan is None:
                return self.decoder(z, t, noise)
            return decode_tiles(self.decoder, z, t, plan.with_overlap(overlap), noise)

        return run_planned(
            run,
            tiling,
            lambda budget: plan_decode(self.config, z.shape, budget, z.dtype),
            lambda plan: shrink_plan(plan, z.shape[2:], overlap),
            default_budget(z.device) if memory_budget is None else memory_budget,
            default_budget(z.device),
            "decode",
        )

    def decoder_input(
        self,
        latents: torch.Tensor,
        timestep: float | torch.Tensor | None = None,
        *,
        noise_scale: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, NoiseField]:
        """What `decode` runs the decoder on, however it cuts the work: the un-normalised latents with the
        decode noise mixed in (B, 128, F, h, w) in the decoder's dtype, the timestep (B,) float32 or None,
        and the injected noise's maps (one set for the whole decode, drawn on first use)."""
        channels = self.config.latent_channels
        if latents.ndim != 5 or latents.shape[1] != channels:
            raise ValueError(f"decode expects latents (B, {channels}, F, h, w), got shape {tuple(latents.shape)}")
        z = latents.to(self.decoder.conv_in.conv.weight.dtype)
        if noise_scale:
            z = (1 - noise_scale) * z + noise_scale * _randn_like(z, generator)
        t = None
        if timestep is not None and self.config.timestep_conditioning:
            t = torch.as_tensor(timestep, dtype=torch.float32, device=z.device).reshape(-1).expand(z.shape[0])
        return self.denormalise(z), t, NoiseField(generator)


def _latent_size(video_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(…, T, H, W) pixels → (F, h, w) latents."""
    *_, frames, height, width = video_shape
    return 1 + (frames - 1) // VAE_TEMPORAL_SCALE, height // VAE_SPATIAL_SCALE, width // VAE_SPATIAL_SCALE


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard-normal noise shaped like x, drawn in float32 on the generator's device, then moved."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32).to(x)
