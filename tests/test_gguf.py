"""GGUF reading, torch dequantization (bit-exact against gguf-py) and quantized linears."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ltx_core import LTXVideoTransformer
from ltx_core.loading import QuantizedLinear, QuantizedTensor, read_gguf, swap_linears
from ltx_core.loading.dequant import KERNELS, GGMLType, dequantize
from ltx_core.loading.transformer import load_transformer
from tiny import random_state_dict, tiny_transformer_config

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

# Types gguf-py 0.19 can quantize itself; for the K-quants it only dequantizes.
QUANTIZABLE = ["F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"]
PLAIN_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
# Byte offsets of the fp16 scales (d, m / dmin) inside each block; everything else may be random.
FP16_SCALES = {
    "Q8_0": (0,),
    "Q5_1": (0, 2),
    "Q5_0": (0,),
    "Q4_1": (0, 2),
    "Q4_0": (0,),
    "Q6_K": (208,),
    "Q5_K": (0, 2),
    "Q4_K": (0, 2),
    "Q3_K": (108,),
    "Q2_K": (80, 82),
}


def _random_blocks(name: str, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Valid raw data for a (rows, cols) tensor: random bytes with sane fp16 scales → (rows, bytes per row)."""
    rng = np.random.default_rng(seed)
    block_size, type_size, _ = KERNELS[GGMLType[name]]
    blocks = rng.integers(0, 256, (rows * cols // block_size, type_size), dtype=np.uint8)
    for offset in FP16_SCALES[name]:
        scale = (0.01 * rng.standard_normal((len(blocks), 1))).astype(np.float16)
        blocks[:, offset : offset + 2] = scale.view(np.uint8)
    return blocks.reshape(rows, -1)


def _quantized(name: str, values: np.ndarray) -> np.ndarray:
    """gguf-py's own quantization of `values`, as raw bytes (rows, bytes per row)."""
    return gguf.quants.quantize(values, Q[name]).view(np.uint8)


def _reference(raw: np.ndarray, name: str) -> torch.Tensor:
    """gguf-py's dequantization of raw bytes (rows, bytes per row) → float32 (rows, cols)."""
    if name in ("F32", "F16"):  # gguf-py takes these as float arrays
        raw = raw.view(np.float32 if name == "F32" else np.float16)
    return torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(raw, Q[name]), dtype=np.float32))


def test_type_ids_match_gguf():
    for qtype, (block_size, type_size, _) in KERNELS.items():
        assert int(Q[qtype.name]) == int(qtype)
        assert gguf.GGML_QUANT_SIZES[Q[qtype.name]] == (block_size, type_size)


@pytest.mark.parametrize("name", QUANTIZABLE)
def test_dequant_of_gguf_quantized_data_is_exact(name):
    values = np.random.default_rng(1).standard_normal((6, 512)).astype(np.float32)
    raw = _quantized(name, values)
    ours = dequantize(torch.from_numpy(raw), GGMLType[name], (6, 512))
    assert ours.dtype == torch.float32
    assert torch.equal(ours, _reference(raw, name))


@pytest.mark.parametrize("name", list(FP16_SCALES))
def test_dequant_of_random_blocks_is_exact(name):
    raw = _random_blocks(name, 4, 512)
    reference = _reference(raw, name)
    ours = dequantize(torch.from_numpy(raw), GGMLType[name], (4, 512))
    assert torch.equal(ours, reference), f"max abs diff {(ours - reference).abs().max()}"
    as_bf16 = dequantize(torch.from_numpy(raw), GGMLType[name], (2, 1024), torch.bfloat16)
    assert torch.equal(as_bf16, reference.reshape(2, 1024).bfloat16())


def test_unsupported_type_is_named():
    with pytest.raises(ValueError, match=r"type id 20 is not supported; supported types: F32, .*Q2_K"):
        dequantize(torch.zeros(18, dtype=torch.uint8), 20, (32,))
    with pytest.raises(ValueError, match=r"Q4_0 data for shape \(64,\) must be 36 uint8 bytes, got 18"):
        dequantize(torch.zeros(18, dtype=torch.uint8), GGMLType.Q4_0, (64,))
    with pytest.raises(ValueError, match=r"multiple of 256, got shape \(4, 32\)"):
        dequantize(torch.zeros(18, dtype=torch.uint8), GGMLType.Q4_K, (4, 32))


def _write_gguf(path, tensors: dict[str, tuple[str, np.ndarray]], architecture: str = "ltxv") -> None:
    """tensors: name → (type name, float array for F32/F16 or raw bytes (rows, bytes per row))."""
    writer = gguf.GGUFWriter(path, architecture)
    for name, (type_name, data) in tensors.items():
        raw_dtype = None if type_name in ("F32", "F16") else Q[type_name]
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _mixed_file(path) -> dict[str, tuple[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    tensors = {
        "patchify_proj.weight": ("Q8_0", _quantized("Q8_0", rng.standard_normal((64, 96)).astype(np.float32))),
        "patchify_proj.bias": ("F32", rng.standard_normal(64).astype(np.float32)),
        "scale_shift_table": ("F32", rng.standard_normal((2, 64)).astype(np.float32)),
        "transformer_blocks.0.attn1.to_q.weight": ("Q4_K", _random_blocks("Q4_K", 8, 256)),
        "transformer_blocks.0.ff.net.2.weight": ("Q6_K", _random_blocks("Q6_K", 4, 512)),
        "proj_out.weight": ("BF16", _quantized("BF16", rng.standard_normal((16, 64)).astype(np.float32))),
        "caption_projection.linear_1.weight": ("F16", rng.standard_normal((64, 24)).astype(np.float16)),
    }
    _write_gguf(path, tensors)
    return tensors


def test_read_gguf_round_trip(tmp_path):
    path = tmp_path / "tiny-ltxv-Q8_0.gguf"
    written = _mixed_file(path)
    tensors, metadata = read_gguf(path)
    assert metadata["general.architecture"] == "ltxv"
    assert tensors.keys() == written.keys()
    for name, (type_name, data) in written.items():
        reference = _reference(data, type_name)
        tensor = tensors[name]
        if type_name in PLAIN_DTYPES:  # plain tensors in their own dtype
            assert isinstance(tensor, torch.Tensor) and tensor.dtype == PLAIN_DTYPES[type_name]
        else:
            assert isinstance(tensor, QuantizedTensor) and tensor.qtype == GGMLType[type_name]
            assert tensor.raw.dtype == torch.uint8 and tensor.raw.numel() == data.size
            tensor = tensor.dequantize()
        assert tensor.shape == reference.shape, name
        assert torch.equal(tensor.float(), reference), name


def test_read_gguf_rejects_other_architectures(tmp_path):
    path = tmp_path / "t5.gguf"
    _write_gguf(path, {"x": ("F32", np.zeros(4, np.float32))}, architecture="t5encoder")
    with pytest.raises(ValueError, match=r"t5\.gguf: general\.architecture is 't5encoder'; expected 'ltxv'"):
        read_gguf(path)
    tensors, _ = read_gguf(path, architecture=None)
    assert tensors["x"].shape == (4,)


def test_read_gguf_names_truncated_files(tmp_path):
    path = tmp_path / "whole.gguf"
    _mixed_file(path)
    data = path.read_bytes()
    for size in (0, 20, len(data) // 2, len(data) - 8):
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError, match=r"cut\.gguf: .*truncated or corrupted"):
            read_gguf(cut)


def test_read_gguf_names_unsupported_tensor_types(tmp_path):
    path = tmp_path / "iq.gguf"
    raw = np.random.default_rng(0).integers(0, 256, (2, 18), dtype=np.uint8)  # IQ4_NL: 32 values in 18 bytes
    _write_gguf(path, {"proj_out.weight": ("IQ4_NL", raw)})
    with pytest.raises(ValueError, match=r"iq\.gguf: proj_out\.weight: GGML tensor type IQ4_NL \(id 20\)"):
        read_gguf(path)


def test_quantized_linear_matches_reference():
    raw = _random_blocks("Q5_K", 8, 256)
    weight = QuantizedTensor(torch.from_numpy(raw).reshape(-1), GGMLType.Q5_K, torch.Size((8, 256)))
    bias = torch.nn.Parameter(torch.randn(8))
    layer = QuantizedLinear(weight, bias)
    x = torch.randn(3, 5, 256)
    assert torch.equal(layer(x), F.linear(x, _reference(raw, "Q5_K"), bias))
    assert layer(x.bfloat16()).dtype == torch.bfloat16
    assert layer.state_dict().keys() == {"bias"}
    layer.to(torch.float16)  # dtype casts leave the raw bytes alone …
    assert layer.weight_raw.dtype == torch.uint8 and layer.bias.dtype == torch.float16
    layer.to("meta")  # … device moves take them along
    assert layer.weight_raw.is_meta and layer.weight.device.type == "meta"


def _quantizable_config():
    # linear in-features must fill whole 32-value blocks: hidden 64, latent and caption channels 32;
    # 32 heads like every release, since GGUF files carry no config and heads are inferred
    return dataclasses.replace(
        tiny_transformer_config(heads=32, head_dim=2), in_channels=32, out_channels=32, caption_channels=32
    )


def test_swap_linears_checks_shapes():
    with torch.device("meta"):
        model = LTXVideoTransformer(_quantizable_config())
    raw = torch.from_numpy(_random_blocks("Q8_0", 16, 32)).reshape(-1)
    wrong = {"proj_out.weight": QuantizedTensor(raw, GGMLType.Q8_0, torch.Size((16, 32)))}
    with pytest.raises(ValueError, match=r"proj_out\.weight has shape \(16, 32\), expected \(32, 64\)"):
        swap_linears(model, wrong)


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_1"])
def test_quantized_transformer_matches_dequantized_float_model(tmp_path, type_name):
    cfg = _quantizable_config()
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    float_sd = random_state_dict(shapes, seed=3)
    # city96's rule: scale_shift_table and 1-D tensors stay F32, the rest is quantized
    stays_f32 = {k for k, v in float_sd.items() if v.ndim == 1 or "scale_shift_table" in k}
    written = {
        k: ("F32", v.numpy()) if k in stays_f32 else (type_name, _quantized(type_name, v.numpy()))
        for k, v in float_sd.items()
    }
    _write_gguf(tmp_path / "tiny.gguf", written)
    reference_sd = {k: _reference(data, name).reshape(float_sd[k].shape) for k, (name, data) in written.items()}
    reference = LTXVideoTransformer.from_state_dict(cfg, reference_sd)

    model, detected = load_transformer(tmp_path / "tiny.gguf")
    assert detected.format == "gguf" and detected.stored_dtype == type_name and detected.config == cfg
    swapped = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(swapped) == sum(1 for name, _ in written.values() if name == type_name)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, cfg.in_channels, generator=gen)
    context = torch.randn(2, 4, cfg.caption_channels, generator=gen)
    positions = torch.rand(1, 3, 6, generator=gen) * 4
    sigma = torch.tensor([0.3, 0.9])
    expected = reference(x, sigma, context, torch.ones(2, 4), positions)
    actual = model(x, sigma, context, torch.ones(2, 4), positions)
    assert (actual - expected).abs().max() <= 1e-5
