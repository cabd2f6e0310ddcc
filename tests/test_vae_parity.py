"""The video VAE equals diffusers' AutoencoderKLLTXVideo and the official ltx_video
CausalVideoAutoencoder on the same random weights (float32, ≤ 1e-5), for the 0.9.0, 0.9.1 and 0.9.5
layouts: normalised encoder means, decoder output with timestep conditioning and seeded noise
injection, and the official decode recipe with noise mixing. A wrong patchify order is caught."""

from __future__ import annotations

import copy

import pytest
import torch
from einops import rearrange

from ltx_core.config import VAEConfig
from ltx_core.loading.keymaps import vae_from_diffusers
from ltx_core.model.vae import autoencoder as autoencoder_module
from ltx_core.model.vae.autoencoder import VideoVAE
from tiny import TINY_VAE_LAYOUTS, random_vae_state_dict

pytestmark = pytest.mark.parity

TOL = 1e-5
CONTROL = 1e-2  # a negative control must move the output at least this far
LAYOUTS = list(TINY_VAE_LAYOUTS)
VIDEO = (2, 3, 17, 64, 64)  # batch, rgb, frames, height, width → latents (2, 16, 3, 2, 2)
T_DECODE = 0.05


class Models:
    """Our VAE and both references holding the same random weights."""

    def __init__(self, layout: str, seed: int = 0):
        diffusers = pytest.importorskip("diffusers")
        cva = pytest.importorskip("ltx_video.models.autoencoders.causal_video_autoencoder")
        metadata, diffusers_cfg = TINY_VAE_LAYOUTS[layout]
        self.config = VAEConfig.from_metadata(metadata)
        self.diffusers = diffusers.AutoencoderKLLTXVideo(**diffusers_cfg).eval()
        diffusers_sd = random_vae_state_dict({k: v.shape for k, v in self.diffusers.state_dict().items()}, seed)
        self.diffusers.load_state_dict(diffusers_sd, strict=True)
        kinds = ([b.kind for b in self.config.encoder_blocks], [b.kind for b in self.config.decoder_blocks])
        original_sd = vae_from_diffusers(diffusers_sd, *kinds)
        self.official = cva.CausalVideoAutoencoder.from_config(copy.deepcopy(metadata)).eval()
        self.official.load_state_dict(dict(original_sd), strict=True)
        self.ours = VideoVAE.from_state_dict(self.config, original_sd)


def _video(seed: int = 1) -> torch.Tensor:
    return torch.rand(VIDEO, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _latents(models: Models, seed: int = 2) -> torch.Tensor:
    shape = (VIDEO[0], models.config.latent_channels, 3, 2, 2)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _official_encode(models: Models, video: torch.Tensor) -> torch.Tensor:
    vae_encode = pytest.importorskip("ltx_video.models.autoencoders.vae_encode")
    mean = models.official.encode(video).latent_dist.mode()
    return vae_encode.normalize_latents(mean, models.official, vae_per_channel_normalize=True)


def _diffusers_encode(models: Models, video: torch.Tensor) -> torch.Tensor:
    d = models.diffusers
    mean = d.encode(video).latent_dist.mode()
    return (mean - d.latents_mean[None, :, None, None, None]) / d.latents_std[None, :, None, None, None]


def _official_decode(models: Models, z: torch.Tensor, t: float | None) -> torch.Tensor:
    vae_encode = pytest.importorskip("ltx_video.models.autoencoders.vae_encode")
    timestep = None if t is None else torch.full((z.shape[0],), t)
    return vae_encode.vae_decode(z, models.official, is_video=True, vae_per_channel_normalize=True, timestep=timestep)


def _diffusers_decode(models: Models, z: torch.Tensor, t: float | None) -> torch.Tensor:
    d = models.diffusers
    z = z * d.latents_std[None, :, None, None, None] + d.latents_mean[None, :, None, None, None]
    temb = None if t is None else torch.full((z.shape[0],), t)
    return d.decode(z, temb, return_dict=False)[0]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_encoder_matches_both_references(layout):
    models = Models(layout)
    video = _video()
    with torch.no_grad():
        ours = models.ours.encode(video)
        official = _official_encode(models, video)
        reference = _diffusers_encode(models, video)
    assert ours.shape == (2, 16, 3, 2, 2)
    assert ours.abs().mean() > 0.1
    assert (ours - official).abs().max() <= TOL
    assert (ours - reference).abs().max() <= TOL


@pytest.mark.parametrize("layout", LAYOUTS)
def test_decoder_matches_both_references(layout):
    """At t = 0.05 for the timestep-conditioned decoders; the 0.9.1 decoder injects noise, drawn from
    the global RNG by both references and from our generator seeded the same way."""
    models = Models(layout)
    z = _latents(models)
    t = T_DECODE if models.config.timestep_conditioning else None
    with torch.no_grad():
        ours = models.ours.decode(z, t, generator=torch.Generator().manual_seed(7))
        torch.manual_seed(7)
        official = _official_decode(models, z, t)
        torch.manual_seed(7)
        reference = _diffusers_decode(models, z, t)
    assert ours.shape == (2, 3, 17, 64, 64)
    assert ours.abs().mean() > 0.1
    assert (ours - official).abs().max() <= TOL
    assert (ours - reference).abs().max() <= TOL
    if models.config.timestep_conditioning:  # the timestep really matters
        assert (models.ours.decode(z, 0.5, generator=torch.Generator().manual_seed(7)) - ours).abs().max() > CONTROL


@pytest.mark.parametrize("layout", ["0.9.1", "0.9.5"])
def test_decode_recipe_with_noise_mixing_matches_official(layout):
    """z = 0.975·z + 0.025·randn on the normalised latents, un-normalise, decode at t = 0.05. Our
    generator first draws the mixing noise, then the injected noise; the reference gets the same
    noise and continues the global RNG from the same state."""
    models = Models(layout)
    z, scale = _latents(models), 0.025
    with torch.no_grad():
        ours = models.ours.decode(z, T_DECODE, noise_scale=scale, generator=torch.Generator().manual_seed(3))
        gen = torch.Generator().manual_seed(3)
        mixed = (1 - scale) * z + scale * torch.randn(z.shape, generator=gen)
        torch.random.set_rng_state(gen.get_state())
        official = _official_decode(models, mixed, T_DECODE)
    assert (ours - official).abs().max() <= TOL


def test_control_swapped_patchify_order_is_caught(monkeypatch: pytest.MonkeyPatch):
    models = Models("0.9.0")
    video = _video()
    with torch.no_grad():
        reference = _official_encode(models, video)

        def h_before_w(x, patch):
            return rearrange(x, "b c t (h q) (w r) -> b (c q r) t h w", q=patch, r=patch)

        monkeypatch.setattr(autoencoder_module, "patchify", h_before_w)
        wrong = models.ours.encode(video)
    assert (wrong - reference).abs().max() > CONTROL
