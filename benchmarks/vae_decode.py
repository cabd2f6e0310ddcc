"""Full-size video VAE on a GPU with random weights: decode of a 768×512×121 latent untiled, streamed in
temporal chunks (exact) and in spatial tiles, and encode of a 768×512×121 video untiled and chunked,
with the time (CUDA events, median after warm-ups) and the peak memory of each, next to the tiling
module's estimate.

Usage: python benchmarks/vae_decode.py [--release 0.9.1|0.9.0|0.9.5] [--channels-last] [--compile]
Smoke test without a GPU: python benchmarks/vae_decode.py --device cpu --small
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltx_core import VAE_090, VAE_091, VAE_095, VAEConfig, VideoVAE  # noqa: E402
from ltx_core.model.vae.tiling import TilingPlan, decode_bytes, encode_bytes  # noqa: E402

RELEASES = {"0.9.0": VAE_090, "0.9.1": VAE_091, "0.9.5": VAE_095}
LATENT = (16, 16, 24)  # frames, height, width: 121 × 512 × 768 pixels
SMALL_LATENT = (3, 2, 3)  # 17 × 64 × 96 pixels
DECODE_TIMESTEP, DECODE_NOISE = 0.05, 0.025
GiB = 2**30


def random_weights(config: VAEConfig, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Weights of a sensible scale, drawn on `device`: convs and linears ~ 1/sqrt(fan_in), modulation
    tables and noise scales small, the timestep multiplier at its real 1000, positive latent stds."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VideoVAE(config).state_dict().items()}
    gen = torch.Generator(device=device).manual_seed(0)
    weights = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "timestep_scale_multiplier":
            value = torch.full(shape, 1000.0, device=device)
        elif leaf == "std-of-means":
            value = 0.5 + torch.rand(shape, generator=gen, device=device)
        elif "scale_shift_table" in leaf or leaf.startswith("per_channel_scale"):
            value = 0.1 * noise
        elif len(shape) >= 2:
            value = noise / shape[1:].numel() ** 0.5
        else:
            value = 0.1 * noise + (1.0 if "norm" in key and leaf == "weight" else 0.0)
        weights[key] = value.to(dtype)
    return weights


def timed(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> tuple[float, float, float]:
    """(median ms, peak GiB allocated during the timed calls, that peak less what was allocated before
    them: weights and inputs; NaN off CUDA)."""
    for _ in range(warmup):
        fn()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) / GiB if cuda else float("nan")
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated(device) / GiB if cuda else float("nan")
    return statistics.median(times), peak, peak - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", choices=RELEASES, default="0.9.1")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny shapes (a smoke test, e.g. on CPU)")
    parser.add_argument("--channels-last", action="store_true", help="also run untiled in channels_last_3d")
    parser.add_argument("--compile", action="store_true", help="also run untiled with torch.compile")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # bf16 convs are slow on CPU
    config = RELEASES[args.release]
    frames, h, w = SMALL_LATENT if args.small else LATENT
    side = max(h, w)
    tiles = TilingPlan(tile=side // 2 + 4, overlap=8)  # outside the bound (see tiling.py): for the time only
    decode_plans = [TilingPlan(tile=side, frames=4), TilingPlan(tile=side, frames=1), tiles]
    encode_plan = TilingPlan(tile=side, frames=1 if args.small else 4)

    vae = VideoVAE.from_state_dict(config, random_weights(config, device, dtype), dtype=dtype, device=device)
    vae.eval()
    gen = torch.Generator(device=device).manual_seed(1)
    latents = torch.randn(1, config.latent_channels, frames, h, w, generator=gen, device=device, dtype=dtype)
    pixel_frames = 8 * (frames - 1) + 1
    video = torch.rand(1, 3, pixel_frames, 32 * h, 32 * w, generator=gen, device=device, dtype=dtype) * 2 - 1
    rows: list[tuple[str, float, float, float, float]] = []  # name, median ms, peak, Δ peak, estimate (GiB)

    def decode(tiling: str | TilingPlan, model: VideoVAE = vae, z: torch.Tensor = latents) -> torch.Tensor:
        noise = torch.Generator(device=device).manual_seed(7)
        return model.decode(z, DECODE_TIMESTEP, noise_scale=DECODE_NOISE, generator=noise, tiling=tiling)

    def estimate(shape: tuple[int, ...], plan: TilingPlan | None, cost: Callable[..., int] = decode_bytes) -> float:
        return cost(config, shape, plan, dtype) / GiB

    with torch.inference_mode():
        untiled = decode("off").float()
        rows.append(
            (
                "decode untiled",
                *timed(lambda: decode("off"), device, args.warmup, args.iters),
                estimate(latents.shape, None),
            )
        )
        for plan in decode_plans:
            tiled = decode(plan).float()
            error = ((tiled - untiled).abs().max() / untiled.abs().max()).item()
            label = f"decode {plan.tile}×{plan.tile} × {plan.frames} (max err {error:.0e})"
            run = lambda plan=plan: decode(plan)  # noqa: E731
            rows.append((label, *timed(run, device, args.warmup, args.iters), estimate(latents.shape, plan)))
        if args.channels_last:
            cl_vae = vae.to(memory_format=torch.channels_last_3d)
            cl_latents = latents.contiguous(memory_format=torch.channels_last_3d)
            run = lambda: decode("off", cl_vae, cl_latents)  # noqa: E731
            rows.append(("decode untiled channels_last", *timed(run, device, args.warmup, args.iters), float("nan")))
            vae.to(memory_format=torch.contiguous_format)
        if args.compile:
            compiled = VideoVAE.from_state_dict(
                config, random_weights(config, device, dtype), dtype=dtype, device=device
            )
            compiled.decoder = torch.compile(compiled.decoder)
            t0 = time.perf_counter()
            decode("off", compiled)
            print(f"compile (first call): {time.perf_counter() - t0:.1f} s", flush=True)
            run = lambda: decode("off", compiled)  # noqa: E731
            rows.append(("decode untiled compiled", *timed(run, device, args.warmup, args.iters), float("nan")))
            del compiled
        rows.append(
            (
                "encode untiled",
                *timed(lambda: vae.encode(video, tiling="off"), device, args.warmup, args.iters),
                estimate(video.shape, None, encode_bytes),
            )
        )
        rows.append(
            (
                f"encode {encode_plan.tile}×{encode_plan.tile} × {encode_plan.frames}",
                *timed(lambda: vae.encode(video, tiling=encode_plan), device, args.warmup, args.iters),
                estimate(video.shape, encode_plan, encode_bytes),
            )
        )

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{name}, VAE {args.release}, {dtype}, {32 * w}×{32 * h}×{pixel_frames}, torch {torch.__version__}")
    print(
        f"weights: {sum(p.numel() * p.element_size() for p in vae.parameters()) / GiB:.2f} GiB; "
        "Δ peak = peak less the weights and inputs; est. = tiling.py's estimate of Δ peak (decode_bytes, "
        "encode_bytes); decode T×T × F = tiles of T latent pixels, chunks of F latent frames"
    )
    print(f"{'variant':<40}{'median ms':>11}{'peak GiB':>10}{'Δ peak GiB':>12}{'est. GiB':>10}")
    for label, median, peak, delta, guess in rows:
        print(f"{label:<40}{median:>11.1f}{peak:>10.2f}{delta:>12.2f}{guess:>10.2f}")


if __name__ == "__main__":
    main()
