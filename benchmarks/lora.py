"""What LoRAs cost the transformer forward, per weight storage: the 2B model at 768×512×121 (6,144 latent
tokens), classifier-free guidance batch of 2, 128 text tokens, bf16 compute, random weights; with no LoRA,
then 1 and 3 stacked LoRAs of rank 128 and of rank 32 (random factors on every linear layer of the
transformer blocks, in ComfyUI's keys), on bf16 weights (W + ΔW formed per call), fp8 and GGUF Q8_0 weights
(ΔW added into the weight expanded per call) and fp8 matmul weights (a requantized fp8 copy of W + ΔW, made when the
LoRAs are set). Prints each time, its ratio to the same storage without LoRA (issue #17's target: ≤ 1.10×
on every storage), how long setting the LoRAs took, the memory they add (factors, and fp8 matmuls' copies),
the peak GPU memory and how far the LoRAs moved the output (so that they are seen to be live).

Usage: python benchmarks/lora.py                 (on a CUDA GPU; --model 13B for the 13B model)
       python benchmarks/lora.py --small         (tiny model on the CPU: checks that the script runs)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # compare.py's scheduler settings

import compare  # noqa: E402
import transformer_forward  # noqa: E402

from ltx_core.config import LTXV_2B, LTXV_13B, TransformerConfig  # noqa: E402
from ltx_core.loading.quantized import QuantizedLinear  # noqa: E402
from ltx_core.lora import apply_loras  # noqa: E402
from ltx_core.model.fp8 import quantize_linears  # noqa: E402
from ltx_core.model.ops import choose_ops, describe_ops, use_ops  # noqa: E402
from ltx_core.model.rope import video_positions  # noqa: E402
from ltx_core.model.storage import linear_layers, replace_linear  # noqa: E402
from ltx_core.model.transformer import LTXVideoTransformer  # noqa: E402

TARGET = 1.10  # issue #17: forward time with LoRAs at most 1.10× the time without, on every storage
RANKS = (128, 32)
COUNTS = (1, 3)
STRENGTHS = (0.8, -0.5, 0.6)  # of the first, second and third stacked LoRA
GiB, MiB = 2**30, 2**20


@dataclasses.dataclass(frozen=True)
class Size:
    device: str
    config: TransformerConfig
    latent: tuple[int, int, int]  # frames, height, width in latent tokens
    text_tokens: int
    iters: int


def size_for(args: argparse.Namespace) -> Size:
    if args.small:
        cfg = TransformerConfig(num_layers=2, num_heads=2, head_dim=32, in_channels=128, out_channels=128,
                                caption_channels=64, cross_attention_dim=64)  # fmt: skip
        return Size("cpu", cfg, (3, 2, 3), 16, 2)
    config = {"2B": LTXV_2B, "13B": LTXV_13B}[args.model]
    return Size("cuda", config, transformer_forward.LATENT, transformer_forward.TEXT_TOKENS, args.iters)


def inputs_for(size: Size) -> tuple[torch.Tensor, ...]:
    """x, sigma, context, mask, positions of a CFG batch of 2 (40 of the text tokens kept at full size)."""
    gen = torch.Generator(device=size.device).manual_seed(1)
    cfg, tokens, dtype = size.config, math.prod(size.latent), torch.bfloat16
    x = torch.randn(2, tokens, cfg.in_channels, device=size.device, dtype=dtype, generator=gen)
    context = torch.randn(2, size.text_tokens, cfg.caption_channels, device=size.device, dtype=dtype, generator=gen)
    mask = torch.ones(2, size.text_tokens, device=size.device)
    mask[:, max(1, size.text_tokens * 40 // 128) :] = 0
    positions = video_positions(*size.latent, frame_rate=25.0, causal_fix=False, device=size.device)
    return x, torch.tensor([0.7, 0.7], device=size.device), context, mask, positions


def bf16_model(size: Size, weights: dict[str, torch.Tensor]) -> LTXVideoTransformer:
    return LTXVideoTransformer.from_state_dict(size.config, dict(weights))


def fp8_model(size: Size, weights: dict[str, torch.Tensor]) -> LTXVideoTransformer:
    """The blocks' linear weights stored in e4m3 (as ComfyUI's fp8 files), expanded to bf16 per call."""

    def rule(key: str, tensor: torch.Tensor) -> torch.dtype:
        fp8 = key.startswith("transformer_blocks.") and key.endswith(".weight") and tensor.ndim == 2
        return torch.float8_e4m3fn if fp8 else torch.bfloat16

    return LTXVideoTransformer.from_state_dict(size.config, dict(weights), dtype=rule)


def fp8_matmul_model(size: Size, weights: dict[str, torch.Tensor]) -> LTXVideoTransformer:
    model = bf16_model(size, weights)
    quantize_linears(model)
    return model


def gguf_q8_0_model(size: Size, weights: dict[str, torch.Tensor]) -> LTXVideoTransformer:
    """Every linear layer of the blocks in GGML Q8_0 (as city96's files), dequantized per call."""
    model = bf16_model(size, weights)
    for name, layer in linear_layers(model, "transformer_blocks."):
        replace_linear(model, name, QuantizedLinear(compare.quantize_q8_0(layer.weight.data), layer.bias))
    return model


STORAGES: dict[str, Callable[[Size, dict], LTXVideoTransformer]] = {
    "bf16": bf16_model,
    "fp8": fp8_model,
    "fp8_matmul": fp8_matmul_model,
    "gguf_q8_0": gguf_q8_0_model,
}


def random_loras(model: LTXVideoTransformer, rank: int, count: int, device: str) -> list[tuple[dict, float]]:
    """`count` LoRAs of `rank` on every linear layer of the blocks, in ComfyUI's keys, made on `device`
    in bf16, of a trained LoRA's size (each moves a layer's output by a few percent)."""
    gen = torch.Generator(device=device).manual_seed(rank + count)
    loras = []
    for strength in STRENGTHS[:count]:
        lora = {}
        for name, layer in linear_layers(model, "transformer_blocks."):
            fan_in, fan_out = layer.in_features, layer.out_features
            down = torch.randn(rank, fan_in, generator=gen, device=device) / fan_in**0.5
            up = torch.randn(fan_out, rank, generator=gen, device=device) * 0.05 / rank**0.5
            lora[f"diffusion_model.{name}.lora_down.weight"] = down.to(torch.bfloat16)
            lora[f"diffusion_model.{name}.lora_up.weight"] = up.to(torch.bfloat16)
            lora[f"diffusion_model.{name}.alpha"] = torch.tensor(float(rank))
        loras.append((lora, strength))
    return loras


def lora_bytes(model: LTXVideoTransformer) -> int:
    """Bytes the LoRAs add to the model's layers: their buffers named `lora_*` (the stack's factors, ranks
    concatenated, and fp8 matmuls' requantized copies)."""
    return sum(
        t.numel() * t.element_size()
        for _, layer in linear_layers(model)
        for name, t in layer.named_buffers(recurse=False)
        if name.startswith("lora_")
    )


def median_ms(fn: Callable[[], object], size: Size) -> float:
    """Median milliseconds of `fn`: between CUDA events after warm-ups (which compile), or wall time on the CPU."""
    if size.device == "cuda":
        return statistics.median(transformer_forward.time_cuda(fn, size.iters))
    fn()
    times = []
    for _ in range(size.iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def sync(size: Size) -> None:
    if size.device == "cuda":
        torch.cuda.synchronize()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """mean |a − b| / mean |b|."""
    return ((a.float() - b.float()).abs().mean() / b.float().abs().mean()).item()


def run_storage(name: str, size: Size, weights: dict[str, torch.Tensor], rows: list[dict]) -> None:
    """Time the model in storage `name` without LoRA, then with each stack of LoRAs."""
    model = STORAGES[name](size, weights)
    use_ops(model, choose_ops(size.device))  # as placed() chooses them where a model meets its device
    inputs = inputs_for(size)
    run = lambda: model(*inputs)  # noqa: E731
    with torch.inference_mode():
        base_out = run()
        base_ms = median_ms(run, size)
    print(f"{name}: {describe_ops(model)}", flush=True)
    rows.append({"storage": name, "loras": "none", "ms": base_ms, "ratio": 1.0})
    for rank in RANKS:
        for count in COUNTS:
            loras = random_loras(model, rank, count, size.device)
            sync(size)
            start = time.perf_counter()
            apply_loras(model, loras)
            sync(size)
            set_ms = (time.perf_counter() - start) * 1e3
            if size.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode():
                out = run()
                ms = median_ms(run, size)
            peak = torch.cuda.max_memory_allocated() / GiB if size.device == "cuda" else None
            label = f"{count} × rank {rank}"
            rows.append(
                {
                    "storage": name,
                    "loras": label,
                    "ms": ms,
                    "ratio": ms / base_ms,
                    "set_ms": set_ms,
                    "lora_mib": lora_bytes(model) / MiB,
                    "peak_gib": peak,
                    "moved": rel(out, base_out),
                }
            )
            print(f"  {label}: {describe_ops(model).rsplit('; ', 1)[-1]}", flush=True)
    apply_loras(model, [])
    with torch.inference_mode():
        removed = run()
    same = torch.equal(removed, base_out)
    worst = (removed.float() - base_out.float()).abs().max().item()
    print(f"  LoRAs removed: the output {'is bit-equal to' if same else f'differs (max |Δ| {worst:.3g}) from'} before")


def report(rows: list[dict], size: Size) -> None:
    device = torch.cuda.get_device_name() if size.device == "cuda" else "CPU (--small: not a measurement)"
    latent_frames, height, width = size.latent
    pixels = f"{width * 32}×{height * 32}×{1 + 8 * (latent_frames - 1)}"
    print(f"\n{device}, {size.config.num_layers} blocks × {size.config.hidden_dim} wide, {pixels} "
          f"({math.prod(size.latent)} tokens) × batch 2, {size.text_tokens} text tokens, bf16 compute")  # fmt: skip
    print(f"{'storage':<11}{'LoRAs':<15}{'median ms':>10}{'× no LoRA':>11}{'target':>9}{'set ms':>9}"
          f"{'LoRA MiB':>10}{'peak GiB':>10}{'moved out':>11}")  # fmt: skip
    missed = []
    for r in rows:
        target = "" if r["loras"] == "none" else ("met" if r["ratio"] <= TARGET else "missed")
        if target == "missed":
            missed.append(f"{r['storage']} {r['loras']}")
        set_ms = f"{r['set_ms']:.0f}" if "set_ms" in r else ""
        added = f"{r['lora_mib']:.0f}" if "lora_mib" in r else ""
        peak = f"{r['peak_gib']:.2f}" if r.get("peak_gib") is not None else ""
        moved = f"{100 * r['moved']:.1f} %" if "moved" in r else ""
        print(f"{r['storage']:<11}{r['loras']:<15}{r['ms']:>10.1f}{r['ratio']:>10.3f}×{target:>9}{set_ms:>9}"
              f"{added:>10}{peak:>10}{moved:>11}")  # fmt: skip
    verdict = "met on every row" if not missed else f"missed: {', '.join(missed)}"
    print(f"target ≤ {TARGET:.2f}× the time without LoRA: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny model on the CPU (checks that the script runs)")
    parser.add_argument("--model", choices=("2B", "13B"), default="2B", help="the model size (default: 2B)")
    parser.add_argument("--storage", choices=list(STORAGES), action="append", help="only these (repeatable)")
    parser.add_argument("--iters", type=int, default=10, help="timed forwards per row (default: 10)")
    args = parser.parse_args()
    size = size_for(args)
    if size.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run with --small to check the script on the CPU")
    with torch.device("meta"):
        meta = LTXVideoTransformer(size.config)
    weights = transformer_forward.random_weights(meta, size.device, torch.bfloat16)
    rows: list[dict] = []
    for name in args.storage or STORAGES:
        run_storage(name, size, weights, rows)
        if size.device == "cuda":
            torch.cuda.empty_cache()
    report(rows, size)


if __name__ == "__main__":
    main()
