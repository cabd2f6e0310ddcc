"""ltx_core: a self-contained PyTorch implementation of Lightricks' LTX-Video."""

from .config import (
    LTXV_2B,
    LTXV_2B_CAUSAL,
    LTXV_13B,
    VAE_090,
    VAE_091,
    VAE_095,
    TransformerConfig,
    VAEBlock,
    VAEConfig,
    detect_vae_layout,
)
from .defaults import RELEASE_DEFAULTS, RELEASES, ReleaseDefaults, defaults_for
from .loading import CheckpointMismatchError
from .loading.errors import CheckpointError
from .loading.lora import LoRA, load_lora
from .loading.release import Release, detect_release
from .loading.text_encoder import load_text_encoder, tokenizer_beside
from .loading.transformer import load_transformer
from .loading.upsampler import load_latent_upsampler
from .loading.vae import load_vae
from .lora import LoraStack, apply_loras, loras_of
from .model.ops import describe_ops
from .model.rope import video_positions
from .model.transformer import LTXVideoTransformer
from .model.upsampler import LatentUpsampler, LatentUpsamplerConfig
from .model.vae.autoencoder import VideoVAE
from .pipeline import (
    DEFAULT_NEGATIVE_PROMPT,
    Keyframe,
    Models,
    Settings,
    extend_video,
    image_to_video,
    keyframes_to_video,
    text_to_video,
    video_to_video,
)
from .sampling.conditioning import FrameCondition
from .sampling.guidance import Guidance
from .sampling.noise import seeded_noise
from .sampling.sampler import sample
from .sampling.schedule import custom_sigmas, linear_quadratic_sigmas, make_schedule, shifted_sigmas
from .text.encoder import Conditioning, T5TextEncoder
from .upsampling import adain_filter_latent, tone_map_latents, upsample_latents

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "LTXV_2B",
    "LTXV_2B_CAUSAL",
    "LTXV_13B",
    "RELEASES",
    "RELEASE_DEFAULTS",
    "VAE_090",
    "VAE_091",
    "VAE_095",
    "CheckpointError",
    "CheckpointMismatchError",
    "Conditioning",
    "FrameCondition",
    "Guidance",
    "Keyframe",
    "LTXVideoTransformer",
    "LoRA",
    "LoraStack",
    "LatentUpsampler",
    "LatentUpsamplerConfig",
    "Models",
    "Release",
    "ReleaseDefaults",
    "Settings",
    "T5TextEncoder",
    "TransformerConfig",
    "VAEBlock",
    "VAEConfig",
    "VideoVAE",
    "adain_filter_latent",
    "apply_loras",
    "custom_sigmas",
    "defaults_for",
    "describe_ops",
    "detect_release",
    "detect_vae_layout",
    "extend_video",
    "image_to_video",
    "keyframes_to_video",
    "linear_quadratic_sigmas",
    "load_latent_upsampler",
    "load_lora",
    "load_text_encoder",
    "load_transformer",
    "load_vae",
    "loras_of",
    "make_schedule",
    "sample",
    "seeded_noise",
    "shifted_sigmas",
    "text_to_video",
    "tokenizer_beside",
    "tone_map_latents",
    "upsample_latents",
    "video_positions",
    "video_to_video",
]
