"""load_transformer() on synthetic checkpoints in every safetensors layout, and its errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from ltx_core import LTXVideoTransformer, TransformerConfig
from ltx_core.loading.errors import API_ADVICE, CheckpointError
from ltx_core.loading.keymaps import transformer_to_diffusers
from ltx_core.loading.transformer import load_transformer
from tiny import random_state_dict, tiny_transformer_config

# 32 heads like every release, so split files (no config) can be read by shape alone.
CFG = tiny_transformer_config(heads=32, head_dim=2)


def _weights(cfg: TransformerConfig = CFG) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    return random_state_dict(shapes, seed=3)


def _assert_loaded(model: LTXVideoTransformer, weights: dict[str, torch.Tensor], dtype=torch.float32):
    loaded = model.state_dict()
    assert loaded.keys() == weights.keys()
    for key, value in weights.items():
        assert loaded[key].dtype == dtype
        assert torch.equal(loaded[key], value.to(dtype)), key


def test_original_single_file_with_metadata(tmp_path):
    cfg = tiny_transformer_config(heads=2, head_dim=14, causal=True)  # only the metadata can say this
    weights = _weights(cfg)
    tensors = {f"model.diffusion_model.{k}": v for k, v in weights.items()}
    tensors["vae.decoder.conv_in.conv.weight"] = torch.zeros(4, 4, 3, 3, 3)  # the VAE sharing the file
    path = tmp_path / "checkpoint.safetensors"
    save_file(tensors, path, metadata={"config": json.dumps({"transformer": cfg.to_metadata(), "vae": {}})})
    model, detected = load_transformer(path)
    _assert_loaded(model, weights)
    assert detected.format == "single file"
    assert detected.config == cfg
    assert detected.hints.causal is True and detected.hints.said_by == "its embedded config"
    assert detected.release == "2B, its embedded config: 0.9.5+ positions, not distilled"
    assert detected.stored_dtype == "F32"


def test_split_file_without_metadata_bf16(tmp_path):
    weights = _weights()
    path = tmp_path / "anything.safetensors"
    save_file({k: v.to(torch.float16) for k, v in weights.items()}, path)
    model, detected = load_transformer(path, dtype=torch.bfloat16)
    assert detected.format == "split file" and detected.stored_dtype == "F16"
    assert detected.config == CFG
    _assert_loaded(model, {k: v.to(torch.float16) for k, v in weights.items()}, dtype=torch.bfloat16)


def test_diffusers_named_single_file(tmp_path):
    weights = _weights()
    path = tmp_path / "transformer.safetensors"
    save_file(transformer_to_diffusers(weights), path)
    model, _ = load_transformer(path)
    _assert_loaded(model, weights)


def test_diffusers_folder_with_sharded_weights(tmp_path):
    weights = _weights()
    diffusers_weights = transformer_to_diffusers(weights)
    folder = tmp_path / "LTX-Video" / "transformer"
    folder.mkdir(parents=True)
    config = {
        "_class_name": "LTXVideoTransformer3DModel",
        "num_attention_heads": CFG.num_heads,
        "attention_head_dim": CFG.head_dim,
        "cross_attention_dim": CFG.cross_attention_dim,
        "num_layers": CFG.num_layers,
        "in_channels": CFG.in_channels,
        "out_channels": CFG.out_channels,
        "caption_channels": CFG.caption_channels,
        "qk_norm": "rms_norm_across_heads",
    }
    (folder / "config.json").write_text(json.dumps(config))
    keys = sorted(diffusers_weights)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2]}
    shards["diffusion_pytorch_model-00002-of-00002.safetensors"] = keys[1::2]
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: diffusers_weights[k] for k in shard_keys}, folder / name)
        weight_map.update(dict.fromkeys(shard_keys, name))
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model, detected = load_transformer(folder.parent)
    assert detected.format == "diffusers folder" and detected.config == CFG
    _assert_loaded(model, weights)
    (folder / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing: diffusion_pytorch_model-00002-of-00002"):
        load_transformer(folder.parent)


def test_vae_file_given_as_transformer(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"decoder.conv_in.conv.weight": torch.zeros(2), "encoder.conv_in.conv.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as error:
        load_transformer(path)
    assert str(error.value) == (
        "model.safetensors: contains an LTX-Video VAE; expected an LTX-Video transformer. "
        f"Load it with load_vae(). (file: {path})"
    )
    assert error.value.advice == "vae"
    reworded = error.value.reworded({**API_ADVICE, "vae": "pass it as --vae."})  # one period, capitalised
    assert str(reworded).endswith(f"expected an LTX-Video transformer. Pass it as --vae. (file: {path})")


def test_unknown_architecture(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"down.0.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="contains no known model"):
        load_transformer(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(_weights(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: is truncated"):
        load_transformer(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="too short"):
        load_transformer(path)


def test_missing_tensor_is_named(tmp_path):
    weights = _weights()
    del weights["transformer_blocks.1.attn2.to_v.bias"]
    path = tmp_path / "model.safetensors"
    save_file(weights, path)
    with pytest.raises(CheckpointError, match="missing transformer_blocks.1.attn2.to_v.bias"):
        load_transformer(path)


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_transformer(tmp_path / "nope.safetensors")


def _forward(model: LTXVideoTransformer) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, CFG.in_channels, generator=gen)
    context = torch.randn(2, 4, CFG.caption_channels, generator=gen)
    return model(x, torch.tensor([0.3, 0.9]), context, torch.ones(2, 4), torch.rand(1, 3, 6, generator=gen) * 4)


def _fp8_rounded(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """bf16 weights with every linear weight rounded through fp8 e4m3."""
    return {
        k: v.to(torch.float8_e4m3fn).bfloat16() if v.ndim == 2 and k.endswith(".weight") else v.bfloat16()
        for k, v in weights.items()
    }


def test_fp8_storage_computes_in_bf16(tmp_path):
    weights = _weights()
    path = tmp_path / "model.safetensors"
    save_file(weights, path)
    model, _ = load_transformer(path, dtype=torch.float8_e4m3fn)
    assert model.dtype == torch.bfloat16
    assert model.transformer_blocks[0].ff.net[2].weight.dtype == torch.float8_e4m3fn
    assert model.transformer_blocks[0].scale_shift_table.dtype == torch.bfloat16
    assert model.transformer_blocks[0].attn1.q_norm.weight.dtype == torch.bfloat16
    reference = LTXVideoTransformer.from_state_dict(CFG, _fp8_rounded(weights))
    out = _forward(model)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, _forward(reference))  # upcasting per call is exact


def test_fp8_file_loads_as_fp8_with_bf16_compute(tmp_path):
    weights = _weights()
    stored = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 and k.endswith(".weight") else v for k, v in weights.items()}
    path = tmp_path / "model-fp8.safetensors"
    save_file(stored, path)
    model, detected = load_transformer(path)
    assert detected.stored_dtype == "F8_E4M3"
    assert model.dtype == torch.bfloat16 and model.proj_out.weight.dtype == torch.float8_e4m3fn
    assert torch.equal(_forward(model), _forward(LTXVideoTransformer.from_state_dict(CFG, _fp8_rounded(weights))))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_selectable_weight_dtypes(tmp_path, dtype):
    weights = _weights()
    path = tmp_path / "model.safetensors"
    save_file(weights, path)
    model, _ = load_transformer(path, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert _forward(model).dtype == dtype


@pytest.mark.parametrize("causal", [None, True])
def test_files_without_metadata_get_the_fix_only_when_told(tmp_path, causal):
    """No guessing from the width or a VAE in the same file: the release decides (loading/release.py)."""
    weights = {f"model.diffusion_model.{k}": v for k, v in _weights().items()}
    weights["vae.decoder.conv_in.conv.weight"] = torch.zeros(0)
    weights["vae.decoder.up_blocks.0.res_blocks.0.conv1.conv.weight"] = torch.zeros(1024, 0, 3, 3, 3)
    weights["vae.encoder.down_blocks.1.conv.conv.bias"] = torch.zeros(0)  # a 0.9.5+ VAE beside it
    path = tmp_path / "checkpoint.safetensors"
    save_file(weights, path)
    _, detected = load_transformer(path, causal_temporal_positioning=causal)
    assert detected.config.causal_temporal_positioning is bool(causal)
    assert detected.hints.causal is None and detected.release == "2B, no release in the file"


def _metadata_file(tmp_path, cfg: TransformerConfig, metadata: dict):
    weights = _weights(cfg)
    path = tmp_path / "partial.safetensors"
    save_file({f"model.diffusion_model.{k}": v for k, v in weights.items()}, path, {"config": json.dumps(metadata)})
    return path, weights


def test_tensor_shapes_win_over_partial_metadata(tmp_path, caplog):
    """As in files ComfyUI core loads: a config missing caption_channels (default 4096) and the head
    split, and claiming 28 layers for a 2-block file. Shapes come from the tensors, the settings no
    shape records from the metadata, and the disagreements are logged."""
    metadata = {
        "num_layers": 28,
        "causal_temporal_positioning": True,
        "positional_embedding_theta": 5000.0,
        "positional_embedding_max_pos": [10, 1024, 1024],
        "timestep_scale_multiplier": 500,
    }
    path, weights = _metadata_file(tmp_path, CFG, {"transformer": metadata, "vae": {}})
    with caplog.at_level("WARNING", logger="ltx_core.loading.transformer"):
        model, detected = load_transformer(path)
    _assert_loaded(model, weights)
    settings = {"rope_theta": 5000.0, "rope_max_pos": (10, 1024, 1024), "timestep_scale_multiplier": 500.0}
    assert detected.config == dataclasses.replace(CFG, causal_temporal_positioning=True, **settings)
    (record,) = caplog.records
    assert record.getMessage().startswith("partial.safetensors: its embedded transformer config disagrees")
    for stated in ("num_layers 2 (config: 28)", "caption_channels 24 (config: 4096, by default)"):
        assert stated in record.getMessage()


def test_heads_come_from_metadata_when_it_has_them(tmp_path, caplog):
    cfg = tiny_transformer_config(heads=2, head_dim=14)  # no tensor records the split of 28 into 2 × 14
    path, weights = _metadata_file(tmp_path, cfg, {"transformer": {"num_attention_heads": 2}})
    model, detected = load_transformer(path)
    assert detected.config.num_heads == 2 and detected.config.head_dim == 14
    _assert_loaded(model, weights)
    path, _ = _metadata_file(tmp_path, cfg, {"transformer": {"attention_head_dim": 14, "num_attention_heads": 3}})
    assert load_transformer(path)[1].config.num_heads == 2  # 3 heads cannot split 28: the head width can


def test_unusable_metadata_names_the_file(tmp_path):
    path, _ = _metadata_file(tmp_path, CFG, {"transformer": {"activation_fn": "relu"}})
    with pytest.raises(CheckpointError, match=r"partial\.safetensors: has an embedded config it cannot run .*relu"):
        load_transformer(path)
