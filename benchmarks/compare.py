"""One GPU, one run: our transformer forward, VAE decode and text-to-video next to diffusers' on the same
random full-size weights, then our memory modes and a GGUF Q8_0 transformer, with ratios.

Shapes: 768×512×121 video (6,144 latent tokens), classifier-free guidance (batch 2), 128 text tokens,
bf16, 2B transformer, 0.9.1 VAE, T5 v1.1 XXL. Each section runs in its own process when asked for on
the command line, and appends its rows to a JSON file; `--report` prints them all as one table.

Usage:
  python benchmarks/compare.py forward decode e2e memory --json results.json
  python benchmarks/compare.py --report --json results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the 0.9.1 scheduler settings

import end_to_end  # noqa: E402
import transformer_forward  # noqa: E402
import vae_decode  # noqa: E402

from ltx_core import LTXV_2B, VAE_091, LTXVideoTransformer, Models, Settings, VideoVAE, text_to_video  # noqa: E402
from ltx_core.loading import QuantizedLinear, QuantizedTensor  # noqa: E402
from ltx_core.loading.dequant import GGMLType  # noqa: E402
from ltx_core.loading.keymaps import transformer_to_diffusers, vae_to_diffusers  # noqa: E402
from ltx_core.model.fp8 import quantize_linears  # noqa: E402
from ltx_core.model.ops import describe_ops  # noqa: E402
from tiny import diffusers_ltx_scheduler  # noqa: E402

GiB = 2**30
DEVICE, DTYPE = "cuda", torch.bfloat16
LATENT = transformer_forward.LATENT  # frames, height, width of the 768×512×121 latent
STEPS = 50
# diffusers' AutoencoderKLLTXVideo arguments of the 0.9.1 VAE (convert_ltx_to_diffusers.py)
DIFFUSERS_VAE_091 = dict(
    decoder_block_out_channels=(256, 512, 1024),
    decoder_layers_per_block=(5, 6, 7, 8),
    decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(True, True, True, False),
    upsample_residual=(True, True, True),
    upsample_factor=(2, 2, 2),
    timestep_conditioning=True,
)


def gpu_ms(fn: Callable[[], object], iters: int, warmup: int = 2) -> float:
    """Median milliseconds of `fn` between CUDA events, after warm-ups."""
    return statistics.median(transformer_forward.time_cuda(fn, iters, warmup))


def wall_s(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


class Peak:
    """Peak GPU memory (allocated, and reserved by PyTorch's allocator) over a `with` block, in GiB."""

    def __enter__(self) -> Peak:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.synchronize()
        self.allocated = torch.cuda.max_memory_allocated() / GiB
        self.reserved = torch.cuda.max_memory_reserved() / GiB


def row(rows: list, section: str, name: str, value: float, unit: str, ours: bool = True, **extra: object) -> None:
    rows.append({"section": section, "name": name, "value": value, "unit": unit, "ours": ours, **extra})
    print(f"{section:<8} {name:<52} {value:>10.3f} {unit}", flush=True)


def max_delta(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.float() - b.float()).abs()
    return d.max().item(), (d.mean() / b.float().abs().mean()).item()


def transformer_inputs() -> tuple[torch.Tensor, ...]:
    return transformer_forward.transformer_inputs(DEVICE, DTYPE)


def quantize_q8_0(weight: torch.Tensor) -> QuantizedTensor:
    """GGML Q8_0 blocks of a 2-D weight, made on its device: per 32 values an fp16 scale and 32 int8."""
    blocks = weight.float().reshape(-1, 32)
    scale = (blocks.abs().amax(dim=1, keepdim=True) / 127).to(torch.float16)
    q = torch.round(blocks / scale.float().clamp(min=1e-12)).clamp(-127, 127).to(torch.int8)
    raw = torch.cat([scale.view(torch.uint8), q.view(torch.uint8)], dim=1).reshape(-1)
    return QuantizedTensor(raw, GGMLType.Q8_0, weight.shape)


def section_forward(rows: list) -> None:
    with torch.device("meta"):
        meta = LTXVideoTransformer(LTXV_2B)
    weights = transformer_forward.random_weights(meta, DEVICE, DTYPE)
    model = LTXVideoTransformer.from_state_dict(LTXV_2B, dict(weights))
    inputs = transformer_inputs()
    run = lambda: model(*inputs)  # noqa: E731
    print(describe_ops(model), flush=True)
    with torch.inference_mode():
        first = wall_s(run)
        row(rows, "forward", "first call (compiles the fused functions)", first, "s")
        with Peak() as peak:
            ms = gpu_ms(run, 10)
        row(rows, "forward", "ours, bf16", ms, "ms", peak_gib=peak.allocated)
        ours = run()

        ref_run = transformer_forward.diffusers_forward(weights, inputs)
        with Peak() as peak:
            ref_ms = gpu_ms(ref_run, 10)
        worst, mean = max_delta(ours, ref_run())
        row(rows, "forward", "diffusers, bf16, eager", ref_ms, "ms", ours=False, peak_gib=peak.allocated)
        row(rows, "forward", "ours vs diffusers: mean |Δ| / mean |out|", mean, "", max_abs=worst)

        # GGUF Q8_0: every linear weight of the blocks quantized, dequantized per call on the GPU
        model = LTXVideoTransformer.from_state_dict(LTXV_2B, dict(weights))
        for name, module in list(model.named_modules()):
            if name.startswith("transformer_blocks.") and type(module).__name__ == "Linear":
                parent, _, child = name.rpartition(".")
                q = QuantizedLinear(quantize_q8_0(module.weight.data), module.bias)
                model.get_submodule(parent).register_module(child, q)
        print(describe_ops(model), flush=True)
        first = wall_s(run)
        row(rows, "forward", "Q8_0 first call (compiles dequantization)", first, "s")
        with Peak() as peak:
            q_ms = gpu_ms(run, 10)
        row(rows, "forward", "ours, GGUF Q8_0", q_ms, "ms", peak_gib=peak.allocated)
        row(rows, "forward", "Q8_0 time / bf16 time (target ≤ 1.15)", q_ms / ms, "×")
        row(rows, "forward", "Q8_0 vs bf16: mean |Δ| / mean |out|", max_delta(run(), ours)[1], "")

        # fp8 matrix products: the blocks' linear layers in e4m3 per channel, activations per row
        model = LTXVideoTransformer.from_state_dict(LTXV_2B, dict(weights))
        quantize_linears(model)
        print(describe_ops(model), flush=True)
        first = wall_s(run)
        row(rows, "forward", "fp8 first call", first, "s")
        with Peak() as peak:
            f_ms = gpu_ms(run, 10)
        row(rows, "forward", "ours, fp8 matmul", f_ms, "ms", peak_gib=peak.allocated)
        row(rows, "forward", "fp8 vs bf16: mean |Δ| / mean |out|", max_delta(run(), ours)[1], "")
        row(rows, "forward", "diffusers vs ours bf16 (bf16 rounding, for scale)", mean, "")


def vae_091(weights: dict[str, torch.Tensor]) -> VideoVAE:
    return VideoVAE.from_state_dict(VAE_091, weights, dtype=DTYPE, device=DEVICE).eval()


def diffusers_vae_091(weights: dict[str, torch.Tensor]):
    from diffusers import AutoencoderKLLTXVideo

    kinds = ([b.kind for b in VAE_091.encoder_blocks], [b.kind for b in VAE_091.decoder_blocks])
    with torch.device("meta"):
        reference = AutoencoderKLLTXVideo(**DIFFUSERS_VAE_091)
    reference.load_state_dict(vae_to_diffusers(weights, *kinds), assign=True, strict=True)
    return reference.eval()


def section_decode(rows: list) -> None:
    weights = vae_decode.random_weights(VAE_091, torch.device(DEVICE), DTYPE)
    vae = vae_091(weights)
    reference = diffusers_vae_091(weights)
    z = torch.randn(1, 128, *LATENT, device=DEVICE, dtype=DTYPE, generator=torch.Generator(DEVICE).manual_seed(3))
    t = torch.tensor([0.05], device=DEVICE)
    mean = reference.latents_mean.to(DTYPE)[None, :, None, None, None]
    std = reference.latents_std.to(DTYPE)[None, :, None, None, None]

    def ours() -> torch.Tensor:
        return vae.decode(z, 0.05, generator=torch.Generator(DEVICE).manual_seed(7), tiling="off")

    def theirs() -> torch.Tensor:
        torch.manual_seed(7)
        return reference.decode(z * std + mean, t, return_dict=False)[0]

    with torch.inference_mode():
        first = wall_s(ours)
        row(rows, "decode", "first call (compiles the fused functions)", first, "s")
        with Peak() as peak:
            ms = gpu_ms(ours, 5)
        row(rows, "decode", "ours, 0.9.1, untiled", ms, "ms", peak_gib=peak.allocated)
        with Peak() as peak:
            ref_ms = gpu_ms(theirs, 5)
        row(rows, "decode", "diffusers, 0.9.1", ref_ms, "ms", ours=False, peak_gib=peak.allocated)
        # the noise maps differ (our generator, their global RNG): compare with noise injection off
        for model in (vae, reference):
            for name, parameter in model.named_parameters():
                if "per_channel_scale" in name:
                    parameter.data.zero_()
        worst, rel = max_delta(ours(), theirs())
        row(rows, "decode", "ours vs diffusers (no noise): mean |Δ| / mean |out|", rel, "", max_abs=worst)


def section_e2e(rows: list) -> None:
    from diffusers import LTXPipeline

    models = end_to_end.build_models(False)  # resident on the GPU
    settings = Settings(width=768, height=512, frames=121, steps=STEPS, device=DEVICE)
    prompt = end_to_end.PROMPT
    with torch.inference_mode():
        text_to_video(models, prompt, settings=Settings(**{**settings.__dict__, "steps": 2}))  # warm-up
        with Peak() as peak:
            seconds = wall_s(lambda: text_to_video(models, prompt, settings=settings))
        row(rows, "e2e", f"ours, text + {STEPS} steps + decode", seconds, "s", peak_gib=peak.allocated)
        text_s = wall_s(lambda: models.text_encoder.encode(prompt, "", 128))
        text = models.text_encoder.encode(prompt, "", 128)

        with torch.device("meta"):
            from diffusers import LTXVideoTransformer3DModel

            transformer = LTXVideoTransformer3DModel()
        transformer.load_state_dict(transformer_to_diffusers(models.transformer.state_dict()), assign=True)
        vae = diffusers_vae_091(models.vae.state_dict())
        pipe = LTXPipeline(
            scheduler=diffusers_ltx_scheduler(), vae=vae, text_encoder=None, tokenizer=None, transformer=transformer
        )
        pipe.set_progress_bar_config(disable=True)

        def theirs(steps: int) -> None:
            pipe(
                prompt_embeds=text.context,
                prompt_attention_mask=text.mask,
                negative_prompt_embeds=text.negative.context,
                negative_prompt_attention_mask=text.negative.mask,
                width=768,
                height=512,
                num_frames=121,
                num_inference_steps=steps,
                decode_timestep=0.05,
                decode_noise_scale=0.025,
                output_type="pt",
            )

        theirs(2)
        with Peak() as peak:
            ref_seconds = text_s + wall_s(lambda: theirs(STEPS))
        row(
            rows,
            "e2e",
            f"diffusers LTXPipeline, text + {STEPS} steps + decode",
            ref_seconds,
            "s",
            ours=False,
            peak_gib=peak.allocated,
        )
        quantize_linears(models.transformer)
        text_to_video(models, prompt, settings=Settings(**{**settings.__dict__, "steps": 2}))  # warm-up
        with Peak() as peak:
            seconds = wall_s(lambda: text_to_video(models, prompt, settings=settings))
        row(rows, "e2e", f"ours, fp8 matmul, text + {STEPS} steps + decode", seconds, "s", peak_gib=peak.allocated)


def t5_in_fp8(text_encoder: torch.nn.Module) -> None:
    """Store the T5's linear weights in float8 e4m3, expanded per layer at use, as an fp8 T5 file loads."""
    from ltx_core.loading.quantized import Fp8WeightLinear

    for name, module in list(text_encoder.model.named_modules()):
        if isinstance(module, torch.nn.Linear) and name:
            parent, _, child = name.rpartition(".")
            fp8 = Fp8WeightLinear(module.weight.detach().to(torch.float8_e4m3fn), None, module.bias)
            text_encoder.model.get_submodule(parent).register_module(child, fp8)


def section_memory(rows: list) -> None:
    models = end_to_end.build_models(False)
    models = Models(models.transformer.cpu(), models.vae.cpu(), models.text_encoder.cpu(), models.release)
    torch.cuda.empty_cache()
    prompt = end_to_end.PROMPT
    for t5 in ("bf16 T5", "fp8 T5"):
        if t5 == "fp8 T5":
            t5_in_fp8(models.text_encoder)
        for memory in ("default", "low_vram"):

            def generate(steps: int, memory: str = memory) -> None:
                settings = Settings(width=768, height=512, frames=121, steps=steps, device=DEVICE, memory=memory)
                text_to_video(models, prompt, settings=settings)

            with torch.inference_mode():
                first = wall_s(lambda: generate(2))
                row(rows, "memory", f"{memory}, {t5}: first call, 2 steps", first, "s")
                torch.cuda.empty_cache()
                with Peak() as peak:
                    seconds = wall_s(lambda: generate(STEPS))
            row(
                rows,
                "memory",
                f"{memory}, {t5}: models in CPU memory, {STEPS} steps",
                seconds,
                "s",
                peak_gib=peak.allocated,
                reserved_gib=peak.reserved,
            )
            print(f"  peak {peak.allocated:.2f} GiB allocated, {peak.reserved:.2f} GiB reserved", flush=True)


SECTIONS = {"forward": section_forward, "decode": section_decode, "e2e": section_e2e, "memory": section_memory}


def report(rows: list) -> None:
    def find(section: str, start: str) -> dict | None:
        return next((r for r in rows if r["section"] == section and r["name"].startswith(start)), None)

    print(f"\n{torch.cuda.get_device_name() if torch.cuda.is_available() else ''} — 768×512×121, CFG, bf16")
    print(f"{'section':<8} {'measurement':<56} {'value':>10}  {'peak GiB':>8}")
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else ""
        print(f"{r['section']:<8} {r['name']:<56} {r['value']:>10.3f} {r['unit']:<2} {peak:>8}")
    print("\nratios (diffusers time / ours; > 1: ours faster)")
    for section, ours, theirs in (
        ("forward", "ours, bf16", "diffusers"),
        ("decode", "ours, 0.9.1", "diffusers"),
        ("e2e", "ours, text", "diffusers"),
        ("e2e", "ours, fp8", "diffusers"),
    ):
        a, b = find(section, ours), find(section, theirs)
        if a and b:
            print(f"  {section:<8} {b['value'] / a['value']:.2f}×  ({b['value']:.3f} / {a['value']:.3f} {a['unit']})")
    default, low = find("memory", "default, bf16 T5: models"), find("memory", "low_vram, bf16 T5: models")
    if default and low:
        ratio = low["value"] / default["value"]
        print(f"  low_vram time / default time: {ratio:.2f}× (target ≤ 1.5)")
        print(f"  low_vram peak: {low['peak_gib']:.2f} GiB allocated, {low['reserved_gib']:.2f} GiB reserved (< 8 GB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)}")
    parser.add_argument("--json", type=Path, default=Path("compare.json"))
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    for name in args.sections:
        SECTIONS[name](rows)
        args.json.write_text(json.dumps(rows, indent=1))
        torch.cuda.empty_cache()
    if args.report:
        report(rows)


if __name__ == "__main__":
    main()
