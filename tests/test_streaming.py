"""Block streaming (low-VRAM mode): the same outputs, with each block's weights visiting device slots.

On the CPU the "device" is the CPU too, so these check the bookkeeping (which tensors point where,
and when) and the results; the copy stream and its events run on CUDA only (benchmarks/memory_modes.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers

from ltx_core import LTXVideoTransformer
from ltx_core.loading import QuantizedLinear, QuantizedTensor
from ltx_core.loading.dequant import GGMLType
from ltx_core.memory import check_memory_mode, placed, streamer_for, vae_budget
from ltx_core.streaming import BlockStreamer
from ltx_core.text.encoder import T5TextEncoder
from tiny import random_state_dict, tiny_t5_config, tiny_transformer_config


def _transformer(layers: int = 3, dtype: torch.dtype | None = None) -> LTXVideoTransformer:
    cfg = tiny_transformer_config(layers=layers)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    return LTXVideoTransformer.from_state_dict(cfg, random_state_dict(shapes, seed=5), dtype=dtype)


def _inputs(cfg, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, cfg.in_channels, generator=gen, dtype=dtype)
    context = torch.randn(2, 5, cfg.caption_channels, generator=gen, dtype=dtype)
    positions = torch.rand(1, 3, 12, generator=gen) * 8
    return x, torch.tensor([0.3, 0.8]), context, torch.ones(2, 5), positions


def _pointers(model: torch.nn.Module) -> list[int]:
    return [t.data_ptr() for t in (*model.parameters(), *model.buffers())]


@pytest.mark.parametrize("prefetch", [1, 2])
def test_streamed_transformer_gives_the_same_output(prefetch):
    model = _transformer(layers=3)  # odd: the slots wrap around unevenly between passes
    inputs = _inputs(model.config)
    expected = model(*inputs)
    streamer = BlockStreamer(model, model.transformer_blocks, prefetch=prefetch)
    assert streamer.streamed_bytes >= 3 * streamer.slot_bytes * 0.99
    host = _pointers(model)

    seen: list[tuple[int, bool]] = []  # (block, weight lives in a device slot) as each block runs

    def probe(block, _args):
        slots = [(s.data_ptr(), s.data_ptr() + s.numel()) for s in streamer.device_slots]
        ptr = block.attn1.to_q.weight.data_ptr()
        seen.append((list(model.transformer_blocks).index(block), any(lo <= ptr < hi for lo, hi in slots)))

    with streamer.active("cpu"):
        # the hook runs after the streamer's own pre-hook, so it sees the block as it computes
        handles = [b.register_forward_pre_hook(probe) for b in model.transformer_blocks]
        for _ in range(2):  # two passes: the prefetch wraps to block 0
            assert torch.equal(model(*inputs), expected)
        for h in handles:
            h.remove()
    assert seen == [(i, True) for i in range(3)] * 2
    assert len(streamer.device_slots) == 0
    assert _pointers(model) == host  # every tensor points back into the pinned host buffers
    assert torch.equal(model(*inputs), expected)


def test_streaming_keeps_fp8_and_quantized_weights():
    model = _transformer(layers=2, dtype=torch.float8_e4m3fn)
    # one GGUF-style quantized linear among the fp8 ones: its raw bytes are a buffer
    block = model.transformer_blocks[1]
    raw = torch.randint(0, 256, (block.ff.net[2].weight.numel() // 32 * 34,), dtype=torch.uint8)
    raw.view(-1, 34)[:, :2] = torch.tensor([0x00, 0x20], dtype=torch.uint8)  # fp16 scale 2**-7
    weight = QuantizedTensor(raw, GGMLType.Q8_0, block.ff.net[2].weight.shape)
    block.ff.net[2] = QuantizedLinear(weight, block.ff.net[2].bias)
    inputs = _inputs(model.config, torch.bfloat16)
    expected = model(*inputs)
    with BlockStreamer(model, model.transformer_blocks).active("cpu"):
        assert torch.equal(model(*inputs), expected)
    assert model.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert block.ff.net[2].weight_raw.dtype == torch.uint8


def test_streamed_t5_gives_the_same_hidden_states():
    torch.manual_seed(0)
    encoder = T5TextEncoder(transformers.T5EncoderModel(tiny_t5_config()), tokenizer=_FakeTokenizer()).eval()
    ids, mask = torch.randint(0, 100, (2, 7)), torch.ones(2, 7, dtype=torch.int64)
    mask[1, 4:] = 0
    with torch.no_grad():
        expected = encoder(ids, mask)
        with BlockStreamer(encoder, encoder.streamed_blocks).active("cpu"):
            assert torch.equal(encoder(ids, mask), expected)
        assert torch.equal(encoder(ids, mask), expected)


@dataclasses.dataclass
class _FakeTokenizer:
    vocab_size: int = 100
    source: str = "none"


def test_memory_modes_and_placement():
    assert check_memory_mode("low_vram") == "low_vram"
    with pytest.raises(ValueError, match="'tiny' is not one of default, low_vram"):
        check_memory_mode("tiny")
    with pytest.raises(ValueError, match="prefetch must be at least 1"):
        BlockStreamer(torch.nn.Linear(2, 2), [], prefetch=0)
    assert vae_budget("default") is None and 0 < vae_budget("low_vram") <= 4 * 2**30
    model = _transformer(layers=2)
    inputs = _inputs(model.config)
    expected = model(*inputs)
    with placed(model, "cpu", "low_vram"):  # nothing to stream to on the CPU: used in place
        assert torch.equal(model(*inputs), expected)
    assert streamer_for(model) is streamer_for(model)  # pinned once per model
