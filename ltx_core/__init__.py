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
from .loading import CheckpointMismatchError
from .model.rope import video_positions
from .model.transformer import LTXVideoTransformer
from .model.vae.autoencoder import VideoVAE

__all__ = [
    "LTXV_2B",
    "LTXV_2B_CAUSAL",
    "LTXV_13B",
    "CheckpointMismatchError",
    "LTXVideoTransformer",
    "TransformerConfig",
    "video_positions",
    "VAE_090",
    "VAE_091",
    "VAE_095",
    "VAEBlock",
    "VAEConfig",
    "VideoVAE",
    "detect_vae_layout",
]
