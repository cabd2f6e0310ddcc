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


def shape_fields(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The shape fields, which both config formats spell the same way (absent: the 2B model's)."""
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
    }


def settings_from_metadata(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an original transformer config that no tensor shape records (RoPE theta and max
    positions, the timestep multiplier, the causal RoPE fix, norm eps; absent keys take the official
    defaults), after checking the values this implementation hard-codes."""
    _check_fixed_values(cfg, _ORIGINAL_FIXED_VALUES, "transformer config")
    return {
        "norm_eps": float(cfg.get("norm_eps", 1e-6)),
        "rope_theta": float(cfg.get("positional_embedding_theta", 10000.0)),
        "rope_max_pos": tuple(int(p) for p in cfg.get("positional_embedding_max_pos", (20, 2048, 2048))),
        "timestep_scale_multiplier": float(cfg.get("timestep_scale_multiplier") or 1000.0),
        "causal_temporal_positioning": bool(cfg.get("causal_temporal_positioning", False)),
    }


# TransformerConfig field → its name in the original config: the fields tensor shapes determine.
TRANSFORMER_SHAPE_KEYS = {
    "num_layers": "num_layers",
    "num_heads": "num_attention_heads",
    "head_dim": "attention_head_dim",
    "in_channels": "in_channels",
    "out_channels": "out_channels",
    "caption_channels": "caption_channels",
    "cross_attention_dim": "cross_attention_dim",
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
        return cls(**settings_from_metadata(cfg), **shape_fields(cfg))

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any], *, causal_temporal_positioning: bool = False) -> TransformerConfig:
        """From a diffusers `transformer/config.json` (LTXVideoTransformer3DModel).

        diffusers hard-codes the RoPE constants and does not record the causal RoPE fix, so the
        caller passes it (true for 0.9.5+ weights).
        """
        _check_fixed_values(cfg, _DIFFUSERS_FIXED_VALUES, "diffusers transformer config")
        return cls(
            **shape_fields(cfg),
            norm_eps=float(cfg.get("norm_eps", 1e-6)),
            causal_temporal_positioning=causal_temporal_positioning,
        )

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


# ---------------------------------------------------------------------------------------------
# Video VAE


# Channel multiplier of a block when its params do not name one (the official Encoder/Decoder defaults).
_VAE_DEFAULT_MULTIPLIER: dict[str, int] = {
    "res_x_y": 2,
    "compress_all_x_y": 2,
    "compress_all_res": 2,
    "compress_space_res": 2,
    "compress_time_res": 2,
}
VAE_ENCODER_KINDS = (
    "res_x",
    "res_x_y",
    "compress_all",
    "compress_time",
    "compress_space",
    "compress_all_x_y",
    "compress_all_res",
    "compress_space_res",
    "compress_time_res",
)
VAE_DECODER_KINDS = ("res_x", "res_x_y", "compress_all", "compress_time", "compress_space")
VAE_PADDING_MODES = ("zeros", "reflect", "replicate")

# Values of the original VAE config this implementation hard-codes (every released LTX-Video VAE uses them).
_VAE_FIXED_VALUES: dict[str, tuple[Any, ...]] = {
    "_class_name": ("CausalVideoAutoencoder",),
    "dims": (3,),
    "norm_layer": ("pixel_norm",),
    "latent_log_var": ("uniform",),
    "use_quant_conv": (False,),
    "normalize_latent_channels": (False,),
}


@dataclass(frozen=True)
class VAEBlock:
    """One entry of a block list: `res_x` (num_layers res blocks), `res_x_y` (one channel-changing res
    block), `compress_*` (a ×2 down/upsample over time, space or both; `*_res` = space-to-depth with a
    residual; decoder `residual`/`multiplier` = residual depth-to-space that divides the channels)."""

    kind: str
    num_layers: int = 1
    multiplier: int = 1
    residual: bool = False
    inject_noise: bool = False

    @classmethod
    def parse(cls, entry: Any) -> VAEBlock:
        """From an original `[kind, int | {params}]` entry."""
        kind, params = entry
        params = {"num_layers": params} if isinstance(params, int) else dict(params)
        return cls(
            kind=kind,
            num_layers=int(params.get("num_layers", 1)),
            multiplier=int(params.get("multiplier", _VAE_DEFAULT_MULTIPLIER.get(kind, 1))),
            residual=bool(params.get("residual", False)),
            inject_noise=bool(params.get("inject_noise", False)),
        )

    def to_metadata(self) -> list[Any]:
        if self.kind == "res_x":
            return [self.kind, {"num_layers": self.num_layers, "inject_noise": self.inject_noise}]
        return [
            self.kind,
            {"multiplier": self.multiplier, "residual": self.residual, "inject_noise": self.inject_noise},
        ]


def _blocks(*entries: tuple[str, Any]) -> tuple[VAEBlock, ...]:
    return tuple(VAEBlock.parse(e) for e in entries)


@dataclass(frozen=True)
class VAEConfig:
    """Layout of the causal video VAE (CausalVideoAutoencoder).

    Both block lists are in the original order: the encoder runs `encoder_blocks` forward, the decoder
    runs `decoder_blocks` reversed (its first entry is the block nearest the pixels). The defaults are
    the 0.9.0 VAE; see `VAE_090`, `VAE_091`, `VAE_095`.
    """

    encoder_blocks: tuple[VAEBlock, ...] = ()
    decoder_blocks: tuple[VAEBlock, ...] = ()
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    patch_size: int = 4  # 4×4 pixels → 48 channels before the first conv
    encoder_base_channels: int = 128
    decoder_base_channels: int = 128
    timestep_conditioning: bool = False  # 0.9.1+: adaLN of the decoder on the decode timestep
    causal_encoder: bool = True  # every released encoder
    causal_decoder: bool = False  # every released decoder
    # How the convolutions pad H and W, encoder and decoder alike. The original config's key of the same
    # name; when a file does not name it (0.9.0 / 0.9.1 releases, files without a config) it is "zeros",
    # as in the reference implementations: the official Lightricks code reads this one key for both
    # halves with "zeros" as default, and diffusers pads with zeros for every 0.9.x release. (ComfyUI
    # core differs: it pads its decoder with "reflect" when the key is absent.)
    spatial_padding_mode: str = "zeros"
    # None = spatial_padding_mode. No release or reference sets the decoder apart; this only lets a
    # caller reproduce ComfyUI core's decoder ("reflect") for a file without the key.
    decoder_spatial_padding_mode: str | None = None

    def __post_init__(self) -> None:
        for name, kinds in (("encoder_blocks", VAE_ENCODER_KINDS), ("decoder_blocks", VAE_DECODER_KINDS)):
            for block in getattr(self, name):
                if block.kind not in kinds:
                    raise ValueError(f"VAEConfig.{name}: unknown block kind {block.kind!r}; known kinds: {kinds}")
        for mode in (self.spatial_padding_mode, self.decoder_padding):
            if mode not in VAE_PADDING_MODES:
                raise ValueError(f"spatial padding mode {mode!r} is not supported; use one of {VAE_PADDING_MODES}")
        if self.patch_size < 1:
            raise ValueError(f"VAEConfig.patch_size must be positive, got {self.patch_size}")

    @property
    def decoder_padding(self) -> str:
        return self.decoder_spatial_padding_mode or self.spatial_padding_mode

    @classmethod
    def from_metadata(cls, cfg: Mapping[str, Any]) -> VAEConfig:
        """From the `vae` entry of an original checkpoint's embedded `config` JSON. Its
        `spatial_padding_mode` pads encoder and decoder; absent, both pad with zeros (see the field)."""
        _check_fixed_values(cfg, _VAE_FIXED_VALUES, "vae config")
        shared = cfg.get("blocks")
        encoder, decoder = cfg.get("encoder_blocks", shared), cfg.get("decoder_blocks", shared)
        if encoder is None or decoder is None:
            raise ValueError(
                "vae config: needs `blocks` or both `encoder_blocks` and `decoder_blocks`; "
                f"got keys {sorted(cfg)}. Use the config embedded in an official LTX-Video checkpoint."
            )
        return cls(
            encoder_blocks=tuple(VAEBlock.parse(e) for e in encoder),
            decoder_blocks=tuple(VAEBlock.parse(e) for e in decoder),
            in_channels=int(cfg.get("in_channels", 3)),
            out_channels=int(cfg.get("out_channels", 3)),
            latent_channels=int(cfg.get("latent_channels", 128)),
            patch_size=int(cfg.get("patch_size", 4)),
            encoder_base_channels=int(cfg.get("encoder_base_channels", 128)),
            decoder_base_channels=int(cfg.get("decoder_base_channels", 128)),
            timestep_conditioning=bool(cfg.get("timestep_conditioning", False)),
            causal_decoder=bool(cfg.get("causal_decoder", False)),
            spatial_padding_mode=str(cfg.get("spatial_padding_mode", "zeros")),
        )

    def to_metadata(self) -> dict[str, Any]:
        """The original-format config dict (what `from_metadata` reads back; the decoder-only padding
        override has no original key and is dropped)."""
        return {
            "_class_name": "CausalVideoAutoencoder",
            "dims": 3,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "latent_channels": self.latent_channels,
            "encoder_blocks": [b.to_metadata() for b in self.encoder_blocks],
            "decoder_blocks": [b.to_metadata() for b in self.decoder_blocks],
            "encoder_base_channels": self.encoder_base_channels,
            "decoder_base_channels": self.decoder_base_channels,
            "scaling_factor": 1.0,
            "norm_layer": "pixel_norm",
            "patch_size": self.patch_size,
            "latent_log_var": "uniform",
            "use_quant_conv": False,
            "causal_decoder": self.causal_decoder,
            "timestep_conditioning": self.timestep_conditioning,
            "spatial_padding_mode": self.spatial_padding_mode,
        }

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any]) -> VAEConfig:
        """From a diffusers `vae/config.json` (AutoencoderKLLTXVideo)."""
        from ._vae_diffusers import vae_blocks_from_diffusers

        encoder, decoder = vae_blocks_from_diffusers(cfg)
        if cfg.get("patch_size_t", 1) != 1 or not cfg.get("encoder_causal", True):
            raise ValueError(
                f"diffusers vae config: patch_size_t={cfg.get('patch_size_t')}, "
                f"encoder_causal={cfg.get('encoder_causal')} are not LTX-Video values (1, true)"
            )
        block_out = tuple(cfg.get("block_out_channels", (128, 256, 512, 512)))
        decoder_out = tuple(cfg.get("decoder_block_out_channels", (128, 256, 512, 512)))
        factors = tuple(cfg.get("upsample_factor", (1,) * len(decoder_out)))
        return cls(
            encoder_blocks=encoder,
            decoder_blocks=decoder,
            in_channels=int(cfg.get("in_channels", 3)),
            out_channels=int(cfg.get("out_channels", 3)),
            latent_channels=int(cfg.get("latent_channels", 128)),
            patch_size=int(cfg.get("patch_size", 4)),
            encoder_base_channels=int(block_out[0]),
            decoder_base_channels=int(decoder_out[0]) // int(factors[0]),
            timestep_conditioning=bool(cfg.get("timestep_conditioning", False)),
            causal_decoder=bool(cfg.get("decoder_causal", False)),
        )


_ENCODER_090 = _blocks(
    ("res_x", 4),
    ("compress_all", 1),
    ("res_x_y", 1),
    ("res_x", 3),
    ("compress_all", 1),
    ("res_x_y", 1),
    ("res_x", 3),
    ("compress_all", 1),
    ("res_x", 3),
    ("res_x", 4),
)
_UP = ("compress_all", {"residual": True, "multiplier": 2})
_X2 = {"multiplier": 2}

VAE_090 = VAEConfig(encoder_blocks=_ENCODER_090, decoder_blocks=_ENCODER_090)
VAE_091 = VAEConfig(
    encoder_blocks=_ENCODER_090,
    decoder_blocks=_blocks(
        ("res_x", {"num_layers": 5, "inject_noise": True}),
        _UP,
        ("res_x", {"num_layers": 6, "inject_noise": True}),
        _UP,
        ("res_x", {"num_layers": 7, "inject_noise": True}),
        _UP,
        ("res_x", {"num_layers": 8, "inject_noise": False}),
    ),
    timestep_conditioning=True,
)
VAE_095 = VAEConfig(  # also 0.9.6 … 0.9.8
    encoder_blocks=_blocks(
        ("res_x", 4),
        ("compress_space_res", _X2),
        ("res_x", 6),
        ("compress_time_res", _X2),
        ("res_x", 6),
        ("compress_all_res", _X2),
        ("res_x", 2),
        ("compress_all_res", _X2),
        ("res_x", 2),
    ),
    decoder_blocks=_blocks(("res_x", 5), _UP, ("res_x", 5), _UP, ("res_x", 5), _UP, ("res_x", 5)),
    timestep_conditioning=True,
)


def detect_vae_layout(shapes: Mapping[str, tuple[int, ...]]) -> VAEConfig:
    """The released VAE preset matching a state dict's tensor shapes (original keys, `vae.` prefix
    optional), for files without an embedded config. Same rules as ComfyUI's `sd.py`. Nothing names
    a padding mode then, so it is zeros, as in the reference implementations (not ComfyUI's decoder
    "reflect"; see `VAEConfig.spatial_padding_mode`)."""
    shapes = {k.removeprefix("vae."): tuple(v) for k, v in shapes.items()}
    probe = "decoder.up_blocks.0.res_blocks.0.conv1.conv.weight"
    if probe not in shapes:
        raise ValueError(
            f"not an LTX-Video VAE state dict: {probe} is missing (got {len(shapes)} tensors). "
            "Pass a VAE with original (Lightricks/ComfyUI) key names, or convert diffusers keys first."
        )
    width = shapes[probe][0]
    if width == 512:
        return VAE_090
    if width == 1024:
        return VAE_095 if "encoder.down_blocks.1.conv.conv.bias" in shapes else VAE_091
    raise ValueError(f"{probe} has {width} output channels; released LTX-Video VAEs have 512 (0.9.0) or 1024")
