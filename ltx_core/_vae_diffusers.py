"""diffusers' AutoencoderKLLTXVideo config.json → original VAE block lists (used by VAEConfig.from_diffusers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import VAEBlock

# diffusers `downsample_type` of an LTXVideo095DownBlock3D → original block kind
_DOWNSAMPLE_KINDS = {
    "conv": "compress_all",
    "spatial": "compress_space_res",
    "temporal": "compress_time_res",
    "spatiotemporal": "compress_all_res",
}
_DIFFUSERS_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": (4, 3, 3, 3, 4),
    "spatio_temporal_scaling": (True, True, True, False),
    "down_block_types": ("LTXVideoDownBlock3D",) * 4,
    "downsample_type": ("conv",) * 4,
    "decoder_block_out_channels": (128, 256, 512, 512),
    "decoder_layers_per_block": (4, 3, 3, 3, 4),
    "decoder_spatio_temporal_scaling": (True, True, True, False),
    "decoder_inject_noise": (False,) * 5,
    "upsample_residual": (False,) * 4,
    "upsample_factor": (1,) * 4,
}


def _get(cfg: Mapping[str, Any], key: str) -> tuple[Any, ...]:
    return tuple(cfg.get(key) or _DIFFUSERS_DEFAULTS[key])


def _encoder_blocks(cfg: Mapping[str, Any]) -> list[VAEBlock]:
    out_channels, layers = _get(cfg, "block_out_channels"), _get(cfg, "layers_per_block")
    scaling, types = _get(cfg, "spatio_temporal_scaling"), _get(cfg, "down_block_types")
    downsample = _get(cfg, "downsample_type")
    is_095 = types[-1] == "LTXVideo095DownBlock3D"
    stages = len(out_channels) - (1 if is_095 else 0)
    blocks, channels = [], out_channels[0]
    for i in range(stages):
        target = out_channels[i + 1] if (is_095 or i + 1 < stages) else out_channels[i]
        blocks.append(VAEBlock("res_x", num_layers=layers[i]))
        if scaling[i]:
            kind = _DOWNSAMPLE_KINDS[downsample[i]] if types[i] == "LTXVideo095DownBlock3D" else "compress_all"
            multiplier = target // channels if kind.endswith("_res") else 1
            blocks.append(VAEBlock(kind, multiplier=multiplier))
            channels *= multiplier
        if channels != target:  # LTXVideoDownBlock3D.conv_out
            blocks.append(VAEBlock("res_x_y", multiplier=target // channels))
            channels = target
    blocks.append(VAEBlock("res_x", num_layers=layers[-1]))  # mid_block
    return blocks


def _decoder_blocks(cfg: Mapping[str, Any]) -> list[VAEBlock]:
    """In the original order, i.e. the reverse of the decoder's forward order."""
    out_channels = _get(cfg, "decoder_block_out_channels")[::-1]
    layers, scaling = _get(cfg, "decoder_layers_per_block")[::-1], _get(cfg, "decoder_spatio_temporal_scaling")[::-1]
    inject, residual = _get(cfg, "decoder_inject_noise")[::-1], _get(cfg, "upsample_residual")[::-1]
    factor = _get(cfg, "upsample_factor")[::-1]
    forward = [VAEBlock("res_x", num_layers=layers[0], inject_noise=inject[0])]  # mid_block
    channels = out_channels[0]
    for i in range(len(out_channels)):
        block_in, block_out = channels // factor[i], out_channels[i] // factor[i]
        if block_in != block_out:  # LTXVideoUpBlock3d.conv_in
            forward.append(VAEBlock("res_x_y", multiplier=block_in // block_out, inject_noise=inject[i + 1]))
        if scaling[i]:
            forward.append(VAEBlock("compress_all", multiplier=factor[i], residual=residual[i]))
        forward.append(VAEBlock("res_x", num_layers=layers[i + 1], inject_noise=inject[i + 1]))
        channels = block_out
    return forward[::-1]


def vae_blocks_from_diffusers(cfg: Mapping[str, Any]) -> tuple[tuple[VAEBlock, ...], tuple[VAEBlock, ...]]:
    """(encoder_blocks, decoder_blocks) in the original format."""
    return tuple(_encoder_blocks(cfg)), tuple(_decoder_blocks(cfg))
