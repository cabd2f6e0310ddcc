"""text_to_video(), image_to_video(), keyframes_to_video(), video_to_video() and extend_video(): the
whole LTX-Video pipeline, top to bottom.

Components stay where they were loaded (usually the CPU) and visit the compute device one at a time,
so the text encoder, the transformer and the VAE never occupy it together; in the low_vram memory
mode the text encoder and the transformer visit it block by block (see memory.py).

Each generation runs with its release's official one-pass settings (steps or fixed noise levels, CFG and
STG per noise-level range, CFG-zero*, stochastic steps, prompt length, conditioning, decoding); a
`Settings` field overrides one of them (settings.py).

With `Settings(multiscale=True)` a 0.9.7+ release runs its two official passes instead: the first at a
reduced size, the latents doubled by the spatial upsampler, the second refining them (`_generate_multiscale`;
multiscale.py says which reference each step follows).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from .defaults import ReleaseDefaults, defaults_for
from .extension import join_frames, overlap_frames
from .loading.detect import model_size
from .loading.release import AUTO, Release, detect_release
from .loading.text_encoder import load_text_encoder
from .loading.transformer import load_transformer
from .loading.upsampler import inspect_latent_upsampler, load_latent_upsampler, require_spatial
from .loading.vae import load_vae
from .media import compress_like_h264, frames_from_video_tensor, resize_and_crop, video_tensor_from_frames
from .memory import check_memory_mode, default_device, placed, to_host, vae_budget
from .model.fp8 import quantize_linears
from .model.transformer import LTXVideoTransformer
from .model.upsampler import LatentUpsampler
from .model.vae.autoencoder import VideoVAE
from .multiscale import decode_input, resize_frames, resolve_multiscale, undecided
from .parallel import Parallel, decode_split
from .sampling.conditioning import FrameCondition
from .sampling.noise import draw_noise, seeded_generator
from .sampling.sampler import StepCallback, sample
from .settings import ResolvedSettings, Settings, resolve_settings
from .text.encoder import Conditioning, T5TextEncoder
from .types import VAE_SPATIAL_SCALE, check_video_shape, latent_frames
from .upsampling import upsample_latents

logger = logging.getLogger(__name__)

# The official command line's default negative prompt.
DEFAULT_NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"
DEFAULT_SETTINGS = Settings()  # 768×512, 121 frames, everything else the release's


@dataclass
class Models:
    """The three components and the release that picks their defaults (see `defaults.py`): as the
    loaders decided it, or a release name (its defaults at the transformer's size); and, for
    `Settings(multiscale=True)`, a spatial latent upsampler."""

    transformer: LTXVideoTransformer
    vae: VideoVAE
    text_encoder: T5TextEncoder
    release: Release | str
    upsampler: LatentUpsampler | None = None

    @property
    def defaults(self) -> ReleaseDefaults:
        if isinstance(self.release, Release):
            return self.release.defaults
        config = self.transformer.config
        return defaults_for(self.release, model_size(config.hidden_dim, config.num_layers))

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        text_encoder: str | Path,
        *,
        vae: str | Path | None = None,
        tokenizer: str | Path | None = None,
        dtype: torch.dtype = torch.bfloat16,
        fp8_matmul: bool = False,
        release: Release | str = AUTO,
        upsampler: str | Path | None = None,
    ) -> Models:
        """Load onto the CPU: the transformer (and, unless `vae` is given, the VAE) from `checkpoint`,
        T5 from `text_encoder`. dtype is the transformer's weight dtype (fp8 computes in bf16);
        `fp8_matmul` requantizes its blocks' linear layers for fp8 matrix products (see model/fp8.py).
        `release`: "auto" reads it off the files (and refuses when they cannot tell), a name of
        defaults.RELEASES, or a Release that detect_release returned (see loading/release.py).
        `upsampler`: a spatial latent upsampler file or folder for multi-scale generation (the release's
        is `models.defaults.spatial_upscaler` in Lightricks/LTX-Video), in the VAE's dtype."""
        found = release
        if not isinstance(found, Release):
            found = detect_release(checkpoint, vae, found)
            logger.info("%s", found.describe())
        causal = found.causal_positions
        transformer, _ = load_transformer(checkpoint, dtype=dtype, device="cpu", causal_temporal_positioning=causal)
        if fp8_matmul:
            quantize_linears(transformer)
        vae_model, _ = load_vae(vae or checkpoint, dtype=transformer.dtype, device="cpu")
        t5, _ = load_text_encoder(text_encoder, dtype=transformer.dtype, device="cpu", tokenizer_path=tokenizer)
        spatial = None
        if upsampler is not None:
            require_spatial(inspect_latent_upsampler(upsampler))
            spatial, _ = load_latent_upsampler(upsampler, dtype=transformer.dtype, device="cpu")
        return cls(transformer, vae_model, t5, found, spatial)


def text_to_video(
    models: Models,
    prompt: str,
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    settings: Settings = DEFAULT_SETTINGS,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Generate videos from a prompt. Returns frames (batch, T, H, W, 3) float32 in [0, 1]."""
    return _generate(models, prompt, negative_prompt, settings, on_step=on_step)


@dataclass(frozen=True)
class Keyframe:
    """An image (H, W, 3) or a clip (T, H, W, 3) of 1 + 8·k frames, in [0, 1], kept from pixel frame
    `frame` on (negative counts from the end: −1 is the last frame, −T puts a T-frame clip at the end)
    with `strength` (1 = exactly). 0.9.5+ models take images at any frame and clips at multiples of
    8; 0.9.0 / 0.9.1 write every keyframe in place, at multiples of 8 (see sampling/conditioning.py)."""

    pixels: torch.Tensor
    frame: int = 0
    strength: float = 1.0


def image_to_video(
    models: Models,
    image: torch.Tensor,
    prompt: str,
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    settings: Settings = DEFAULT_SETTINGS,
    *,
    strength: float = 1.0,
    image_crf: int = 29,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Animate `image` (H, W, 3) in [0, 1] as the first frame: it is resized and centre-cropped to
    the video's size, given H.264-like compression artefacts at `image_crf` (0 = none; the
    official default 29 makes it look like the video frames the model saw in training) and kept at
    `strength` (1 = exactly)."""
    return keyframes_to_video(
        models, [Keyframe(image, 0, strength)], prompt, negative_prompt, settings, image_crf=image_crf, on_step=on_step
    )


def keyframes_to_video(
    models: Models,
    keyframes: Sequence[Keyframe],
    prompt: str,
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    settings: Settings = DEFAULT_SETTINGS,
    *,
    image_crf: int = 29,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Generate a video through `keyframes` (first frame, keyframes, last frame, clips). Each is resized
    and centre-cropped to the video's size; images get H.264-like artefacts at `image_crf` as in
    `image_to_video`. Returns frames (batch, T, H, W, 3) float32 in [0, 1]."""
    conditions = []
    for key in keyframes:
        clip = key.pixels if key.pixels.ndim == 4 else key.pixels[None]  # (T, H, W, 3)
        pixels = resize_and_crop(clip, settings.width, settings.height)
        if clip.shape[0] == 1:
            pixels = compress_like_h264(pixels, image_crf)
        frame = key.frame if key.frame >= 0 else settings.frames + key.frame
        conditions.append((pixels[None], frame, key.strength))
    return _generate(models, prompt, negative_prompt, settings, conditions=conditions, on_step=on_step)


def video_to_video(
    models: Models,
    video: torch.Tensor,
    prompt: str,
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    settings: Settings = DEFAULT_SETTINGS,
    *,
    denoise: float = 0.6,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Re-generate `video` (T, H, W, 3) in [0, 1] (sized as `settings`) from noise level `denoise`:
    low values keep more of the input. Frames are resized and centre-cropped to the settings' size."""
    if video.ndim != 4 or video.shape[0] != settings.frames:
        raise ValueError(
            f"the input video has shape {tuple(video.shape)}; expected (frames, height, width, 3) with "
            f"{settings.frames} frames as in the settings: set frames to the video's length (1 + 8·k) or trim it"
        )
    frames = resize_and_crop(video, settings.width, settings.height)
    return _generate(models, prompt, negative_prompt, settings, video=frames[None], denoise=denoise, on_step=on_step)


def extend_video(
    models: Models,
    video: torch.Tensor,
    prompt: str,
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
    settings: Settings = DEFAULT_SETTINGS,
    *,
    direction: str = "forward",
    overlap: int = 17,
    strength: float = 1.0,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Continue `video` (T, H, W, 3) in [0, 1] forward (after its last frame) or backward (before its
    first): a new video of `settings.frames` frames is generated through the `overlap` (1 + 8·k) frames
    it shares with the old one, then joined to it. Returns frames (batch, T + frames − overlap, H, W, 3)."""
    old = resize_and_crop(video, settings.width, settings.height)
    shared = overlap_frames(old, overlap, direction)
    start = 0 if direction == "forward" else settings.frames - overlap
    new = _generate(
        models, prompt, negative_prompt, settings, conditions=[(shared[None], start, strength)], on_step=on_step
    )
    return torch.stack([join_frames(old.to(new), clip, overlap, direction) for clip in new])


@dataclass(frozen=True)
class _On:
    """Where a generation runs: its models, the compute device they visit, the memory mode and the processes
    that share its sampling and decoding (ltx_core.parallel), if any."""

    models: Models
    device: torch.device | str
    memory: str
    parallel: Parallel | None = None


def _encode_pixels(on: _On, frames: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, 3) in [0, 1] → normalised latents (B, C, F, H/32, W/32), encoded on the device."""
    with placed(on.models.vae, on.device), torch.inference_mode():
        return on.models.vae.encode(video_tensor_from_frames(frames).to(on.device), memory_budget=vae_budget(on.memory))


def _generate(
    models: Models,
    prompt: str,
    negative_prompt: str,
    s: Settings,
    *,
    conditions: Sequence[tuple[torch.Tensor, int, float]] = (),
    video: torch.Tensor | None = None,
    denoise: float = 1.0,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    check_video_shape(s.frames, s.height, s.width)
    on = _On(models, s.device or default_device(), check_memory_mode(s.memory), s.parallel)
    if s.multiscale:
        if video is not None:
            raise ValueError(
                "video_to_video has no multi-scale form (the official multi-scale pipeline cannot start from an "
                "input video): set Settings.multiscale=False"
            )
        return _generate_multiscale(on, prompt, negative_prompt, s, conditions, on_step)
    run = resolve_settings(s, models.defaults)  # the release's settings where `s` leaves them None
    run.check_blocks(models.transformer.config.num_layers)

    # 1. Prompts → T5 hidden states; the negative prompt only when some step runs CFG.
    text = _encode_prompts(on, prompt, negative_prompt, [run])

    # 2. Conditioning images and clips, (1, T, H, W, 3) at a pixel frame, or the input video →
    #    normalised latents.
    frame_conditions = _encode_conditions(on, conditions, (s.width, s.height))
    initial = _encode_pixels(on, video) if video is not None else None

    # 3–4. Seeded noise and the denoising steps (from `denoise` for video-to-video).
    generator = seeded_generator(s.seed)
    shape = _latent_shape(models, s, (s.width, s.height))
    latents = _sample_pass(
        on, run, text, shape, frame_conditions, generator, initial=initial, denoise=denoise, on_step=on_step
    )

    # 5. Decode at the release's decode timestep, with its (seeded) decode noise.
    return _decode(on, latents, run, s.seed)


def _generate_multiscale(
    on: _On,
    prompt: str,
    negative_prompt: str,
    s: Settings,
    conditions: Sequence[tuple[torch.Tensor, int, float]],
    on_step: StepCallback | None,
) -> torch.Tensor:
    """The official LTXMultiScalePipeline, step by step as multiscale.py lists them; `on_step` counts the
    steps of both passes as one run."""
    models = on.models
    if isinstance(models.release, Release) and (doubt := undecided(models.release)):
        raise ValueError(f"multiscale: {doubt}; name the release (Models.load(…, release=…))")
    plan = resolve_multiscale(s, models.defaults)
    plan.check_blocks(models.transformer.config.num_layers)
    if models.upsampler is None:
        raise ValueError(
            "multiscale needs a spatial latent upsampler: load one with Models.load(…, upsampler=…) (this "
            f"release's is {plan.spatial_upscaler} in Lightricks/LTX-Video) or set Models.upsampler"
        )
    text = _encode_prompts(on, prompt, negative_prompt, [plan.first, plan.second])
    generator = seeded_generator(s.seed)  # one generator for both passes, as the official pipeline's
    before, total = plan.first.steps_run, plan.first.steps_run + plan.second.steps_run

    # 1. The first pass at the reduced size.
    first = _encode_conditions(on, conditions, plan.first_size)
    shape = _latent_shape(models, s, plan.first_size)
    low = _sample_pass(on, plan.first, text, shape, first, generator, on_step=_counted(on_step, 0, total))

    # 2. ×2 by the spatial upsampler, AdaIN against the first pass's latents.
    with placed(models.upsampler, on.device), torch.inference_mode():
        upsampled = upsample_latents(models.upsampler, models.vae, low)

    # 3. The second pass from the upsampled latents, noised to its first level.
    second = _encode_conditions(on, conditions, plan.second_size)
    steps = _counted(on_step, before, total)
    latents = _sample_pass(on, plan.second, text, upsampled.shape, second, generator, initial=upsampled, on_step=steps)

    # 4. Decoded at the second pass's size (tone-mapped where it says), resized to the size asked for.
    return resize_frames(_decode(on, latents, plan.second, s.seed), s.width, s.height)


def _latent_shape(models: Models, s: Settings, size: tuple[int, int]) -> tuple[int, int, int, int, int]:
    """(B, C, F, H, W) of the latents of a video of `size` (width, height) and the settings' frames."""
    width, height = size
    channels = models.transformer.config.in_channels
    return (s.batch, channels, latent_frames(s.frames), height // VAE_SPATIAL_SCALE, width // VAE_SPATIAL_SCALE)


def _encode_prompts(on: _On, prompt: str, negative_prompt: str, runs: Sequence[ResolvedSettings]) -> Conditioning:
    """Prompts → T5 hidden states. The negative prompt is the unconditional branch of CFG, encoded only
    when some step of `runs` runs CFG (distilled releases: one forward of batch 1 per step)."""
    negative = negative_prompt if any(run.guidance.uses_negative for run in runs) else None
    with placed(on.models.text_encoder, on.device, on.memory), torch.inference_mode():
        return on.models.text_encoder.encode(prompt, negative, runs[0].text_tokens)


def _encode_conditions(
    on: _On, conditions: Sequence[tuple[torch.Tensor, int, float]], size: tuple[int, int]
) -> list[FrameCondition]:
    """Conditions (pixels (1, T, H, W, 3) in [0, 1], pixel frame, strength) → FrameConditions encoded at
    `size` (width, height); pixels of another size are resized to it first (see `resize_frames`)."""
    return [
        FrameCondition(_encode_pixels(on, resize_frames(pixels, *size)), frame, strength)
        for pixels, frame, strength in conditions
    ]


def _counted(on_step: StepCallback | None, before: int, total: int) -> StepCallback | None:
    """`on_step` told each step of a pass as step `before + i` of `total` (the passes as one run)."""
    if on_step is None:
        return None
    return lambda step, _, denoised: on_step(before + step, total, denoised)


def _sample_pass(
    on: _On,
    run: ResolvedSettings,
    text: Conditioning,
    shape: Sequence[int],
    conditions: Sequence[FrameCondition],
    generator: torch.Generator,
    *,
    initial: torch.Tensor | None = None,
    denoise: float = 1.0,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """One pass: noise levels from 1 (or `denoise`; a late-starting pass's first level) to 0, seeded noise
    of `shape` (B, C, F, H, W) from `generator`, the same on every device, which then also draws the noise
    of appended conditions, of their re-noising and of stochastic steps (as the official pipeline does),
    over `initial` latents when given; then the transformer's steps, every branch of a step's guidance
    (CFG, STG) in one call. Returns the latents, float32."""
    sigmas = run.sigmas(shape[2] * shape[3] * shape[4], denoise)
    noise = draw_noise(tuple(shape), generator, device=on.device)
    with placed(on.models.transformer, on.device, on.memory), torch.inference_mode():
        return sample(
            on.models.transformer,
            noise,
            sigmas,
            text,
            guidance=run.guidance,
            stochastic_sampling=run.stochastic_sampling,
            frame_rate=run.frame_rate,
            conditions=conditions,
            initial=initial,
            layout=run.conditioning,
            cond_noise_scale=run.cond_noise_scale,
            generator=generator,
            on_step=on_step,
            parallel=on.parallel,
        )


def _decode(on: _On, latents: torch.Tensor, run: ResolvedSettings, seed: int) -> torch.Tensor:
    """Latents → frames (B, T, H, W, 3) in [0, 1] on the host, decoded at the release's decode timestep
    with its decode noise, seeded by `seed`. Where the run tone-maps, the noise is mixed in first (the
    same numbers the decoder would draw) and the mix tone-mapped, as the official pipeline orders them."""
    generator = seeded_generator(seed)
    noise_scale = run.decode_noise_scale
    with placed(on.models.vae, on.device), torch.inference_mode():
        if run.tone_map_compression:
            latents = decode_input(latents, noise_scale, run.tone_map_compression, generator)
            noise_scale = 0.0
        decode = on.models.vae.decode if on.parallel is None else partial(decode_split, on.parallel, on.models.vae)
        pixels = decode(
            latents,
            run.decode_timestep,
            noise_scale=noise_scale,
            generator=generator,
            memory_budget=vae_budget(on.memory),
        )
    return to_host(frames_from_video_tensor(pixels.float()))  # converted on the device, copied once
