"""Each release family's sampling on one GPU, random full-size weights, 768×512×121 (6,144 latent tokens),
128 prompt tokens, bf16 compute.

Sections (each in a process of its own when several are named, rows appended to --json):
  13b        13B dev (0.9.8-dev): seconds per step with CFG + STG (one forward of batch 3: the
             release's range σ ∈ [0.9767, 0.985): CFG 6, STG 4 on blocks 22, 35 and 39, rescaling 0.5,
             CFG-zero*), and per step over the release's own 30-step guidance plan (batch 1 to 3 by
             range), with weights in bf16, fp8 (stored e4m3, computed in bf16) and fp8_matmul (block
             linears multiplied in fp8), in the memory modes default and low_vram; peak GPU memory.
  2b-dev     2B dev (0.9.6-dev): seconds per step with CFG + STG (batch 3: CFG 3, STG 1 on block 19,
             rescaling 0.7) and with CFG alone (batch 2).
  distilled  2B 0.9.8 distilled: text to video end to end with the release's settings (8 fixed noise
             levels, no guidance: one forward of batch 1 per step), T5, sampling and decode.
  multiscale 13B 0.9.8 distilled at 1216×704×121: the multi-scale recipe (7 steps at 800×448, the
             latents doubled by the spatial upsampler, 3 steps at 1600×896, decode, resize) against one
             pass of the release's 8 steps at 1216×704; end to end, peak GPU memory.

Usage: python benchmarks/releases.py 13b 2b-dev distilled --json results.json
       python benchmarks/releases.py --report --json results.json
       python benchmarks/releases.py 13b 2b-dev distilled --small   (tiny models on the CPU: checks the script)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import end_to_end  # noqa: E402

from ltx_core import LTXV_2B_CAUSAL, LTXV_13B, Guidance, Settings, defaults_for, text_to_video  # noqa: E402
from ltx_core.memory import placed  # noqa: E402
from ltx_core.model.fp8 import quantize_linears  # noqa: E402
from ltx_core.sampling.noise import seeded_noise  # noqa: E402
from ltx_core.sampling.sampler import sample  # noqa: E402
from ltx_core.sampling.schedule import make_schedule  # noqa: E402
from ltx_core.text.encoder import Conditioning  # noqa: E402

GiB = 2**30
LATENT = (16, 16, 24)  # frames, height, width of 768×512×121
TEXT_TOKENS = 128
SECTIONS = ("13b", "2b-dev", "distilled", "multiscale")
CFG_STG_13B = Guidance(  # defaults.py: 13B dev first pass, the range from σ = 0.9767
    guidance_scale=6.0, stg_scale=4.0, rescaling_scale=0.5, skip_block_list=(22, 35, 39), cfg_star_rescale=True
)
CFG_STG_2B = Guidance(guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=(19,))


class Bench:
    def __init__(self, small: bool) -> None:
        self.small = small
        self.device = "cpu" if small else "cuda"
        self.dtype = torch.float32 if small else torch.bfloat16
        self.rows: list[dict] = []

    def sync(self) -> None:
        if not self.small:
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if not self.small:
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        return 0.0 if self.small else torch.cuda.max_memory_allocated() / GiB

    def row(self, section: str, what: str, seconds: float, **extra) -> None:
        row = {"section": section, "what": what, "seconds": seconds, "peak_gib": self.peak_gib(), **extra}
        self.rows.append(row)
        print(f"{section:<10} {what:<58} {seconds:>8.3f} s  peak {row['peak_gib']:6.2f} GiB", flush=True)

    def latent(self) -> tuple[int, ...]:
        return (1, 128, 2, 2, 3) if self.small else (1, 128, *LATENT)

    def text(self, width: int) -> Conditioning:
        gen = torch.Generator().manual_seed(3)
        tokens = 8 if self.small else TEXT_TOKENS

        def one() -> Conditioning:
            context = torch.randn(1, tokens, width, generator=gen).to(self.device, self.dtype)
            mask = torch.ones(1, tokens, dtype=torch.int64, device=self.device)
            mask[:, tokens // 3 :] = 0
            return Conditioning(context, mask)

        positive = one()
        return Conditioning(positive.context, positive.mask, one())

    def per_step(self, model, guidance: Guidance, sigmas: torch.Tensor, memory: str = "default") -> float:
        """Seconds per step of sample() over `sigmas` (after a one-step warm-up), the model on the
        device whole (default) or streamed block by block from CPU memory (low_vram)."""
        text = self.text(model.config.caption_channels)
        noise = seeded_noise(self.latent(), 0, device=self.device)
        with placed(model, self.device, memory), torch.inference_mode():
            sample(model, noise, sigmas[-2:], text, guidance=guidance)  # warm-up: kernels, allocator
            self.reset_peak()
            self.sync()
            start = time.perf_counter()
            sample(model, noise, sigmas, text, guidance=guidance)
            self.sync()
        return (time.perf_counter() - start) / (sigmas.numel() - 1)


def _transformer(bench: Bench, cfg, weights: str):
    """A random-weight transformer of `cfg` (tiny of its kind with --small) in bf16, fp8 (linear
    weights stored in e4m3, as the loader's fp8 dtype) or fp8_matmul, kept on the CPU between uses."""
    from ltx_core import LTXVideoTransformer

    if bench.small:
        cfg = end_to_end.small_transformer_config(cfg, 64, 128)
    with torch.device("meta"):
        model = LTXVideoTransformer(cfg)
    end_to_end.DEVICE, end_to_end.DTYPE = bench.device, bench.dtype
    model = end_to_end.random_fill(model, 0)  # drawn on the device: fast
    if weights == "fp8":
        model = LTXVideoTransformer.from_state_dict(cfg, model.state_dict(), dtype=torch.float8_e4m3fn)
    elif weights == "fp8_matmul" and not bench.small:  # fp8 products need a Hopper or Ada GPU
        quantize_linears(model)
    return model.to("cpu")


def run_13b(bench: Bench) -> None:
    release = defaults_for("0.9.8-dev", "13B")
    tokens = bench.latent()[2] * bench.latent()[3] * bench.latent()[4]
    plan = make_schedule(release.schedule, release.steps, tokens)
    plan_guidance = Guidance.from_config(release.guidance_config())
    for weights in ("bf16", "fp8", "fp8_matmul"):
        model = _transformer(bench, LTXV_13B, weights)
        for memory in ("default", "low_vram"):
            steps = 2 if memory == "low_vram" else 3
            seconds = bench.per_step(model, CFG_STG_13B, plan[: steps + 1], memory)
            bench.row("13b", f"{weights}, {memory}: CFG + STG step (batch 3)", seconds, weights=weights, memory=memory)
            if weights == "bf16" and memory == "default":
                seconds = bench.per_step(model, plan_guidance, plan, memory)
                bench.row("13b", "bf16, default: the release's 30-step plan, per step", seconds)
        del model


def run_2b_dev(bench: Bench) -> None:
    model = _transformer(bench, LTXV_2B_CAUSAL, "bf16")
    sigmas = make_schedule("linear_quadratic", 40, 6144)[:6]
    for name, guidance in (("CFG + STG step (batch 3)", CFG_STG_2B), ("CFG step (batch 2)", Guidance(3.0))):
        bench.row("2b-dev", name, bench.per_step(model, guidance, sigmas))


def _text_to_video_seconds(bench: Bench, models, settings: Settings) -> float:
    """Seconds of one text_to_video after a warm-up run, the peak memory counted from its start."""
    with torch.inference_mode():
        text_to_video(models, end_to_end.PROMPT, settings=settings)  # warm-up: kernels, allocator
        bench.reset_peak()
        bench.sync()
        start = time.perf_counter()
        text_to_video(models, end_to_end.PROMPT, settings=settings)
        bench.sync()
    return time.perf_counter() - start


def run_distilled(bench: Bench) -> None:
    end_to_end.DEVICE, end_to_end.DTYPE = bench.device, bench.dtype
    models = end_to_end.build_models(bench.small, LTXV_2B_CAUSAL, "0.9.5", "0.9.8-distilled")
    size = dict(width=96, height=64, frames=9) if bench.small else dict(width=768, height=512, frames=121)
    seconds = _text_to_video_seconds(bench, models, Settings(**size, device=bench.device))
    bench.row("distilled", "text to video end to end (release settings: 8 steps, batch 1)", seconds)


def run_multiscale(bench: Bench) -> None:
    from ltx_core import LatentUpsampler, LatentUpsamplerConfig

    end_to_end.DEVICE, end_to_end.DTYPE = bench.device, bench.dtype
    models = end_to_end.build_models(bench.small, LTXV_13B, "0.9.5", "0.9.8-distilled")
    with torch.device("meta"):
        upsampler = LatentUpsampler(LatentUpsamplerConfig(in_channels=models.vae.config.latent_channels))
    models.upsampler = end_to_end.random_fill(upsampler, 4).to("cpu")
    size = dict(width=192, height=128, frames=9) if bench.small else dict(width=1216, height=704, frames=121)
    for name, multiscale in (("one pass, 8 steps", False), ("multi-scale, 7 + 3 steps", True)):
        seconds = _text_to_video_seconds(bench, models, Settings(**size, device=bench.device, multiscale=multiscale))
        bench.row("multiscale", f"{size['width']}×{size['height']}×{size['frames']}, {name}, end to end", seconds)


RUNNERS = {"13b": run_13b, "2b-dev": run_2b_dev, "distilled": run_distilled, "multiscale": run_multiscale}


def report(rows: list[dict]) -> None:
    print(f"\n{'section':<10} {'what':<58} {'s':>8}  peak GiB")
    for row in rows:
        print(f"{row['section']:<10} {row['what']:<58} {row['seconds']:>8.3f}  {row['peak_gib']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)}")
    parser.add_argument("--json", type=Path, default=Path("releases.json"))
    parser.add_argument("--report", action="store_true", help="print the rows of --json and stop")
    parser.add_argument("--small", action="store_true", help="tiny models on the CPU: checks the script runs")
    args = parser.parse_args()
    if args.report:
        report(json.loads(args.json.read_text()))
        return
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown or not args.sections:
        parser.error(f"name sections among {', '.join(SECTIONS)} (got {', '.join(unknown) or 'none'})")
    if len(args.sections) > 1:  # one process per section: each starts with the GPU empty
        for section in args.sections:
            command = [sys.executable, __file__, section, "--json", str(args.json), *(["--small"] * args.small)]
            subprocess.run(command, check=True)
        report(json.loads(args.json.read_text()))
        return
    bench = Bench(args.small)
    if not bench.small:
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for section in args.sections:
        RUNNERS[section](bench)
    old = json.loads(args.json.read_text()) if args.json.exists() else []
    args.json.write_text(json.dumps(old + bench.rows, indent=1))


if __name__ == "__main__":
    main()
