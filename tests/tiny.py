"""Tiny random-weight models shared by the tests."""

from __future__ import annotations

import torch

from ltx_core import TransformerConfig


def tiny_transformer_config(
    heads: int = 2, head_dim: int = 16, layers: int = 2, causal: bool = False
) -> TransformerConfig:
    dim = heads * head_dim
    return TransformerConfig(
        num_layers=layers,
        num_heads=heads,
        head_dim=head_dim,
        in_channels=16,
        out_channels=16,
        caption_channels=24,
        cross_attention_dim=dim,
        causal_temporal_positioning=causal,
    )


def random_state_dict(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    """Random weights of a sensible scale for every tensor: norm weights near 2 (sharp attention, so
    positions matter), linears ~ 1/sqrt(fan_in), biases and modulation tables small."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        module = key.rsplit(".", 2)[-2] if key.count(".") else ""
        if "norm" in module and key.endswith(".weight"):
            out[key] = 2 + 0.4 * noise
        elif key.endswith("scale_shift_table"):
            out[key] = 0.5 * noise
        elif len(shape) == 2:
            out[key] = noise / shape[1] ** 0.5
        else:
            out[key] = 0.1 * noise
    return out
