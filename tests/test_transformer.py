"""Transformer configs, key tables, meta-device building and loading by assignment."""

from __future__ import annotations

import json

import pytest
import torch

from ltx_core import LTXV_2B, LTXV_13B, CheckpointMismatchError, LTXVideoTransformer, TransformerConfig
from ltx_core.loading.keymaps import transformer_from_diffusers, transformer_to_diffusers
from tiny import random_state_dict, tiny_transformer_config

# The `transformer` entry of an original 0.9.1 checkpoint's embedded config (as published).
ORIGINAL_091 = json.loads(
    """{"_class_name": "Transformer3DModel", "_diffusers_version": "0.25.1", "activation_fn": "gelu-approximate",
    "attention_bias": true, "attention_head_dim": 64, "attention_type": "default", "caption_channels": 4096,
    "cross_attention_dim": 2048, "double_self_attention": false, "dropout": 0.0, "in_channels": 128,
    "norm_elementwise_affine": false, "norm_eps": 1e-06, "norm_num_groups": 32, "num_attention_heads": 32,
    "num_embeds_ada_norm": 1000, "num_layers": 28, "num_vector_embeds": null, "only_cross_attention": false,
    "out_channels": 128, "project_to_2d_pos": true, "upcast_attention": false, "use_linear_projection": false,
    "qk_norm": "rms_norm", "standardization_norm": "rms_norm", "positional_embedding_type": "rope",
    "positional_embedding_theta": 10000.0, "positional_embedding_max_pos": [20, 2048, 2048],
    "timestep_scale_multiplier": 1000}"""
)

DIFFUSERS_13B = {
    "_class_name": "LTXVideoTransformer3DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 128,
    "attention_out_bias": True,
    "caption_channels": 4096,
    "cross_attention_dim": 4096,
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "num_attention_heads": 32,
    "num_layers": 48,
    "out_channels": 128,
    "patch_size": 1,
    "patch_size_t": 1,
    "qk_norm": "rms_norm_across_heads",
}


def test_original_metadata_gives_the_2b_preset():
    assert TransformerConfig.from_metadata(ORIGINAL_091) == LTXV_2B
    causal = TransformerConfig.from_metadata({**ORIGINAL_091, "causal_temporal_positioning": True})
    assert causal.causal_temporal_positioning and causal.num_layers == 28


def test_diffusers_config_gives_the_13b_preset():
    assert TransformerConfig.from_diffusers(DIFFUSERS_13B, causal_temporal_positioning=True) == LTXV_13B


def test_metadata_round_trip():
    for cfg in (LTXV_2B, LTXV_13B, tiny_transformer_config(heads=3, head_dim=14, causal=True)):
        assert TransformerConfig.from_metadata(cfg.to_metadata()) == cfg


@pytest.mark.parametrize(
    ("source", "key", "value"),
    [
        ("original", "qk_norm", "layer_norm"),
        ("original", "adaptive_norm", "single_scale"),
        ("original", "positional_embedding_type", "absolute"),
        ("diffusers", "patch_size", 2),
        ("diffusers", "qk_norm", "rms_norm"),
    ],
)
def test_unsupported_config_values_are_named(source, key, value):
    with pytest.raises(ValueError, match=f"{key}={value!r}"):
        if source == "original":
            TransformerConfig.from_metadata({**ORIGINAL_091, key: value})
        else:
            TransformerConfig.from_diffusers({**DIFFUSERS_13B, key: value})


def test_invalid_shapes_are_rejected():
    with pytest.raises(ValueError, match="rope_max_pos"):
        TransformerConfig(rope_max_pos=(20, 2048))
    with pytest.raises(ValueError, match="cross_attention_dim"):
        TransformerConfig(cross_attention_dim=4096)


@pytest.mark.parametrize(("cfg", "params"), [(LTXV_2B, 1_923_385_472), (LTXV_13B, 13_042_569_344)])
def test_full_size_parameter_counts_on_meta(cfg, params):
    # Counts of the released checkpoints; built on `meta`, nothing is allocated.
    with torch.device("meta"):
        model = LTXVideoTransformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == params
    assert all(p.is_meta for p in model.parameters())


def _original_state_dict(cfg: TransformerConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    return random_state_dict(shapes, seed)


def test_diffusers_key_table_round_trips():
    sd = _original_state_dict(tiny_transformer_config())
    diffusers_keys = transformer_to_diffusers(sd)
    assert "proj_in.weight" in diffusers_keys and "time_embed.linear.weight" in diffusers_keys
    assert "transformer_blocks.1.attn2.norm_k.weight" in diffusers_keys
    assert transformer_from_diffusers(diffusers_keys).keys() == sd.keys()
    prefixed = {f"model.diffusion_model.{k}": v for k, v in sd.items()}
    assert transformer_to_diffusers(prefixed).keys() == diffusers_keys.keys()


def test_loading_adopts_tensors_without_copying():
    cfg = tiny_transformer_config()
    sd = _original_state_dict(cfg)
    model = LTXVideoTransformer.from_state_dict(cfg, sd)
    assert model.proj_out.weight.data_ptr() == sd["proj_out.weight"].data_ptr()
    assert not any(p.requires_grad for p in model.parameters())


def test_loading_casts_and_consumes():
    cfg = tiny_transformer_config()
    sd = _original_state_dict(cfg)
    reference = sd["patchify_proj.weight"].clone()
    from ltx_core.loading import materialize

    with torch.device("meta"):
        model = LTXVideoTransformer(cfg)
    materialize(model, sd, dtype=torch.bfloat16, consume=True)
    assert not sd  # every source tensor was released as soon as it was converted
    assert model.patchify_proj.weight.dtype == torch.bfloat16
    assert torch.equal(model.patchify_proj.weight, reference.bfloat16())


def test_mismatched_weights_name_the_keys():
    cfg = tiny_transformer_config()
    sd = _original_state_dict(cfg)
    del sd["transformer_blocks.1.ff.net.2.bias"]
    sd["transformer_blocks.1.attn1.to_q.weight"] = torch.zeros(3, 3)
    sd["vae.decoder.conv_in.conv.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as error:
        LTXVideoTransformer.from_state_dict(cfg, sd)
    message = str(error.value)
    assert "missing transformer_blocks.1.ff.net.2.bias" in message
    assert "unexpected vae.decoder.conv_in.conv.weight" in message
    assert "transformer_blocks.1.attn1.to_q.weight (3, 3) (expected (32, 32))" in message


def test_forward_rejects_mismatched_shapes():
    cfg = tiny_transformer_config()
    model = LTXVideoTransformer.from_state_dict(cfg, _original_state_dict(cfg))
    x = torch.randn(2, 6, cfg.in_channels)
    ctx = torch.randn(2, 3, cfg.caption_channels)
    positions = torch.zeros(1, 3, 6)
    with pytest.raises(ValueError, match=r"sigma must have shape \(2,\) or \(2, 6\)"):
        model(x, torch.ones(3), ctx, None, positions)
    with pytest.raises(ValueError, match=r"positions must have shape \(B, 3, 6\)"):
        model(x, torch.ones(2), ctx, None, torch.zeros(1, 3, 5))
    assert model(x, torch.ones(2), ctx, None, positions).shape == (2, 6, cfg.out_channels)
