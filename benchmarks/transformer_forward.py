"""Full-size transformer forward on a GPU with random weights: ours (eager, optionally compiled)
next to diffusers' LTXVideoTransformer3DModel when it is importable.

Default shape: 768×512×121 video → latent 16×16×24 = 6,144 tokens, CFG batch 2, 128 text tokens, bf16.
Usage: python benchmarks/transformer_forward.py [--compile] [--diffusers] [--iters 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltx_core import LTXV_2B, LTXVideoTransformer, video_positions  # noqa: E402
from ltx_core.loading.keymaps import transformer_to_diffusers  # noqa: E402
from ltx_core.model.fusion import set_fusion  # noqa: E402
from ltx_core.model.ops import describe_ops  # noqa: E402

LATENT = (16, 16, 24)
TEXT_TOKENS = 128


def random_weights(model_meta: torch.nn.Module, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)
    weights = {}
    for key, meta in model_meta.state_dict().items():
        t = torch.randn(meta.shape, generator=gen, device=device, dtype=torch.float32)
        scale = meta.shape[1] ** -0.5 if meta.ndim == 2 else 0.1
        weights[key] = (1 + 0.1 * t if key.endswith("norm.weight") else t * scale).to(dtype)
    return weights


def transformer_inputs(
    device: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x, sigma, context, mask, positions of a CFG batch of 2 at the default shape (the same draws
    in every script): 6,144 latent tokens, 128 text tokens of which 40 are kept."""
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(2, LATENT[0] * LATENT[1] * LATENT[2], 128, device=device, dtype=dtype, generator=gen)
    context = torch.randn(2, TEXT_TOKENS, 4096, device=device, dtype=dtype, generator=gen)
    mask = torch.ones(2, TEXT_TOKENS, device=device)
    mask[:, 40:] = 0
    sigma = torch.tensor([0.7, 0.7], device=device)
    positions = video_positions(*LATENT, frame_rate=25.0, causal_fix=False, device=device)
    return x, sigma, context, mask, positions


def diffusers_forward(weights: dict[str, torch.Tensor], inputs: tuple[torch.Tensor, ...]):
    """diffusers' LTXVideoTransformer3DModel on our `weights` (original keys), as a function of no
    arguments running it on `inputs` (from `transformer_inputs`)."""
    from diffusers import LTXVideoTransformer3DModel

    with torch.device("meta"):
        reference = LTXVideoTransformer3DModel()
    reference.load_state_dict(transformer_to_diffusers(weights), assign=True)
    reference.eval()
    x, sigma, context, mask, positions = inputs
    return lambda: reference(
        hidden_states=x,
        encoder_hidden_states=context,
        timestep=sigma * 1000,
        encoder_attention_mask=mask,
        video_coords=positions.expand(2, -1, -1),
        return_dict=False,
    )[0]


def time_cuda(fn, iters: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--regional", action="store_true", help="compile one transformer block, reused by all")
    parser.add_argument("--cudnn", action="store_true", help="also time with the cuDNN attention backend")
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels (eager, and compiled)")
    parser.add_argument("--mode", default=None, help="torch.compile mode for --regional")
    parser.add_argument("--diffusers", action="store_true")
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    device, dtype = "cuda", torch.bfloat16
    cfg = LTXV_2B
    with torch.device("meta"):
        meta = LTXVideoTransformer(cfg)
    weights = random_weights(meta, device, dtype)
    model = LTXVideoTransformer.from_state_dict(cfg, dict(weights))
    print(describe_ops(model), flush=True)

    n = LATENT[0] * LATENT[1] * LATENT[2]
    inputs = transformer_inputs(device, dtype)
    x, sigma, context, mask, positions = inputs
    rows = []

    def report(name: str, times: list[float]) -> None:
        rows.append((name, statistics.median(times), min(times)))

    with torch.inference_mode():
        ours = lambda: model(x, sigma, context, mask, positions)  # noqa: E731
        set_fusion(False)
        report("ours eager, unfused", time_cuda(ours, args.iters))
        unfused_out = ours().float()
        set_fusion(True)
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        ours()
        torch.cuda.synchronize()
        print(f"first call with fusion (compiles the fused functions): {time.perf_counter() - t0:.1f} s", flush=True)
        report("ours (fused elementwise)", time_cuda(ours, args.iters))
        peak = torch.cuda.max_memory_allocated() / 2**30
        reference_out = ours().float()
        print(f"fused vs unfused max |Δ| {(reference_out - unfused_out).abs().max():.4f}", flush=True)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                ours()
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20), flush=True)

        if args.compile:
            compiled = torch.compile(model)
            t0 = time.perf_counter()
            out = compiled(x, sigma, context, mask, positions)
            torch.cuda.synchronize()
            print(f"compile (first call): {time.perf_counter() - t0:.1f} s", flush=True)
            print(f"compiled vs eager max |Δ| {(out.float() - reference_out).abs().max():.4f}", flush=True)
            report("ours torch.compile", time_cuda(lambda: compiled(x, sigma, context, mask, positions), args.iters))

        if args.cudnn:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                report("ours eager, cuDNN attention", time_cuda(ours, args.iters))

        if args.regional:
            t0 = time.perf_counter()
            for block in model.transformer_blocks:
                block.compile(mode=args.mode)
            out = ours()
            torch.cuda.synchronize()
            print(f"regional compile (first call): {time.perf_counter() - t0:.1f} s", flush=True)
            print(f"regional vs eager max |Δ| {(out.float() - reference_out).abs().max():.4f}", flush=True)
            report(f"blocks compiled {args.mode or ''}", time_cuda(ours, args.iters))
            if args.profile:
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    ours()
                    torch.cuda.synchronize()
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25), flush=True)
            if args.cudnn:
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    report("blocks compiled, cuDNN", time_cuda(ours, args.iters))

        if args.diffusers:
            run = diffusers_forward(weights, inputs)
            diff = (run().float() - reference_out).abs()
            print(f"diffusers vs ours: max |Δ| {diff.max():.4f}, mean |Δ| {diff.mean():.5f}", flush=True)
            report("diffusers eager", time_cuda(run, args.iters))

    print(f"\n{torch.cuda.get_device_name()}, 2B bf16, {n} tokens × batch 2, {TEXT_TOKENS} text tokens")
    print(f"peak memory (ours eager): {peak:.2f} GiB")
    print(f"{'variant':<22}{'median ms':>10}{'min ms':>10}")
    for name, median, best in rows:
        print(f"{name:<22}{median:>10.1f}{best:>10.1f}")


if __name__ == "__main__":
    main()
