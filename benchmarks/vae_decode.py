"""Full-size video VAE on a GPU with random weights: decode of a 768×512×121 latent untiled and tiled
(spatial tiles and temporal chunks), and encode of a 768×512×121 video untiled and chunked, with the
time (CUDA events, median after warm-ups) and the peak memory of each, next to the tiling module's
activation estimate.

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
from ltx_core.model.vae.tiling import (  # noqa: E402
    CALL_OVERHEAD,
    TilingPlan,
    decoder_bytes_per_pixel,
    encoder_bytes_per_pixel,
)

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
    decode_plan = (
        TilingPlan(tile=2, overlap=1, frames=2, frame_overlap=1)
        if args.small
        else TilingPlan(tile=12, overlap=4, frames=8, frame_overlap=2)
    )
    encode_plan = (
        TilingPlan(tile=2, overlap=1, frames=1, frame_overlap=0)
        if args.small
        else TilingPlan(tile=12, overlap=4, frames=4, frame_overlap=0)
    )

    vae = VideoVAE.from_state_dict(config, random_weights(config, device, dtype), dtype=dtype, device=device)
    vae.eval()
    gen = torch.Generator(device=device).manual_seed(1)
    latents = torch.randn(1, config.latent_channels, frames, h, w, generator=gen, device=device, dtype=dtype)
    pixel_frames = 8 * (frames - 1) + 1
    video = torch.rand(1, 3, pixel_frames, 32 * h, 32 * w, generator=gen, device=device, dtype=dtype) * 2 - 1
    pixels = pixel_frames * 32 * h * 32 * w
    rows: list[tuple[str, float, float, float, float]] = []  # name, median ms, peak, Δ peak, estimate (GiB)

    def decode(tiling: str | TilingPlan, model: VideoVAE = vae, z: torch.Tensor = latents) -> torch.Tensor:
        noise = torch.Generator(device=device).manual_seed(7)
        return model.decode(z, DECODE_TIMESTEP, noise_scale=DECODE_NOISE, generator=noise, tiling=tiling)

    def piece_pixels(plan: TilingPlan) -> int:
        return (8 * (min(plan.frames, frames) - 1) + 1) * 32 * min(plan.tile, h) * 32 * min(plan.tile, w)

    def estimate(pixel_count: int, per_pixel: float) -> float:
        return (pixel_count * per_pixel + CALL_OVERHEAD) / GiB

    per_decode, per_encode = decoder_bytes_per_pixel(config, dtype), encoder_bytes_per_pixel(config, dtype)
    with torch.inference_mode():
        untiled = decode("off").float()
        tiled = decode(decode_plan).float()
        error = ((tiled - untiled).abs().mean() / untiled.abs().mean()).item()
        print(f"tiled vs untiled decode: mean |Δ| / mean |x| = {error:.4f}", flush=True)
        rows.append(
            (
                "decode untiled",
                *timed(lambda: decode("off"), device, args.warmup, args.iters),
                estimate(pixels, per_decode),
            )
        )
        rows.append(
            (
                f"decode tiled {decode_plan.tile}/{decode_plan.overlap} × {decode_plan.frames}/"
                f"{decode_plan.frame_overlap}",
                *timed(lambda: decode(decode_plan), device, args.warmup, args.iters),
                estimate(piece_pixels(decode_plan), per_decode),
            )
        )
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
                estimate(pixels, per_encode),
            )
        )
        encode_pixels = (1 + 8 * encode_plan.frames) * 32 * min(encode_plan.tile, h) * 32 * min(encode_plan.tile, w)
        rows.append(
            (
                f"encode tiled {encode_plan.tile}/{encode_plan.overlap} × {encode_plan.frames}",
                *timed(lambda: vae.encode(video, tiling=encode_plan), device, args.warmup, args.iters),
                estimate(encode_pixels, per_encode),
            )
        )

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{name}, VAE {args.release}, {dtype}, {32 * w}×{32 * h}×{pixel_frames}, torch {torch.__version__}")
    print(
        f"weights: {sum(p.numel() * p.element_size() for p in vae.parameters()) / GiB:.2f} GiB; "
        "Δ peak = peak less the weights and inputs; est. = tiling.py's estimate of Δ peak for one piece "
        "(a tiled run adds its output and blend buffer)"
    )
    print(f"{'variant':<34}{'median ms':>11}{'peak GiB':>10}{'Δ peak GiB':>12}{'est. GiB':>10}")
    for label, median, peak, delta, guess in rows:
        print(f"{label:<34}{median:>11.1f}{peak:>10.2f}{delta:>12.2f}{guess:>10.2f}")


if __name__ == "__main__":
    main()
