"""Block streaming (low-VRAM mode): the same outputs, with each block's weights visiting device slots.

On the CPU the "device" is the CPU too, so these check the bookkeeping (which tensors point where,
and when) and the results; the copy stream and its events run on CUDA only (benchmarks/memory_modes.py).
"""

from __future__ import annotations

import dataclasses
import weakref

import pytest
import torch
import transformers

from ltx_core import LTXVideoTransformer
from ltx_core.loading import QuantizedLinear, QuantizedTensor
from ltx_core.loading.dequant import GGMLType
from ltx_core.memory import (
    check_memory_mode,
    module_bytes,
    placed,
    release,
    stream_on_cpu,
    streamer_for,
    streaming_report,
    streams,
    to_host,
    transformer_activation_bytes,
    vae_budget,
)
from ltx_core.streaming import BlockStreamer, device_weight_bytes, live_streamers
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


@pytest.fixture
def cpu_streaming():
    """low_vram streams to the CPU too, as it does to a GPU (the bookkeeping is the same)."""
    stream_on_cpu(True)
    yield
    stream_on_cpu(False)


def test_a_dropped_model_takes_its_streamer_and_host_copies_along(cpu_streaming):
    """The registry keyed by the model must not keep it (nor its packed host copies) alive: every
    model ever streamed used to stay in memory for the life of the process."""
    before = len(live_streamers())
    model = _transformer(layers=2)
    inputs = _inputs(model.config)
    with placed(model, "cpu", "low_vram"):
        model(*inputs)
    streamer = weakref.ref(streamer_for(model))
    assert len(live_streamers()) == before + 1
    assert streaming_report()["host_bytes"] >= streamer().streamed_bytes > 0
    dropped = weakref.ref(model)
    del model  # no gc.collect(): plain reference counting must free both
    assert dropped() is None and streamer() is None
    assert len(live_streamers()) == before


def test_release_drops_the_streamer_and_the_model_keeps_working(cpu_streaming):
    model = _transformer(layers=2)
    inputs = _inputs(model.config)
    expected = model(*inputs)
    assert streams(model, "cpu", "low_vram") and not streams(model, "cpu", "default")
    with placed(model, "cpu", "low_vram", keep_pinned=True):
        assert torch.equal(model(*inputs), expected)
    streamer = weakref.ref(streamer_for(model))
    release(model)
    assert streamer() is None  # nothing but the registry held it
    assert torch.equal(model(*inputs), expected)  # the weights stay where they were packed
    with placed(model, "cpu", "low_vram"):  # streamed again: packed anew
        assert torch.equal(model(*inputs), expected)


def test_device_weight_bytes_are_the_small_parts_and_two_slots():
    model = _transformer(layers=3)
    blocks = model.transformer_blocks
    block = sum(t.numel() * t.element_size() for t in (*blocks[0].parameters(), *blocks[0].buffers()))
    small = module_bytes(model) - 3 * block
    estimate = device_weight_bytes(model, blocks)
    assert small + 2 * block <= estimate <= small + 2 * block + 2 * 256 * 40  # packing pads each tensor to 256 B
    assert BlockStreamer(model, blocks).device_bytes == estimate


def test_module_bytes_count_non_persistent_buffers():
    model = _transformer(layers=2)
    block = model.transformer_blocks[1]
    raw = torch.zeros(block.ff.net[2].weight.numel() // 32 * 34, dtype=torch.uint8)
    block.ff.net[2] = QuantizedLinear(QuantizedTensor(raw, GGMLType.Q8_0, block.ff.net[2].weight.shape), None)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert module_bytes(model) == state + raw.numel()  # what core's module_size misses


def test_activation_estimate_grows_with_tokens_and_per_token_noise():
    small = transformer_activation_bytes(2048, 2, 6144, torch.bfloat16)
    assert small == 12 * 2 * 6144 * 2048 * 2  # ~0.6 GB at 768×512×121 with guidance
    assert transformer_activation_bytes(2048, 2, 6144, torch.bfloat16, per_token_sigma=True) > small


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="page locking needs CUDA")


@cuda
def test_pinned_while_placed_unless_kept_and_released_by_release():
    model = _transformer(layers=3, dtype=torch.bfloat16)
    inputs = [t.cuda() for t in _inputs(model.config, torch.bfloat16)]
    expected = model.cuda()(*inputs)
    model.cpu()
    baseline = torch.cuda.memory_allocated()
    weight = lambda: model.transformer_blocks[0].attn1.to_q.weight  # noqa: E731 (host copy between visits)
    with placed(model, "cuda", "low_vram"):
        streamer = streamer_for(model)
        assert streamer.pinned_bytes == streamer.streamed_bytes > 0 and weight().is_pinned()
        assert torch.equal(model(*inputs), expected)
    assert streamer.pinned_bytes == 0 and not weight().is_pinned()
    assert torch.cuda.memory_allocated() == baseline  # slots and small parts given back
    with placed(model, "cuda", "low_vram", keep_pinned=True):
        assert torch.equal(model(*inputs), expected)
    assert streamer.pinned_bytes == streamer.streamed_bytes and weight().is_pinned()
    assert streaming_report()["pinned_bytes"] >= streamer.pinned_bytes
    release(model)
    assert streamer.pinned_bytes == 0 and not weight().is_pinned()
    assert torch.cuda.memory_allocated() == baseline


@cuda
def test_a_dropped_streamer_unlocks_its_pages():
    model = _transformer(layers=2)
    streamer = BlockStreamer(model, model.transformer_blocks)
    assert streamer.pin()
    flat = streamer._packed[0][0]
    assert flat.is_pinned()
    del streamer
    assert not flat.is_pinned()  # the weights live on (in the model), unlocked


@cuda
def test_to_host_leaves_nothing_pinned():
    x = torch.randn(3, 5, 64, 64, device="cuda").transpose(1, 2)  # not contiguous
    before = torch.cuda.host_memory_stats().get("allocated_bytes.current", 0)
    host = to_host(x)
    assert torch.equal(host, x.cpu()) and not host.is_pinned()
    assert torch.cuda.host_memory_stats().get("allocated_bytes.current", 0) == before
