"""Model configurations: frozen dataclasses parsed from checkpoint metadata or diffusers' config.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Values of the original (Lightricks) transformer config that this implementation hard-codes.
# A checkpoint asking for anything else is not a released LTX-Video transformer.
_ORIGINAL_FIXED_VALUES: dict[str, tuple[Any, ...]] = {
    "activation_fn": ("gelu-approximate",),
    "qk_norm": ("rms_norm",),
    "standardization_norm": ("rms_norm",),
    "adaptive_norm": ("single_scale_shift",),
    "positional_embedding_type": ("rope",),
    "norm_elementwise_affine": (False,),
    "attention_bias": (True,),
    "use_tpu_flash_attention": (False, True),  # a runtime switch of the official code, not a weight layout
}

# The same for diffusers' LTXVideoTransformer3DModel config.json.
_DIFFUSERS_FIXED_VALUES: dict[str, tuple[Any, ...]] = {
    "activation_fn": ("gelu-approximate",),
    "qk_norm": ("rms_norm_across_heads",),
    "norm_elementwise_affine": (False,),
    "attention_bias": (True,),
    "attention_out_bias": (True,),
    "patch_size": (1,),
    "patch_size_t": (1,),
}


def _check_fixed_values(cfg: Mapping[str, Any], fixed: Mapping[str, tuple[Any, ...]], source: str) -> None:
    for key, allowed in fixed.items():
        if key in cfg and cfg[key] not in allowed:
            raise ValueError(
                f"{source}: {key}={cfg[key]!r} is not supported (expected one of {list(allowed)}). "
                "This does not look like a released LTX-Video transformer; use an official LTX-Video checkpoint."
            )


def _shape_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The fields both config formats spell the same way."""
    num_heads = int(cfg.get("num_attention_heads", 32))
    head_dim = int(cfg.get("attention_head_dim", 64))
    in_channels = int(cfg.get("in_channels", 128))
    return {
        "num_layers": int(cfg.get("num_layers", 28)),
        "num_heads": num_heads,
        "head_dim": head_dim,
        "in_channels": in_channels,
        "out_channels": int(cfg.get("out_channels") or in_channels),
        "caption_channels": int(cfg.get("caption_channels", 4096)),
        "cross_attention_dim": int(cfg.get("cross_attention_dim") or num_heads * head_dim),
        "norm_eps": float(cfg.get("norm_eps", 1e-6)),
    }


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and constants of the LTX-Video DiT.

    The defaults are the 2B model shared by releases 0.9.0 … 0.9.8; see `LTXV_13B` for the 13B model.
    """

    num_layers: int = 28
    num_heads: int = 32
    head_dim: int = 64  # 2B model; the 13B model uses 128
    in_channels: int = 128  # latent channels (patch size 1×1×1)
    out_channels: int = 128
    caption_channels: int = 4096  # T5-XXL hidden size
    cross_attention_dim: int = 2048  # width of the projected text tokens, always the hidden size
    ff_mult: int = 4
    norm_eps: float = 1e-6  # the modulated RMSNorms and the output LayerNorm
    qk_norm_eps: float = 1e-5  # RMSNorm over the full query/key vector ("across heads")
    rope_theta: float = 10000.0
    rope_max_pos: tuple[int, int, int] = (20, 2048, 2048)  # frames, height, width
    timestep_scale_multiplier: float = 1000.0  # the model embeds sigma * 1000
    causal_temporal_positioning: bool = False  # the "1 - frame" RoPE fix of 0.9.5+

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_heads", "head_dim", "in_channels", "out_channels", "caption_channels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TransformerConfig.{name} must be positive, got {getattr(self, name)}")
        if len(self.rope_max_pos) != 3:
            raise ValueError(f"rope_max_pos needs (frames, height, width), got {self.rope_max_pos}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.cross_attention_dim != self.hidden_dim:
            raise ValueError(
                f"cross_attention_dim ({self.cross_attention_dim}) must equal num_heads × head_dim "
                f"({self.hidden_dim}): the caption projection maps text to the hidden size"
            )

    @property
    def hidden_dim(self) -> int:
        return self.num_heads * self.head_dim

    @classmethod
    def from_metadata(cls, cfg: Mapping[str, Any]) -> TransformerConfig:
        """From the `transformer` entry of an original checkpoint's embedded `config` JSON."""
        _check_fixed_values(cfg, _ORIGINAL_FIXED_VALUES, "transformer config")
        return cls(
            **_shape_fields(cfg),
            rope_theta=float(cfg.get("positional_embedding_theta", 10000.0)),
            rope_max_pos=tuple(int(p) for p in cfg.get("positional_embedding_max_pos", (20, 2048, 2048))),
            timestep_scale_multiplier=float(cfg.get("timestep_scale_multiplier") or 1000.0),
            causal_temporal_positioning=bool(cfg.get("causal_temporal_positioning", False)),
        )

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any], *, causal_temporal_positioning: bool = False) -> TransformerConfig:
        """From a diffusers `transformer/config.json` (LTXVideoTransformer3DModel).

        diffusers hard-codes the RoPE constants and does not record the causal RoPE fix, so the
        caller passes it (true for 0.9.5+ weights).
        """
        _check_fixed_values(cfg, _DIFFUSERS_FIXED_VALUES, "diffusers transformer config")
        return cls(**_shape_fields(cfg), causal_temporal_positioning=causal_temporal_positioning)

    def to_metadata(self) -> dict[str, Any]:
        """The original-format config dict (what `from_metadata` reads back)."""
        return {
            "_class_name": "Transformer3DModel",
            "num_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "attention_head_dim": self.head_dim,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "caption_channels": self.caption_channels,
            "cross_attention_dim": self.cross_attention_dim,
            "activation_fn": "gelu-approximate",
            "attention_bias": True,
            "norm_elementwise_affine": False,
            "norm_eps": self.norm_eps,
            "qk_norm": "rms_norm",
            "standardization_norm": "rms_norm",
            "adaptive_norm": "single_scale_shift",
            "positional_embedding_type": "rope",
            "positional_embedding_theta": self.rope_theta,
            "positional_embedding_max_pos": list(self.rope_max_pos),
            "timestep_scale_multiplier": self.timestep_scale_multiplier,
            "causal_temporal_positioning": self.causal_temporal_positioning,
        }


LTXV_2B = TransformerConfig()
LTXV_2B_CAUSAL = TransformerConfig(causal_temporal_positioning=True)  # 0.9.5 … 0.9.8 2B
LTXV_13B = TransformerConfig(num_layers=48, head_dim=128, cross_attention_dim=4096, causal_temporal_positioning=True)
