"""fp8 matrix products: per-channel e4m3 weights, per-row activations. The CPU runs the expanded
weights; the product itself (torch._scaled_mm) needs an fp8 GPU and is checked by benchmarks/compare.py."""

from __future__ import annotations

import pytest
import torch

from ltx_core import LTXVideoTransformer
from ltx_core.model import fp8, ops
from ltx_core.model.fp8 import E4M3_MAX, Fp8Linear, quantize_linears, quantize_rows
from tiny import random_state_dict, tiny_transformer_config


def test_fp8_linear_keeps_each_channel_within_e4m3_rounding():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(32, 64, generator=gen) * torch.logspace(-3, 0, 32)[:, None]  # very different rows
    bias = torch.randn(32, generator=gen)
    layer = Fp8Linear(weight, bias)
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.weight_scale.shape == (32,)
    assert layer.weight.float().abs().amax(dim=1).allclose(torch.full((32,), E4M3_MAX))  # each row uses the range
    expanded = layer.weight.float() * layer.weight_scale[:, None]
    assert ((expanded - weight).abs() <= weight.abs().amax(dim=1, keepdim=True) / 16).all()  # 3 mantissa bits
    x = torch.randn(5, 7, 64, generator=gen)
    assert torch.equal(layer(x), torch.nn.functional.linear(x, expanded, bias))
    # a single per-tensor scale would flush the small rows to zero; per channel keeps them
    assert (expanded[:4].abs().sum(dim=1) > 0).all()


def test_quantize_rows_round_trips():
    x = (
        torch.randn(6, 48, generator=torch.Generator().manual_seed(1))
        * torch.tensor([1e-3, 1, 10, 100, 0.1, 5])[:, None]
    )
    values, scale = quantize_rows(x)
    assert values.dtype == torch.float8_e4m3fn and scale.shape == (6, 1)
    assert ((values.float() * scale - x).abs() <= x.abs().amax(dim=1, keepdim=True) / 16).all()


def _tiny_model_and_inputs() -> tuple[LTXVideoTransformer, tuple[torch.Tensor, ...]]:
    cfg = tiny_transformer_config(heads=2, head_dim=16, layers=2)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    model = LTXVideoTransformer.from_state_dict(cfg, random_state_dict(shapes, seed=2))
    gen = torch.Generator().manual_seed(3)
    args = (
        torch.randn(2, 12, cfg.in_channels, generator=gen),
        torch.tensor([0.4, 0.9]),
        torch.randn(2, 5, cfg.caption_channels, generator=gen),
        torch.ones(2, 5),
        torch.rand(1, 3, 12, generator=gen) * 8,
    )
    return model, args


def test_quantized_transformer_stays_close():
    model, args = _tiny_model_and_inputs()
    expected = model(*args)
    assert quantize_linears(model) == 2 * 10  # per block: q, k, v, out of both attentions, two FF layers
    actual = model(*args)
    relative = ((actual - expected).abs().mean() / expected.abs().mean()).item()
    assert 1e-4 < relative < 0.1  # fp8 rounding shows, and stays small (measured 5 % on this tiny model)
    with pytest.raises(ValueError, match="multiples of 16"):
        quantize_linears(torch.nn.Sequential(torch.nn.Linear(8, 8)), under="")


def test_fp8_path_shares_quantized_inputs_and_fuses_gelu(monkeypatch):
    """On the fp8 path (forced here on the CPU, whose torch._scaled_mm takes row-wise scales) q, k and v
    are computed from one quantization of their input, and GELU goes into the quantization of the
    feed-forward's hidden activations; neither changes the result."""
    model, args = _tiny_model_and_inputs()
    quantize_linears(model)
    slow = model(*args)  # the expanded weights
    monkeypatch.setattr(fp8, "fp8_matmul_supported", lambda device: True)
    monkeypatch.setattr(ops, "fusion_enabled", lambda device_type: True)
    inputs = []
    from_prepared = Fp8Linear.from_prepared
    monkeypatch.setattr(Fp8Linear, "from_prepared", lambda self, p, x: inputs.append(p[0]) or from_prepared(self, p, x))
    shared = model(*args)
    # per block, in order: q, k, v (one input), to_out, cross q, cross k, v (one input), to_out, both FF layers
    assert len(inputs) == 2 * 10
    for block in (inputs[:10], inputs[10:]):
        assert len({id(t) for t in block[0:3]}) == 1 and len({id(t) for t in block[5:7]}) == 1
        assert len({id(t) for t in block}) == 7

    monkeypatch.setattr(ops.FusedOps, "project", ops.Ops.project)  # each layer quantizes its input itself
    monkeypatch.setattr(ops.FusedOps, "feed_forward", ops.Ops.feed_forward)  # GELU apart from the quantization
    separate = model(*args)
    assert torch.equal(shared, separate)
    relative = ((shared - slow).abs().mean() / slow.abs().mean()).item()
    assert 1e-4 < relative < 0.1  # activations now quantized too, and still close


def test_gguf_layers_are_requantized_too():
    """fp8_matmul on a GGUF model: its QuantizedLinear layers are expanded from their GGML blocks and
    requantized (the loader node used to convert none of them, silently)."""
    from ltx_core.loading import QuantizedLinear
    from ltx_core.loading.dequant import GGMLType
    from ltx_core.loading.gguf import QuantizedTensor

    model, args = _tiny_model_and_inputs()
    expected = model(*args)
    for name, module in list(model.named_modules()):
        if name.startswith("transformer_blocks.") and isinstance(module, torch.nn.Linear):
            blocks = module.weight.detach().reshape(-1, 32)  # Q8_0: per 32 values an fp16 scale and 32 int8
            scale = (blocks.abs().amax(dim=1, keepdim=True) / 127).half()
            q = torch.round(blocks / scale.float()).clamp(-127, 127).to(torch.int8)
            raw = torch.cat([scale.view(torch.uint8), q.view(torch.uint8)], dim=1).reshape(-1)
            parent, _, child = name.rpartition(".")
            linear = QuantizedLinear(QuantizedTensor(raw, GGMLType.Q8_0, module.weight.shape), module.bias)
            model.get_submodule(parent).register_module(child, linear)
    assert quantize_linears(model) == 2 * 10
    assert not any(isinstance(m, QuantizedLinear) for m in model.modules())
    relative = ((model(*args) - expected).abs().mean() / expected.abs().mean()).item()
    assert relative < 0.1  # Q8_0 then fp8 rounding: measured 5 %, as fp8 alone
    with pytest.raises(ValueError, match="no linear layers under 'transformer_blocks.' to convert"):
        quantize_linears(model)  # all fp8 already
