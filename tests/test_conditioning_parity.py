"""Keyframes, clips, video extension and video-to-video with the "appended" layout (0.9.5+) equal the
official `LTXVideoPipeline` (ltx_video 0.1.2, `ConditioningItem`s) and diffusers' LTXConditionPipeline
on the same tiny weights, text embeddings and noise.

What runs: both reference pipelines end to end from their own conditioning-media preprocessing to
final latents (output_type="latent"), with their own VAE encoders holding our VAE's weights, against
`sample()` fed by our VAE's encoder. One change is made to each reference: its VAE encode returns the
posterior mean instead of a random sample (the pack encodes with the mean, as ComfyUI; the references'
sample would consume randomness the pack does not draw). The noise: each reference's generator, seeded,
draws the video's noise (token-major in the official pipeline, channel-major in diffusers), then each
appended condition's noise, then the re-noising of strength-1 conditions every step
(`image_cond_noise_scale` 0.15, the official default); ours draws the same numbers from a generator
seeded alike (`sample(generator=...)`).

Tolerance 1e-4 max |Δ| on the final latents in float32 (VAE encoders agree to ~1e-6, the model to
~1e-6 per call). Negative controls: the pack's previous behaviour (everything in place, σ·(1 − s), no
re-noising) and appended tokens placed without their start frame must both miss by more than 1e-2.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from ltx_core import LTXVideoTransformer, VAEConfig, VideoVAE
from ltx_core.extension import DIRECTIONS, extension_condition, overlap_frames
from ltx_core.loading.keymaps import transformer_from_diffusers, vae_to_diffusers
from ltx_core.media import video_tensor_from_frames
from ltx_core.model.patchify import from_tokens
from ltx_core.sampling import conditioning as conditioning_module
from ltx_core.sampling.conditioning import FrameCondition
from ltx_core.sampling.noise import seeded_generator
from ltx_core.sampling.sampler import sample
from ltx_core.sampling.schedule import shifted_sigmas
from ltx_core.text.encoder import Conditioning
from official import official_pipeline, official_transformer, official_vae
from tiny import (
    TINY_VAE_LAYOUTS,
    diffusers_transformer,
    random_state_dict,
    random_vae_state_dict,
    tiny_transformer_config,
)

pytestmark = pytest.mark.parity

TOL = 1e-4
CONTROL = 1e-2
FRAMES, HEIGHT, WIDTH = 33, 64, 96  # → latent 5 × 2 × 3 = 30 video tokens
LATENT = (1, 16, 5, 2, 3)
STEPS = 6
SIGMAS = shifted_sigmas(STEPS, 30)  # spread from 1 to 0.1: partial-strength tokens start moving midway
COND_NOISE = 0.15  # the official `image_cond_noise_scale` default (inference.py), diffusers' default too
FPS = 25


@dataclass
class Setup:
    ours: LTXVideoTransformer
    vae: VideoVAE
    official: object
    official_module: object
    diffusers: object
    diffusers_module: object
    text: Conditioning


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one CPU thread is faster than several, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup():
    diffusers = pytest.importorskip("diffusers")
    ltx_pipeline = pytest.importorskip("ltx_video.pipelines.pipeline_ltx_video")
    from diffusers.pipelines.ltx import pipeline_ltx_condition

    cfg = tiny_transformer_config(heads=2, head_dim=16, causal=True)  # 0.9.5+: causal RoPE fix
    reference = diffusers_transformer(cfg)
    weights = random_state_dict({k: v.shape for k, v in reference.state_dict().items()}, 31)
    reference.load_state_dict(weights)
    original = transformer_from_diffusers(weights)
    ours = LTXVideoTransformer.from_state_dict(cfg, dict(original))

    vae_meta, vae_kwargs = TINY_VAE_LAYOUTS["0.9.5"]
    vae_cfg = VAEConfig.from_metadata(vae_meta)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VideoVAE(vae_cfg).state_dict().items()}
    vae_weights = random_vae_state_dict(shapes, 32)
    vae = VideoVAE.from_state_dict(vae_cfg, vae_weights)
    diffusers_vae = diffusers.AutoencoderKLLTXVideo(**vae_kwargs).eval()
    kinds = ([b.kind for b in vae_cfg.encoder_blocks], [b.kind for b in vae_cfg.decoder_blocks])
    diffusers_vae.load_state_dict(vae_to_diffusers(vae_weights, *kinds))

    official_pipe = official_pipeline(official_transformer(cfg, original), official_vae(vae_meta, vae_weights))
    diffusers_pipe = diffusers.LTXConditionPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),  # plain: the test hands it the sigmas
        vae=diffusers_vae,
        text_encoder=None,
        tokenizer=None,
        transformer=reference,
    )
    gen = torch.Generator().manual_seed(33)
    negative = Conditioning(torch.randn(1, 6, cfg.caption_channels, generator=gen), torch.tensor([[1, 1, 1, 0, 0, 0]]))
    text = Conditioning(
        torch.randn(1, 6, cfg.caption_channels, generator=gen), torch.tensor([[1, 1, 1, 1, 1, 0]]), negative
    )
    diffusers_pipe.set_progress_bar_config(disable=True)
    return Setup(ours, vae, official_pipe, ltx_pipeline, diffusers_pipe, pipeline_ltx_condition, text)


@pytest.fixture
def mean_encoders(monkeypatch, setup):
    """Both references encode conditioning media to the posterior mean (see the module docstring)."""
    from ltx_video.models.autoencoders.vae_encode import normalize_latents

    def official_encode(media, vae, vae_per_channel_normalize=False, **_):
        return normalize_latents(vae.encode(media).latent_dist.mode(), vae, vae_per_channel_normalize)

    monkeypatch.setattr(setup.official_module, "vae_encode", official_encode)
    monkeypatch.setattr(
        setup.diffusers_module, "retrieve_latents", lambda output, generator=None, **_: output.latent_dist.mode()
    )


def _media(frames: int, seed: int) -> torch.Tensor:
    """Frames (T, H, W, 3) in [0, 1]."""
    return torch.rand(frames, HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(seed))


def _encode(setup: Setup, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return setup.vae.encode(video_tensor_from_frames(frames))


def _ours(
    setup: Setup, conditions, seed: int, reference: str, *, layout="appended", noise_scale=COND_NOISE, initial=None
):
    """Our latents for `conditions`, with the noise drawn as `reference` draws it."""
    generator = seeded_generator(seed)
    b, c, f, h, w = LATENT
    if reference == "official":  # token-major: randn(B, F·H·W, C)
        noise = from_tokens(torch.randn(b, f * h * w, c, generator=generator), f, h, w)
    else:
        noise = torch.randn(LATENT, generator=generator)
    sigmas = SIGMAS if initial is None else SIGMAS[2:]
    with torch.no_grad():
        return sample(
            setup.ours,
            noise,
            sigmas,
            setup.text,
            guidance_scale=3.0,
            frame_rate=FPS,
            conditions=conditions,
            initial=initial,
            layout=layout,
            cond_noise_scale=noise_scale,
            generator=generator,
        )


def _official(setup: Setup, items, seed: int, video=None, initial=None) -> torch.Tensor:
    item = setup.official_module.ConditioningItem
    text = setup.text
    sigmas = SIGMAS if video is None else SIGMAS[2:]
    return setup.official(
        height=HEIGHT,
        width=WIDTH,
        num_frames=FRAMES,
        frame_rate=FPS,
        negative_prompt=None,
        timesteps=sigmas[:-1].tolist(),
        guidance_scale=3.0,
        stg_scale=0.0,
        rescaling_scale=1.0,
        generator=torch.Generator().manual_seed(seed),
        prompt_embeds=text.context,
        prompt_attention_mask=text.mask,
        negative_prompt_embeds=text.negative.context,
        negative_prompt_attention_mask=text.negative.mask,
        output_type="latent",
        conditioning_items=[item(video_tensor_from_frames(m), frame, s) for m, frame, s in items] or None,
        media_items=None if video is None else video_tensor_from_frames(video),
        is_video=True,
        vae_per_channel_normalize=True,
        image_cond_noise_scale=COND_NOISE,
    ).images


def _diffusers(setup: Setup, items, seed: int, video=None, initial=None) -> torch.Tensor:
    condition = setup.diffusers_module.LTXVideoCondition
    conditions = [
        condition(image=m.permute(0, 3, 1, 2), frame_index=frame, strength=s)
        if m.shape[0] == 1
        else condition(video=m.permute(0, 3, 1, 2), frame_index=frame, strength=s)
        for m, frame, s in items
    ]
    text = setup.text
    extra = {} if initial is None else dict(latents=initial, denoise_strength=0.7)
    return setup.diffusers(
        conditions=conditions or None,
        prompt_embeds=text.context,
        prompt_attention_mask=text.mask,
        negative_prompt_embeds=text.negative.context,
        negative_prompt_attention_mask=text.negative.mask,
        height=HEIGHT,
        width=WIDTH,
        num_frames=FRAMES,
        frame_rate=FPS,
        timesteps=(SIGMAS[:-1] * 1000).tolist(),
        guidance_scale=3.0,
        image_cond_noise_scale=COND_NOISE,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        **extra,
    ).frames


REFERENCES = {"official": _official, "diffusers": _diffusers}


def _without_start_frames(monkeypatch) -> None:
    """Negative control: appended tokens keep the positions of a video's first frames."""
    positions = conditioning_module.video_positions
    monkeypatch.setattr(conditioning_module, "video_positions", lambda *a, start_frame=0, **k: positions(*a, **k))


def _check(monkeypatch, setup, items, seed, reference, *, video=None, old_behaviour=True):
    """ours = reference within TOL; against the official pipeline the controls miss it by more than
    CONTROL (they concern our side only, one reference is enough). Returns the reference's latents."""
    conditions = [FrameCondition(_encode(setup, media), frame, strength) for media, frame, strength in items]
    initial = None if video is None else _encode(setup, video)
    theirs = REFERENCES[reference](setup, items, seed, video=video, initial=initial)
    ours = _ours(setup, conditions, seed, reference, initial=initial)
    assert theirs.abs().mean() > 0.1
    error = (ours - theirs).abs().max().item()
    assert error <= TOL, f"{reference}: max |Δ| {error:.2e}"
    if reference != "official":
        return theirs
    if old_behaviour:  # the pack before: every condition in place, σ·(1 − s), no re-noising
        old = _ours(setup, conditions, seed, reference, layout="in_place", noise_scale=0.0, initial=initial)
        assert (old - theirs).abs().max() > CONTROL
    if any(frame > 0 for _, frame, _ in items):
        with monkeypatch.context() as m:
            _without_start_frames(m)
            misplaced = _ours(setup, conditions, seed, reference, initial=initial)
        assert (misplaced - theirs).abs().max() > CONTROL
    return theirs


IMAGE_CASES = [
    pytest.param(frame, strength, id=f"image@{frame}-s{strength:g}")
    for frame in (0, 8, 16, FRAMES - 1)
    for strength in (1.0, 0.5)
]


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize(("frame", "strength"), IMAGE_CASES)
def test_image_at_a_frame(monkeypatch, setup, mean_encoders, reference, frame, strength):
    _check(monkeypatch, setup, [(_media(1, frame), frame, strength)], 40 + frame, reference)


CLIP_CASES = {
    "clip9@0": [(9, 0, 1.0)],
    "clip9@16": [(9, 16, 1.0)],  # two latent frames: both appended
    "clip17@8-s0.5": [(17, 8, 0.5)],  # prefix appended, third latent frame in place at latent frame 3
    "keyframes-0-16-last": [(1, 0, 1.0), (1, 16, 0.5), (1, FRAMES - 1, 1.0)],
    "image@20": [(1, 20, 1.0)],  # appended images may sit between multiples of 8
}


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("case", CLIP_CASES)
def test_clips_and_keyframes(monkeypatch, setup, mean_encoders, reference, case):
    items = [(_media(n, 7 * i + n), frame, s) for i, (n, frame, s) in enumerate(CLIP_CASES[case])]
    in_place_possible = all(frame % 8 == 0 for _, frame, _ in items)
    _check(monkeypatch, setup, items, 50, reference, old_behaviour=in_place_possible)


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_extension(monkeypatch, setup, mean_encoders, reference, direction):
    """A new 33-frame video continues a 25-frame one through 9 shared frames: `overlap_frames` and
    `extension_condition` give the clip condition the references get as media at frame 0 / 24."""
    old = _media(25, 60)
    shared = overlap_frames(old, 9, direction)
    condition = extension_condition(_encode(setup, shared), FRAMES, direction)
    assert condition.frame == (0 if direction == "forward" else 24)
    _check(monkeypatch, setup, [(shared, condition.frame, 1.0)], 61, reference)


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("with_image", [False, True], ids=["plain", "image@0"])
def test_video_to_video(monkeypatch, setup, mean_encoders, reference, with_image):
    """From an encoded video at σ = SIGMAS[2] (official: media_items + the shorter schedule; diffusers:
    latents + denoise_strength 0.7 → the last 4 of 6 steps)."""
    items = [(_media(1, 70), 0, 1.0)] if with_image else []
    video = _media(FRAMES, 72)
    theirs = _check(monkeypatch, setup, items, 71, reference, video=video, old_behaviour=with_image)
    if reference == "official" and not with_image:  # control: the input video ignored
        assert (_ours(setup, [], 71, reference, initial=torch.zeros(LATENT)) - theirs).abs().max() > CONTROL
