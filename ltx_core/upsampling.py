"""Latent upsampling as the 0.9.7+ multiscale recipe runs it: un-normalise, upsample, AdaIN against the
input, optional tone mapping, normalise again.

The two references do the same steps in slightly different places:

- official `LTXMultiScalePipeline` (ltx_video 0.1.2): un-normalise with the VAE's per-channel
  statistics, upsample, normalise, then `adain_filter_latent(upsampled, latents)` with factor 1.0 on
  the normalised latents, always. It tone-maps nowhere here: the 13B 0.9.8 distilled configs pass
  `tone_map_compression_ratio: 0.6` to the second pass, which applies it to the normalised latents
  just before decoding (after the decode noise is mixed in).
- diffusers `LTXLatentUpsamplePipeline`: un-normalise, upsample, AdaIN against the un-normalised
  input when `adain_factor > 0`, tone-map the un-normalised latents when
  `tone_map_compression_ratio > 0`, normalise. Both default to 0; its docs' examples pass
  `adain_factor=1.0` for 0.9.7 distilled and 0.9.8 distilled (the 0.9.7 dev example leaves it at 0)
  and add `tone_map_compression_ratio=0.6` for 0.9.8 distilled.

AdaIN is the same in both spaces (a per-channel affine map moves the mean and std of a channel alike;
the tests check it), so `upsample_latents` equals both references for AdaIN. Tone mapping is not
(it bends values around |x| = 1): `upsample_latents` applies it where diffusers does, and
`tone_map_latents` on its own is what the official pipeline applies before decoding.
"""

from __future__ import annotations

import torch

from .model.upsampler import LatentUpsampler
from .model.vae.autoencoder import VideoVAE

# Official LTXMultiScalePipeline: AdaIN at full strength after every upsampling, for every release
# (diffusers' docs pass the same value for the distilled models; diffusers' own default of 0 is off).
ADAIN_FACTOR = 1.0
# Neither reference tone-maps at upsampling by default (official: never; diffusers: default 0).
TONE_MAP_COMPRESSION = 0.0


def adain_filter_latent(latents: torch.Tensor, reference: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    """Give each (sample, channel) of `latents` (B, C, …) the mean and standard deviation (unbiased,
    over all its other axes) of the same (sample, channel) of `reference` (B, C, …, any size), then
    blend: `latents + factor · (matched − latents)`. Factor 1 is full AdaIN, 0 the input unchanged."""
    if latents.shape[:2] != reference.shape[:2]:
        raise ValueError(
            f"AdaIN needs the same batch and channels in latents and reference, got {tuple(latents.shape)} "
            f"and {tuple(reference.shape)}"
        )
    x = latents.flatten(2)  # (B, C, N): statistics per sample and channel
    r_std, r_mean = torch.std_mean(reference.flatten(2), dim=-1, keepdim=True)
    x_std, x_mean = torch.std_mean(x, dim=-1, keepdim=True)
    matched = ((x - x_mean) / x_std * r_std + r_mean).view_as(latents)
    return torch.lerp(latents, matched, factor)


def tone_map_latents(latents: torch.Tensor, compression: float) -> torch.Tensor:
    """Shrink large latent values smoothly: x · (1 − 0.8·s·sigmoid(4·s·(|x| − 1))) with s = 0.75 ·
    compression, so values well below 1 are nearly kept and large ones scaled towards 1 − 0.6·c.
    compression in [0, 1]; 0 is the identity. Any shape."""
    if not 0.0 <= compression <= 1.0:
        raise ValueError(f"tone map compression must be in [0, 1], got {compression}")
    s = 0.75 * compression
    return latents * (1.0 - 0.8 * s * torch.sigmoid(4.0 * s * (latents.abs() - 1.0)))


@torch.no_grad()
def upsample_latents(
    upsampler: LatentUpsampler,
    vae: VideoVAE,
    latents: torch.Tensor,
    *,
    adain_factor: float = ADAIN_FACTOR,
    tone_map_compression: float = TONE_MAP_COMPRESSION,
) -> torch.Tensor:
    """Normalised latents (B, C, F, H, W), as `sample()` and `VideoVAE.encode` give them → normalised
    upsampled latents: (B, C, F, 2H, 2W) for a spatial upsampler, (B, C, 2F − 1, H, W) for a temporal
    one (pixel frames 1 + 8k → 1 + 16k).

    `vae` supplies only its per-channel statistics. AdaIN matches each channel of the result to the
    input's statistics (`adain_factor`, default 1.0 as the official multiscale pipeline); tone mapping
    (`tone_map_compression`, default 0.0) runs on the un-normalised result, as diffusers'
    `LTXLatentUpsamplePipeline(tone_map_compression_ratio=…)`. The statistics, AdaIN and tone mapping
    run in float32, the upsampler in its own dtype; the result comes back in the dtype and on the
    device of `latents`. The computation runs on the upsampler's device.
    """
    channels = upsampler.config.in_channels
    if latents.ndim != 5 or latents.shape[1] != channels:
        raise ValueError(f"expected latents (B, {channels}, F, H, W) for this upsampler, got {tuple(latents.shape)}")
    if channels != vae.config.latent_channels:
        raise ValueError(
            f"the upsampler takes {channels} latent channels but the VAE has {vae.config.latent_channels}; "
            "use the VAE of the model that made the latents"
        )
    weight = upsampler.initial_conv.weight
    z = vae.denormalise(latents.to(weight.device, torch.float32))  # (B, C, F, H, W), float32
    up = upsampler(z.to(weight.dtype)).float()  # (B, C, F', H', W')
    if adain_factor != 0.0:
        up = adain_filter_latent(up, z, adain_factor)
    if tone_map_compression != 0.0:
        up = tone_map_latents(up, tone_map_compression)
    return vae.normalise(up).to(latents.device, latents.dtype)
