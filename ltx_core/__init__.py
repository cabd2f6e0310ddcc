"""ltx_core: a self-contained PyTorch implementation of Lightricks' LTX-Video."""

from .config import LTXV_2B, LTXV_2B_CAUSAL, LTXV_13B, TransformerConfig
from .loading import CheckpointMismatchError
from .model.rope import video_positions
from .model.transformer import LTXVideoTransformer

__all__ = [
    "LTXV_2B",
    "LTXV_2B_CAUSAL",
    "LTXV_13B",
    "CheckpointMismatchError",
    "LTXVideoTransformer",
    "TransformerConfig",
    "video_positions",
]
