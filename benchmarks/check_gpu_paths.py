"""The CUDA-only code paths against the plain torch ones they replace, at full size on a GPU: the fused
transformer (Triton q/k kernel, GELU epilogue, compiled elementwise), block streaming on a copy
stream, the compiled GGUF dequantization, the fp8 row quantization kernel, and the fused VAE decoder
(also against float32) and encoder. The CPU tests cover the plain paths; this prints how far each
CUDA path is from them (bf16 rounding is expected, wrong results are not).
Usage: python benchmarks/check_gpu_paths.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compare  # noqa: E402
import transformer_forward  # noqa: E402
import vae_decode  # noqa: E402

from ltx_core import LTXV_2B, VAE_091, LTXVideoTransformer  # noqa: E402
from ltx_core.loading.dequant import dequantize  # noqa: E402
from ltx_core.model import fp8  # noqa: E402
from ltx_core.model.fusion import set_fusion  # noqa: E402
from ltx_core.model.kernels import quantize_rows_kernel  # noqa: E402
from ltx_core.streaming import BlockStreamer  # noqa: E402

DEVICE = "cuda"


def relative(a: torch.Tensor, b: torch.Tensor) -> str:
    d = (a.float() - b.float()).abs()
    return f"max |Δ| {d.max().item():.4g}, mean |Δ| / mean |x| {(d.mean() / b.float().abs().mean()).item():.3e}"


def main() -> None:
    torch.manual_seed(0)
    with torch.inference_mode():
        with torch.device("meta"):
            meta = LTXVideoTransformer(LTXV_2B)
        model = LTXVideoTransformer.from_state_dict(
            LTXV_2B, transformer_forward.random_weights(meta, DEVICE, torch.bfloat16)
        )
        inputs = compare.transformer_inputs()
        fused = model(*inputs)
        set_fusion(False)
        plain = model(*inputs)
        float32 = LTXVideoTransformer.from_state_dict(LTXV_2B, model.state_dict(), dtype=torch.float32)
        exact = float32(*(t.float() if t.is_floating_point() else t for t in inputs))
        del float32
        set_fusion(True)
        print(f"transformer fused vs plain (bf16):      {relative(fused, plain)}")
        print(f"transformer fused vs float32:           {relative(fused, exact)}")
        print(f"transformer plain vs float32:           {relative(plain, exact)}")

        model.cpu()
        torch.cuda.empty_cache()
        streamer = BlockStreamer(model, model.transformer_blocks)
        with streamer.active(DEVICE):
            torch.cuda.reset_peak_memory_stats()
            streamed = [model(*inputs) for _ in range(2)]
            peak = torch.cuda.max_memory_allocated() / 2**30
        same = all(torch.equal(s, fused) for s in streamed)
        print(f"transformer streamed == resident (2 passes): {same}; peak {peak:.2f} GiB while streaming")
        del model, streamer

        raw = torch.randint(0, 256, (8192 * 2048 // 32 * 34,), dtype=torch.uint8)
        raw.view(-1, 34)[:, 1] = 0x20  # fp16 scales of a sane size
        cpu = dequantize(raw, 8, (8192, 2048), torch.bfloat16)
        gpu = dequantize(raw.to(DEVICE), 8, (8192, 2048), torch.bfloat16)
        print(f"Q8_0 dequantization, compiled on the GPU == CPU: {torch.equal(gpu.cpu(), cpu)}")

        hidden = torch.randn(12288, 8192, device=DEVICE, dtype=torch.bfloat16) * 3
        for name, kernel, compiled in (
            ("", lambda x: quantize_rows_kernel(x), fp8._quantize_rows),
            ("GELU + ", lambda x: quantize_rows_kernel(x, gelu=True), fp8._gelu_quantize_rows),
        ):
            (values, scales), (ref_values, ref_scales) = kernel(hidden), compiled(hidden)
            differing = (values.float() != ref_values.float()).float().mean().item()
            print(
                f"fp8 {name}row quantization, Triton vs compiled: scales equal {torch.equal(scales, ref_scales)}, "
                f"{differing:.2e} of the values differ"
            )
        del hidden, values, ref_values

        weights = vae_decode.random_weights(VAE_091, torch.device(DEVICE), torch.bfloat16)
        vae = compare.vae_091(weights)
        z = torch.randn(1, 128, *compare.LATENT, device=DEVICE, dtype=torch.bfloat16)

        def decode() -> torch.Tensor:
            generator = torch.Generator(DEVICE).manual_seed(7)
            return vae.decode(z, 0.05, noise_scale=0.025, generator=generator, tiling="off")

        fused = decode()
        set_fusion(False)
        plain = decode()
        set_fusion(True)
        video = fused.clamp(-1, 1)
        encoded = vae.encode(video, tiling="off")
        set_fusion(False)
        encoded_plain = vae.encode(video, tiling="off")
        set_fusion(True)
        vae = vae.float()
        z = z.float()
        exact = decode()
        print(f"VAE decode fused vs plain (bf16):       {relative(fused, plain)}")
        print(f"VAE decode fused vs float32:            {relative(fused, exact)}")
        print(f"VAE decode plain vs float32:            {relative(plain, exact)}")
        print(f"VAE encode fused vs plain (bf16):       {relative(encoded, encoded_plain)}")


if __name__ == "__main__":
    main()
