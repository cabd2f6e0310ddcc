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
from .defaults import RELEASE_DEFAULTS, ReleaseDefaults
from .loading import CheckpointMismatchError
from .loading.errors import CheckpointError
from .loading.text_encoder import load_text_encoder, tokenizer_beside
from .loading.transformer import load_transformer
from .loading.vae import load_vae
from .model.rope import video_positions
from .model.transformer import LTXVideoTransformer
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
from .sampling.noise import seeded_noise
from .sampling.sampler import sample
from .sampling.schedule import custom_sigmas, linear_quadratic_sigmas, make_schedule, shifted_sigmas
from .text.encoder import Conditioning, T5TextEncoder

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "LTXV_2B",
    "LTXV_2B_CAUSAL",
    "LTXV_13B",
    "RELEASE_DEFAULTS",
    "VAE_090",
    "VAE_091",
    "VAE_095",
    "CheckpointError",
    "CheckpointMismatchError",
    "Conditioning",
    "FrameCondition",
    "Keyframe",
    "LTXVideoTransformer",
    "Models",
    "ReleaseDefaults",
    "Settings",
    "T5TextEncoder",
    "TransformerConfig",
    "VAEBlock",
    "VAEConfig",
    "VideoVAE",
    "custom_sigmas",
    "detect_vae_layout",
    "extend_video",
    "image_to_video",
    "keyframes_to_video",
    "linear_quadratic_sigmas",
    "load_text_encoder",
    "load_transformer",
    "load_vae",
    "make_schedule",
    "sample",
    "seeded_noise",
    "shifted_sigmas",
    "text_to_video",
    "tokenizer_beside",
    "video_positions",
    "video_to_video",
]
