"""text_to_video(), image_to_video(), keyframes_to_video(), video_to_video() and extend_video(): the
whole LTX-Video pipeline, top to bottom.

Components stay where they were loaded (usually the CPU) and visit the compute device one at a time,
so the text encoder, the transformer and the VAE never occupy it together; in the low_vram memory
mode the text encoder and the transformer visit it block by block (see memory.py).

Each generation runs with its release's official one-pass settings (steps or fixed noise levels, CFG and
STG per noise-level range, CFG-zero*, stochastic steps, prompt length, conditioning, decoding); a
`Settings` field overrides one of them (settings.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .defaults import ReleaseDefaults, defaults_for
from .extension import join_frames, overlap_frames
from .loading.detect import model_size
from .loading.release import AUTO, Release, detect_release
from .loading.text_encoder import load_text_encoder
from .loading.transformer import load_transformer
from .loading.vae import load_vae
from .media import compress_like_h264, frames_from_video_tensor, resize_and_crop, video_tensor_from_frames
from .memory import check_memory_mode, default_device, placed, to_host, vae_budget
from .model.fp8 import quantize_linears
from .model.transformer import LTXVideoTransformer
from .model.vae.autoencoder import VideoVAE
from .sampling.conditioning import FrameCondition
from .sampling.noise import draw_noise, seeded_generator
from .sampling.sampler import StepCallback, sample
from .settings import Settings, resolve_settings
from .text.encoder import T5TextEncoder
from .types import VAE_SPATIAL_SCALE, check_video_shape, latent_frames

logger = logging.getLogger(__name__)

# The official command line's default negative prompt.
DEFAULT_NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"
DEFAULT_SETTINGS = Settings()  # 768×512, 121 frames, everything else the release's


@dataclass
class Models:
    """The three components and the release that picks their defaults (see `defaults.py`): as the
    loaders decided it, or a release name (its defaults at the transformer's size)."""

    transformer: LTXVideoTransformer
    vae: VideoVAE
    text_encoder: T5TextEncoder
    release: Release | str

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
    ) -> Models:
        """Load onto the CPU: the transformer (and, unless `vae` is given, the VAE) from `checkpoint`,
        T5 from `text_encoder`. dtype is the transformer's weight dtype (fp8 computes in bf16);
        `fp8_matmul` requantizes its blocks' linear layers for fp8 matrix products (see model/fp8.py).
        `release`: "auto" reads it off the files (and refuses when they cannot tell), a name of
        defaults.RELEASES, or a Release that detect_release returned (see loading/release.py)."""
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
        return cls(transformer, vae_model, t5, found)


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


def _encode_pixels(vae: VideoVAE, frames: torch.Tensor, device: torch.device | str, memory: str) -> torch.Tensor:
    """(B, T, H, W, 3) in [0, 1] → normalised latents (B, C, F, H/32, W/32), encoded on `device`."""
    with placed(vae, device), torch.inference_mode():
        return vae.encode(video_tensor_from_frames(frames).to(device), memory_budget=vae_budget(memory))


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
    run = resolve_settings(s, models.defaults)  # the release's settings where `s` leaves them None
    run.check_blocks(models.transformer.config.num_layers)
    check_video_shape(s.frames, s.height, s.width)
    memory = check_memory_mode(s.memory)
    device = s.device or default_device()
    channels = models.transformer.config.in_channels
    shape = (s.batch, channels, latent_frames(s.frames), s.height // VAE_SPATIAL_SCALE, s.width // VAE_SPATIAL_SCALE)

    # 1. Prompts → T5 hidden states; the negative prompt is the unconditional branch of CFG, encoded
    #    only when some step runs CFG (distilled releases: one forward of batch 1 per step).
    negative = negative_prompt if run.guidance.uses_negative else None
    with placed(models.text_encoder, device, memory), torch.inference_mode():
        text = models.text_encoder.encode(prompt, negative, run.text_tokens)

    # 2. Conditioning images and clips, (1, T, H, W, 3) at a pixel frame, or the input video →
    #    normalised latents.
    frame_conditions = [
        FrameCondition(_encode_pixels(models.vae, pixels, device, memory), frame, strength)
        for pixels, frame, strength in conditions
    ]
    initial = _encode_pixels(models.vae, video, device, memory) if video is not None else None

    # 3. Noise levels from 1 (or `denoise`) to 0, and seeded noise that is the same on every device;
    #    the same generator then draws the noise of appended conditions, of their re-noising and of
    #    stochastic steps (as the official pipeline does).
    sigmas = run.sigmas(shape[2] * shape[3] * shape[4], denoise)
    generator = seeded_generator(s.seed)
    noise = draw_noise(shape, generator, device=device)

    # 4. Denoise with the transformer: every branch of a step's guidance (CFG, STG) in one call.
    with placed(models.transformer, device, memory), torch.inference_mode():
        latents = sample(
            models.transformer,
            noise,
            sigmas,
            text,
            guidance=run.guidance,
            stochastic_sampling=run.stochastic_sampling,
            frame_rate=run.frame_rate,
            conditions=frame_conditions,
            initial=initial,
            layout=run.conditioning,
            cond_noise_scale=run.cond_noise_scale,
            generator=generator,
            on_step=on_step,
        )

    # 5. Decode at the release's decode timestep, with its (seeded) decode noise.
    with placed(models.vae, device), torch.inference_mode():
        pixels = models.vae.decode(
            latents,
            run.decode_timestep,
            noise_scale=run.decode_noise_scale,
            generator=seeded_generator(s.seed),
            memory_budget=vae_budget(memory),
        )
    return to_host(frames_from_video_tensor(pixels.float()))  # converted on the device, copied once
