"""sample() + VAE decode equal diffusers' LTXPipeline and LTXImageToVideoPipeline on the same tiny
weights, prompt embeddings and initial noise.

Tolerance: 1e-4 max |Δ| on latents and decoded pixels in float32 (the schedules agree to ~1e-7
and the model to ~1e-6 per call; a few steps accumulate that)."""

from __future__ import annotations

import pytest
import torch

from ltx_core import LTXVideoTransformer, VAEConfig, VideoVAE
from ltx_core.loading.keymaps import transformer_from_diffusers, vae_to_diffusers
from ltx_core.model.patchify import to_tokens
from ltx_core.sampling.conditioning import FrameCondition
from ltx_core.sampling.noise import seeded_noise
from ltx_core.sampling.sampler import sample
from ltx_core.sampling.schedule import shifted_sigmas
from ltx_core.text.encoder import Conditioning
from tiny import (
    TINY_VAE_LAYOUTS,
    diffusers_ltx_scheduler,
    diffusers_transformer,
    random_state_dict,
    random_vae_state_dict,
    tiny_transformer_config,
)

pytestmark = pytest.mark.parity

TOL = 1e-4
FRAMES, HEIGHT, WIDTH = 17, 64, 96  # → latent 3 × 2 × 3
LATENT = (2, 16, 3, 2, 3)
STEPS = 6


@pytest.fixture(scope="module")
def parts():
    diffusers = pytest.importorskip("diffusers")
    cfg = tiny_transformer_config(heads=2, head_dim=16)
    reference = diffusers_transformer(cfg)
    weights = random_state_dict({k: v.shape for k, v in reference.state_dict().items()}, 11)
    reference.load_state_dict(weights)
    model = LTXVideoTransformer.from_state_dict(cfg, transformer_from_diffusers(weights))

    vae_meta, vae_kwargs = TINY_VAE_LAYOUTS["0.9.5"]  # timestep-conditioned, no noise injection
    vae_cfg = VAEConfig.from_metadata(vae_meta)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VideoVAE(vae_cfg).state_dict().items()}
    vae_weights = random_vae_state_dict(shapes, 12)
    vae = VideoVAE.from_state_dict(vae_cfg, vae_weights)
    reference_vae = diffusers.AutoencoderKLLTXVideo(**vae_kwargs).eval()
    kinds = ([b.kind for b in vae_cfg.encoder_blocks], [b.kind for b in vae_cfg.decoder_blocks])
    reference_vae.load_state_dict(vae_to_diffusers(vae_weights, *kinds))

    scheduler = diffusers_ltx_scheduler()
    modules = dict(scheduler=scheduler, vae=reference_vae, text_encoder=None, tokenizer=None, transformer=reference)
    gen = torch.Generator().manual_seed(13)
    mask = torch.ones(2, 6, dtype=torch.int64)
    mask[1, 4:] = 0
    negative = Conditioning(
        torch.randn(2, 6, cfg.caption_channels, generator=gen), torch.tensor([[1] * 3 + [0] * 3] * 2)
    )
    text = Conditioning(torch.randn(2, 6, cfg.caption_channels, generator=gen), mask, negative)
    return diffusers, modules, model, vae, text


def _prompt_kwargs(text: Conditioning) -> dict:
    return dict(
        prompt_embeds=text.context,
        prompt_attention_mask=text.mask,
        negative_prompt_embeds=text.negative.context,
        negative_prompt_attention_mask=text.negative.mask,
    )


def _decode(vae: VideoVAE, latents: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        video = vae.decode(latents, 0.05)  # no decode noise: the references mix it at different places
    return ((video + 1) / 2).clamp(0, 1)


def test_text_to_video_matches_diffusers(parts):
    diffusers, modules, model, vae, text = parts
    noise = seeded_noise(LATENT, 3)
    tokens = LATENT[2] * LATENT[3] * LATENT[4]
    with torch.no_grad():
        ours = sample(model, noise, shifted_sigmas(STEPS, tokens), text, guidance_scale=3.0, frame_rate=25.0)
        pipe = diffusers.LTXPipeline(**modules)
        common = dict(num_frames=FRAMES, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=3.0)
        reference = pipe(
            latents=to_tokens(noise), output_type="latent", frame_rate=25, **common, **_prompt_kwargs(text)
        )
        frames = pipe(
            latents=to_tokens(noise),
            output_type="pt",
            decode_timestep=0.05,
            decode_noise_scale=0.0,
            frame_rate=25,
            **common,
            **_prompt_kwargs(text),
        ).frames  # (B, T, 3, H, W)
    assert ours.abs().mean() > 0.1
    assert (to_tokens(ours) - reference.frames).abs().max() <= TOL
    assert (_decode(vae, ours).permute(0, 2, 1, 3, 4) - frames).abs().max() <= TOL


def test_image_to_video_matches_diffusers(parts):
    diffusers, modules, model, vae, text = parts
    noise = seeded_noise(LATENT, 4)
    image_latents = seeded_noise((2, 16, 1, 2, 3), 5)  # stands in for an encoded image
    first = torch.zeros(LATENT[0], 1, LATENT[2], 1, 1)
    first[:, :, 0] = 1
    initial = first * image_latents + (1 - first) * noise  # diffusers' conditioned starting point
    tokens = LATENT[2] * LATENT[3] * LATENT[4]
    with torch.no_grad():
        ours = sample(
            model,
            noise,
            shifted_sigmas(STEPS, tokens),
            text,
            guidance_scale=3.0,
            conditions=[FrameCondition(image_latents, 0, 1.0)],
        )
        pipe = diffusers.LTXImageToVideoPipeline(**modules)
        reference = pipe(
            image=torch.zeros(2, 3, HEIGHT, WIDTH),  # unused when latents are given
            latents=to_tokens(initial),
            output_type="latent",
            num_frames=FRAMES,
            height=HEIGHT,
            width=WIDTH,
            num_inference_steps=STEPS,
            guidance_scale=3.0,
            frame_rate=25,
            **_prompt_kwargs(text),
        )
    assert torch.equal(ours[:, :, :1], image_latents)
    assert (to_tokens(ours) - reference.frames).abs().max() <= TOL
