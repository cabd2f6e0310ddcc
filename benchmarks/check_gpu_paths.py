"""Every fast path against the plain path it replaces, at full size on a GPU, asserted: exits 1 if any
check fails. The CPU tests check the plain paths (and the kernels in Triton's interpreter at small
sizes); this checks that what a GPU runs equals them.

Compared, each with the same random weights and inputs (2B transformer at 768×512×121 with a CFG batch
of 2, the 0.9.1 VAE at the same size, bf16):
- the ops sets (model/ops.py): COMPILED and FUSED against PLAIN, for the transformer (bf16, with two
  stacked LoRAs merged, GGUF Q8_0 with and without LoRA) and the VAE decoder and encoder;
- fp8 products (FUSED: e4m3 activations on fp8 tensor cores) against the same layers' expanded
  weights (PLAIN), without and with LoRAs (both multiply by the same requantized fp8 copy);
- block streaming on a copy stream against the resident model (with and without LoRAs): bit-equal;
- each Triton kernel against its step at full-size shapes, and the compiled GGUF dequantization
  against the CPU's: bit-equal.

Tolerances. A bf16 forward is an approximation of the float32 one; a fast path that rounds as well as
the plain path (every fused kernel computes in float32 and rounds once, where the plain path rounds
after each op) is as close to float32 as the plain path is. So, with r = mean |plain − float32| /
mean |float32| measured in the same run (1.18 % for the transformer, 1.47 % for the decoder on an
H100): fast vs float32 ≤ 1.25 r (as accurate as plain, with room; measured 1.16 % and 1.12 %), fast vs
plain ≤ 2.25 r (the triangle inequality through float32; measured 1.03 % and 1.6 %), and its largest
error from float32 ≤ 1.5× the plain path's (the same rule for the worst value, with more room, since
the largest of millions of differences varies more than their mean). fp8 products also round the
activations to e4m3 (3 mantissa bits, per-row scales), as the weights already are (per-channel
scales): the fast path may move the output from the expanded-weights path by at most 2× what the
weights' e4m3 rounding moved it from bf16. Kernels: the bounds of tests/test_kernels.py.

Usage: python benchmarks/check_gpu_paths.py           (on a CUDA GPU, ~3 min, ~40 GiB)
       python benchmarks/check_gpu_paths.py --small   (tiny models on the CPU, compiled for the CPU:
                                                        checks that the script runs; no Triton there)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny layouts for --small

import transformer_forward  # noqa: E402
import vae_decode  # noqa: E402

from ltx_core.config import LTXV_2B, VAE_091, TransformerConfig, VAEConfig  # noqa: E402
from ltx_core.loading.dequant import GGMLType, dequantize  # noqa: E402
from ltx_core.loading.gguf import QuantizedTensor  # noqa: E402
from ltx_core.loading.quantized import QuantizedLinear  # noqa: E402
from ltx_core.lora import apply_loras  # noqa: E402
from ltx_core.model import fp8, kernels  # noqa: E402
from ltx_core.model.fusion import set_fusion  # noqa: E402
from ltx_core.model.ops import COMPILED, FUSED, PLAIN, Ops, describe_ops, use_ops  # noqa: E402
from ltx_core.model.rope import rope_tables, video_positions  # noqa: E402
from ltx_core.model.storage import linear_layers, replace_linear  # noqa: E402
from ltx_core.model.transformer import LTXVideoTransformer, rms_norm_rope_qk  # noqa: E402
from ltx_core.model.vae.autoencoder import VideoVAE  # noqa: E402
from ltx_core.streaming import BlockStreamer  # noqa: E402

BF16_STEP = 2**-8  # a bf16 value's spacing relative to it: 7 stored mantissa bits


@dataclasses.dataclass
class Size:
    """Everything that differs between the full-size run and --small."""

    device: str
    transformer: TransformerConfig
    latent: tuple[int, int, int]
    text_tokens: int
    vae: VAEConfig
    lora_rank: int


FULL = Size("cuda", LTXV_2B, transformer_forward.LATENT, transformer_forward.TEXT_TOKENS, VAE_091, 64)


def small_size() -> Size:
    from tiny import TINY_VAE_LAYOUTS

    cfg = TransformerConfig(num_layers=2, num_heads=2, head_dim=32, in_channels=128, out_channels=128,
                            caption_channels=64, cross_attention_dim=64)  # fmt: skip
    vae = VAEConfig.from_metadata(TINY_VAE_LAYOUTS["0.9.1"][0])
    return Size("cpu", cfg, (3, 2, 3), 16, vae, 4)


class Checks:
    """Collects named checks, prints each as it is made, and says at the end whether all passed."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def le(self, name: str, value: float, bound: float, unit: str = "") -> None:
        ok = value <= bound and math.isfinite(value)
        self._say(name, ok, f"{value:.4g}{unit} ≤ {bound:.4g}{unit}")

    def true(self, name: str, ok: bool, detail: str = "") -> None:
        self._say(name, ok, detail)

    def _say(self, name: str, ok: bool, detail: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
        if not ok:
            self.failed.append(name)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """mean |a − b| / mean |b|."""
    return ((a.float() - b.float()).abs().mean() / b.float().abs().mean()).item()


def max_of_mean(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / mean |b|."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().mean()).item()


def against_plain(checks: Checks, what: str, fast: torch.Tensor, plain: torch.Tensor, exact: torch.Tensor) -> None:
    """The bf16 rule of the module docstring for one fast output."""
    r = max(rel(plain, exact), BF16_STEP / 4)  # a floor, should plain be (nearly) exact
    checks.le(f"{what} vs float32", rel(fast, exact), 1.25 * r)
    checks.le(f"{what} vs plain", rel(fast, plain), 2.25 * r)
    worst = max(max_of_mean(plain, exact), BF16_STEP)
    checks.le(f"{what} largest |Δ| vs float32, of the mean |x|", max_of_mean(fast, exact), 1.5 * worst)


def run_with(model: torch.nn.Module, ops: Ops, fn):  # noqa: ANN001, ANN201
    before = use_ops(model, ops)
    try:
        return fn()
    finally:
        use_ops(model, before)


def transformer_inputs(size: Size, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """x, sigma, context, mask, positions of a CFG batch of 2 (a third of the text tokens kept)."""
    gen = torch.Generator(device=size.device).manual_seed(1)
    cfg, tokens = size.transformer, math.prod(size.latent)
    x = torch.randn(2, tokens, cfg.in_channels, device=size.device, dtype=dtype, generator=gen)
    context = torch.randn(2, size.text_tokens, cfg.caption_channels, device=size.device, dtype=dtype, generator=gen)
    mask = torch.ones(2, size.text_tokens, device=size.device)
    mask[:, size.text_tokens // 3 :] = 0
    positions = video_positions(*size.latent, frame_rate=25.0, causal_fix=False, device=size.device)
    return x, torch.tensor([0.7, 0.7], device=size.device), context, mask, positions


def random_loras(model: LTXVideoTransformer, rank: int) -> list[tuple[dict[str, torch.Tensor], float]]:
    """Two LoRAs on every block's linear layers, in ComfyUI's keys, of a trained LoRA's size (each
    moves a layer's output by a few percent)."""
    gen = torch.Generator().manual_seed(5)
    loras = []
    for strength in (0.8, -0.5):
        lora = {}
        for name, layer in linear_layers(model, "transformer_blocks."):
            down = torch.randn(rank, layer.in_features, generator=gen) / layer.in_features**0.5
            up = torch.randn(layer.out_features, rank, generator=gen) * 0.05 / rank**0.5
            lora[f"diffusion_model.{name}.lora_down.weight"] = down.to(torch.bfloat16)
            lora[f"diffusion_model.{name}.lora_up.weight"] = up.to(torch.bfloat16)
            lora[f"diffusion_model.{name}.alpha"] = torch.tensor(float(rank))
        loras.append((lora, strength))
    return loras


def q8_0(layer: torch.nn.Module) -> QuantizedLinear:
    blocks = layer.weight.detach().float().reshape(-1, 32)  # Q8_0: per 32 values an fp16 scale and 32 int8
    scale = (blocks.abs().amax(dim=1, keepdim=True) / 127).half()
    q = torch.round(blocks / scale.float()).clamp(-127, 127).to(torch.int8)
    raw = torch.cat([scale.view(torch.uint8), q.view(torch.uint8)], dim=1).reshape(-1)
    return QuantizedLinear(QuantizedTensor(raw, GGMLType.Q8_0, layer.weight.shape), layer.bias)


def check_transformer(checks: Checks, size: Size) -> None:
    """bf16 (without and with LoRAs), fp8 matmuls, GGUF Q8_0 and streaming, each against plain."""
    cfg = size.transformer
    with torch.device("meta"):
        meta = LTXVideoTransformer(cfg)
    weights = transformer_forward.random_weights(meta, size.device, torch.bfloat16)
    model = LTXVideoTransformer.from_state_dict(cfg, weights)
    exact_model = LTXVideoTransformer.from_state_dict(cfg, {k: v.float() for k, v in weights.items()})
    inputs = transformer_inputs(size, torch.bfloat16)
    exact_inputs = tuple(t.float() if t.is_floating_point() else t for t in inputs)
    loras = random_loras(model, size.lora_rank)
    for label, lora in (("", []), (" + 2 LoRAs merged", loras)):
        apply_loras(model, lora)
        apply_loras(exact_model, lora)
        exact = run_with(exact_model, PLAIN, lambda: exact_model(*exact_inputs))
        plain = run_with(model, PLAIN, lambda: model(*inputs))
        print(f"  {describe_ops(model)}")
        for ops in (COMPILED, FUSED):
            fast = run_with(model, ops, lambda: model(*inputs))
            against_plain(checks, f"transformer {ops.name}{label}", fast, plain, exact)
        check_streamed(checks, f"transformer{label}", model, inputs, size.device)
    exact_model = None  # its 8 GB are not needed further
    apply_loras(model, [])
    check_fp8(checks, size, model, inputs, loras)
    check_gguf(checks, size, model, inputs, loras)


def check_streamed(checks: Checks, what: str, model: LTXVideoTransformer, inputs: tuple, device: str) -> None:
    """Blocks visiting the device from host memory (a copy stream on CUDA) compute exactly as resident."""
    resident = run_with(model, FUSED, lambda: model(*inputs))
    home = next(model.parameters()).device
    model.cpu()
    streamer = BlockStreamer(model, model.transformer_blocks)
    with streamer.active(device):
        streamed = [run_with(model, FUSED, lambda: model(*inputs)) for _ in range(2)]  # the prefetch wraps
    del streamer
    model.to(home)
    checks.true(f"{what} streamed == resident (2 passes)", all(torch.equal(s, resident) for s in streamed))


def check_fp8(checks: Checks, size: Size, model: LTXVideoTransformer, inputs: tuple, loras: list) -> None:
    """fp8 products (FUSED) against the same e4m3 weights expanded to bf16 (PLAIN)."""
    plain_bf16 = run_with(model, PLAIN, lambda: model(*inputs))
    quantized = LTXVideoTransformer.from_state_dict(size.transformer, dict(model.state_dict()))
    fp8.quantize_linears(quantized)
    expanded = run_with(quantized, PLAIN, lambda: quantized(*inputs))
    weights_moved = max(rel(expanded, plain_bf16), BF16_STEP)  # what the weights' e4m3 rounding did
    print(f"  fp8 weights moved the output from bf16 by {rel(expanded, plain_bf16):.4g}")
    for label, lora in (("", []), (" + 2 LoRAs requantized", loras)):
        apply_loras(quantized, lora)
        expanded = run_with(quantized, PLAIN, lambda: quantized(*inputs))
        fast = run_with(quantized, FUSED, lambda: quantized(*inputs))
        checks.le(f"fp8 matmul{label} vs expanded weights", rel(fast, expanded), 2 * weights_moved)
    if size.device == "cuda":
        supported = fp8.fp8_matmul_supported(torch.device("cuda"))
        checks.true("fp8 products ran on fp8 tensor cores", supported, "compute capability ≥ 8.9")


def check_gguf(checks: Checks, size: Size, model: LTXVideoTransformer, inputs: tuple, loras: list) -> None:
    """GGUF Q8_0 layers (dequantized per call: compiled on CUDA by FUSED) against plain; the layers'
    expanded weights in float32 are the reference."""
    gguf = LTXVideoTransformer.from_state_dict(size.transformer, dict(model.state_dict()))
    for name, layer in linear_layers(gguf, "transformer_blocks."):
        replace_linear(gguf, name, q8_0(layer))
    probe = torch.zeros(1, device=size.device)
    dense = {f"{n}.weight": layer.dense_weight(probe) for n, layer in linear_layers(gguf)}
    exact_model = LTXVideoTransformer.from_state_dict(
        size.transformer, {**{k: v.float() for k, v in model.state_dict().items()}, **dense}
    )
    exact_inputs = tuple(t.float() if t.is_floating_point() else t for t in inputs)
    for label, lora in (("", []), (" + 2 LoRAs merged per call", loras)):
        apply_loras(gguf, lora)
        apply_loras(exact_model, lora)
        exact = run_with(exact_model, PLAIN, lambda: exact_model(*exact_inputs))
        plain = run_with(gguf, PLAIN, lambda: gguf(*inputs))
        fast = run_with(gguf, FUSED, lambda: gguf(*inputs))
        against_plain(checks, f"GGUF Q8_0{label} fused", fast, plain, exact)
    raw = torch.randint(0, 256, (8192 * 2048 // 32 * 34,), dtype=torch.uint8)
    raw.view(-1, 34)[:, 1] = 0x20  # fp16 scales of a sane size
    cpu = dequantize(raw, GGMLType.Q8_0, (8192, 2048), torch.bfloat16, PLAIN)
    here = dequantize(raw.to(size.device), GGMLType.Q8_0, (8192, 2048), torch.bfloat16, FUSED)
    checks.true("Q8_0 dequantization, fused on the device == plain on the CPU", torch.equal(here.cpu(), cpu))


def check_kernels(checks: Checks, size: Size) -> None:
    """Each Triton kernel against its step, at the full model's shapes (bounds of tests/test_kernels.py)."""
    if not kernels.triton_available(torch.zeros(1, device=size.device)):
        print("  (no Triton kernels on this device: the kernel checks are for a CUDA GPU)")
        return
    table = kernels.kernel_table()
    gen = torch.Generator(device=size.device).manual_seed(2)
    dim, tokens = size.transformer.hidden_dim, math.prod(size.latent)
    q, k = (torch.randn(2, tokens, dim, device=size.device, generator=gen, dtype=torch.bfloat16) for _ in range(2))
    weights = [1 + 0.1 * torch.randn(dim, device=size.device, generator=gen, dtype=torch.bfloat16) for _ in range(2)]
    positions = video_positions(*size.latent, frame_rate=25.0, causal_fix=False, device=size.device)
    cos, sin = rope_tables(positions, dim, size.transformer.rope_theta, size.transformer.rope_max_pos)
    args = (q, k, *weights, 1e-6, cos, sin)
    out, ref = table[rms_norm_rope_qk].run(*args), rms_norm_rope_qk(*args)
    errors = torch.cat([(o.float() - r.float()).flatten() for o, r in zip(out, ref, strict=True)]).abs()
    checks.le("q/k norm + RoPE kernel, max |Δ|", errors.max().item(), 2e-2)
    checks.le("q/k norm + RoPE kernel, share of values that differ", (errors > 0).float().mean().item(), 2e-3)
    hidden = torch.randn(2 * tokens, 4 * dim, device=size.device, generator=gen, dtype=torch.bfloat16) * 3
    for step, differing in ((fp8._quantize_rows, 0.0), (fp8._gelu_quantize_rows, 0.01)):
        (values, scales), (ref_values, ref_scales) = table[step].run(hidden), step.compiled(hidden)
        checks.true(f"{step.__name__} kernel: scales equal the compiled step's", torch.equal(scales, ref_scales))
        share = (values.float() != ref_values.float()).float().mean().item()
        checks.le(f"{step.__name__} kernel: share of e4m3 values one step apart", share, differing)


def check_vae(checks: Checks, size: Size) -> None:
    """The decoder (0.9.1: noise, timestep conditioning) and encoder, COMPILED and FUSED against plain."""
    weights = vae_decode.random_weights(size.vae, torch.device(size.device), torch.bfloat16)
    vae = VideoVAE.from_state_dict(size.vae, weights, device=size.device).eval()
    exact_vae = VideoVAE.from_state_dict(size.vae, weights, dtype=torch.float32, device=size.device).eval()
    gen = torch.Generator(device=size.device).manual_seed(3)
    z = torch.randn(1, size.vae.latent_channels, *size.latent, device=size.device, generator=gen)

    def decode(model: VideoVAE, ops: Ops, dtype: torch.dtype) -> torch.Tensor:
        noise = torch.Generator(device=size.device).manual_seed(7)
        latents = z.to(dtype)
        return run_with(
            model, ops, lambda: model.decode(latents, 0.05, noise_scale=0.025, generator=noise, tiling="off")
        )

    exact, plain = decode(exact_vae, PLAIN, torch.float32), decode(vae, PLAIN, torch.bfloat16)
    for ops in (COMPILED, FUSED):
        against_plain(checks, f"VAE decode {ops.name}", decode(vae, ops, torch.bfloat16), plain, exact)
    # the encoder on the first 1 + 8·3 frames: in float32 the whole video's activations would need ~100 GB
    video = plain[:, :, :25].clamp(-1, 1)
    exact = run_with(exact_vae, PLAIN, lambda: exact_vae.encode(video.float(), tiling="off"))
    plain = run_with(vae, PLAIN, lambda: vae.encode(video, tiling="off"))
    for ops in (COMPILED, FUSED):
        fast = run_with(vae, ops, lambda: vae.encode(video, tiling="off"))
        against_plain(checks, f"VAE encode {ops.name}", fast, plain, exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny models on the CPU (checks that the script runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    size = small_size() if args.small else FULL
    if size.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run with --small to check the script on the CPU")
    set_fusion(True, devices=(size.device,))  # the CPU compiles too under --small
    checks = Checks()
    with torch.inference_mode():
        torch.manual_seed(0)
        check_transformer(checks, size)
        check_kernels(checks, size)
        check_vae(checks, size)
    set_fusion(True)
    print(f"{len(checks.failed)} failed" + (f": {', '.join(checks.failed)}" if checks.failed else ", all passed"))
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
