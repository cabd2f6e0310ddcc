"""One video on several GPUs: one GPU against CFG-parallel and Ulysses (ltx_core/parallel), text to video
with random full-size weights, all models resident on each GPU, bf16, 50 steps of classifier-free
guidance (2 branches a step; with --stg also the 2B releases' CFG + STG, 3 branches).

Rows per model, size and layout: sampling time (the transformer's first call to its last step's end),
end to end (prompt encoding, sampling, the VAE decode, frames to the host), their speedups over one GPU,
and how far the parallel run's latents and frames are from the one-GPU run's (bf16 rounding).
"1 GPU" runs on every GPU at once, each alone (no communication); rank 0's times are reported.

Usage, on a machine with 2 GPUs (NVLink multicast stays off, as shared multi-GPU hosts need):
  NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
      torchrun --standalone --nproc-per-node 2 benchmarks/parallel.py --models 2b --json parallel.json
  … --models 13b --sizes 768x512x121        (13B; 1216x704x257 on 13B takes about 8 minutes more)
  torchrun --standalone --nproc-per-node 2 benchmarks/parallel.py --small   (tiny models, CPU, gloo: checks the script)
(`python3 -m torch.distributed.run` is torchrun where the command is not on the PATH.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path

# NVLink multicast stays off (on shared multi-GPU hosts it has taken GPUs out of service): set here
# too, before NCCL starts, in case the environment lost the settings.
os.environ.update({"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"})

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import end_to_end  # noqa: E402

from ltx_core import LTXV_2B, LTXV_13B, Guidance, Settings, text_to_video  # noqa: E402
from ltx_core.parallel import init_parallel  # noqa: E402
from ltx_core.parallel.launch import start, stop  # noqa: E402
from ltx_core.text.tokenizer import PromptTokenizer  # noqa: E402

GiB = 2**30
MODELS = {  # name → (transformer config, VAE layout, release whose settings the rest follows)
    "2b": (LTXV_2B, "0.9.1", "0.9.1"),
    "13b": (LTXV_13B, "0.9.5", "0.9.8-dev"),
}
CFG = Guidance(guidance_scale=3.0)
CFG_STG = Guidance(guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=(19,))  # 2B releases'


def size(text: str) -> tuple[int, int, int]:
    width, height, frames = (int(v) for v in text.lower().split("x"))
    return width, height, frames


class Clock:
    """Sampling start (the transformer's first call) and end (its last step), and the final latents."""

    def __init__(self, sync) -> None:
        self.sync, self.first, self.last, self.latents = sync, None, None, None

    def start(self, *_: object) -> None:
        if self.first is None:
            self.sync()
            self.first = time.perf_counter()

    def __call__(self, step: int, total: int, denoised: torch.Tensor) -> None:
        if step == total - 1:  # the last step goes to σ = 0: its clean estimate is the result
            self.sync()
            self.last, self.latents = time.perf_counter(), denoised.clone()


def run_once(models, settings: Settings, sync) -> dict:
    clock = Clock(sync)
    hook = models.transformer.register_forward_pre_hook(clock.start)
    try:
        sync()
        begin = time.perf_counter()
        frames = text_to_video(models, end_to_end.PROMPT, settings=settings, on_step=clock)
        sync()
        end = time.perf_counter()
    finally:
        hook.remove()
    return {
        "sampling_s": clock.last - clock.first,
        "end_to_end_s": end - begin,
        "latents": clock.latents.float().cpu(),
        "frames": frames,
    }


def stand_in_ids(prompts: list[str]) -> list[list[int]]:
    """Token ids for the random T5, the same in every process (end_to_end's stand-in uses Python's
    hash(), which each process seeds differently)."""
    return [[2 + zlib.crc32(word.encode()) % 32000 for word in prompt.split()] for prompt in prompts]


def difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """max |a − b| / max |b| and mean |a − b| / mean |b|."""
    delta = (a - b).abs()
    return (delta.max() / b.abs().max()).item(), (delta.mean() / b.abs().mean()).item()


def line(row: dict) -> str:
    """One row in words."""
    where = f"{row['model']} {row['size']} {row['guidance']:<9} {row['layout']:<26}"
    sampling = f"sampling {row['sampling_s']:7.2f} s ({row['sampling_s'] / row['steps']:.3f} s/step, "
    sampling += f"{row['sampling_speedup']:.2f}×)"
    whole = f"end to end {row['end_to_end_s']:7.2f} s ({row['end_to_end_speedup']:.2f}×)"
    whole += f", peak {row['peak_gib']:5.1f} GiB"
    (lat_max, lat_mean), (px_max, px_mean) = row["latents_max_mean"], row["frames_max_mean"]
    error = f"vs 1 GPU: latents {lat_max:.2%} max / {lat_mean:.2%} mean, frames {px_max:.2%} / {px_mean:.2%}"
    return f"{where} {sampling}, {whole}; {error}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["2b"])
    parser.add_argument("--sizes", nargs="+", type=size, default=[(768, 512, 121), (1216, 704, 257)])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--stg", action="store_true", help="also the 2B releases' CFG + STG (3 branches a step)")
    parser.add_argument("--json", type=Path, help="write the rows here (rank 0)")
    parser.add_argument("--small", action="store_true", help="tiny models on the CPU with gloo: checks the script")
    args = parser.parse_args()

    if args.small:
        end_to_end.DEVICE, end_to_end.DTYPE = "cpu", torch.float32
        args.sizes, args.steps = [(96, 64, 33), (64, 64, 41)], 3
    first, device = start(device="cpu" if args.small else None)
    world = first.world
    layouts = {"1 GPU": None}
    if world % 2 == 0:
        layouts[f"CFG-parallel 2 × Ulysses {world // 2}"] = first if first.cfg == 2 else init_parallel(2, world // 2)
    layouts[f"Ulysses {world}"] = init_parallel(1, world)
    main_rank = first.rank == 0
    sync = (lambda: None) if args.small else torch.cuda.synchronize
    say = print if main_rank else (lambda *a, **k: None)
    if not args.small:
        end_to_end.DEVICE = str(device)
        say(f"{world} × {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)

    rows = []
    for name in args.models:
        config, vae_layout, release = MODELS[name]
        models = end_to_end.build_models(args.small, config, vae_layout, release)
        models.text_encoder.tokenizer = PromptTokenizer(Path("stand-in"), stand_in_ids, 32128)
        guidances = {"CFG": CFG, **({"CFG + STG": CFG_STG} if args.stg and name == "2b" else {})}
        for width, height, frames in args.sizes:
            for what, guidance in guidances.items():
                base = Settings(width=width, height=height, frames=frames, device=device, guidance=guidance)
                reference = None
                for layout, parallel in layouts.items():
                    settings = replace(base, parallel=parallel)
                    with torch.inference_mode():
                        text_to_video(models, end_to_end.PROMPT, settings=replace(settings, steps=2))  # warm-up
                        if not args.small:
                            torch.cuda.reset_peak_memory_stats(device)
                        result = run_once(models, replace(settings, steps=args.steps), sync)
                    peak = 0.0 if args.small else torch.cuda.max_memory_allocated(device) / GiB
                    reference = result if reference is None else reference
                    row = {
                        "model": name,
                        "size": f"{width}×{height}×{frames}",
                        "guidance": what,
                        "layout": layout,
                        "steps": args.steps,
                        "sampling_s": result["sampling_s"],
                        "end_to_end_s": result["end_to_end_s"],
                        "sampling_speedup": reference["sampling_s"] / result["sampling_s"],
                        "end_to_end_speedup": reference["end_to_end_s"] / result["end_to_end_s"],
                        "latents_max_mean": difference(result["latents"], reference["latents"]),
                        "frames_max_mean": difference(result["frames"], reference["frames"]),
                        "peak_gib": peak,
                    }
                    rows.append(row)
                    say(line(row), flush=True)
        del models
        if not args.small:
            torch.cuda.empty_cache()
    if main_rank and args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    stop()


if __name__ == "__main__":
    main()
