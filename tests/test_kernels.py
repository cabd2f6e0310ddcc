"""The Triton kernels against the plain paths they replace, run on the CPU by Triton's interpreter:
the query/key kernel (F.rms_norm + apply_rope) and the VAE's norm_silu_pad; and the callers' choice
between kernel and plain path.

The interpreter must be switched on (TRITON_INTERPRET=1) before Triton is imported, so the kernel runs
in a child process (this file as a script), which prints its measurements as JSON for the tests to
judge. The interpreter truncates float32 → bfloat16 where the GPU rounds to nearest even; the child
makes it round like the GPU, so bf16 results are compared at their real precision.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ltx_core.model import fusion, kernels, transformer
from ltx_core.model.kernels import triton_available
from ltx_core.model.vae import blocks, convolution

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# (dtype, D, batch of the cos/sin tables): D = 64 has padding pairs (D % 6 = 4), 96 and 100 have
# D / 2 not a power of two (100 with padding too), 2048 is the 2B model's width.
CASES = [(dtype, dim, tables) for dtype in DTYPES for dim in (64, 96, 100) for tables in (1, 2)]
CASES += [("bfloat16", 2048, 1)]
BATCH, LATENT = 2, (2, 3, 4)
# bf16: the kernel's float32 sums run in another order than torch's, which flips the rounding of a
# few normed values by one ulp: bit-exact on these cases, max |Δ| 0.008 in < 0.01 % of the values of
# larger runs (|values| up to ~5). Skipping the rounding of the normed values differs in ~75 % of them.
MAX_ERROR = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 4e-3}
MAX_DIFFERING = {"float32": 1.0, "bfloat16": 2e-3, "float16": 2e-3}

# norm_silu_pad: (dtype, channels, with bias + noise + adaLN, time padding front/back, spatial
# padding: none for "zeros" (left to the convolution), else one pixel); 6 channels are not a power
# of two, 128 is the width of the decoder's last stage. The kernel computes in float32 and rounds
# once, so it is compared with the plain path run in float32: float32 within 1e-5 (values up to
# ~5), bf16 within half a bf16 step, 2⁻⁸ of the value.
VAE_CASES = [
    (dtype, channels, extras, padding, "zeros")
    for dtype in ("float32", "bfloat16")
    for channels in (6, 128)
    for extras in (True, False)
    for padding in ((2, 0), (1, 1))
]
VAE_CASES += [
    (dtype, 6, True, padding, mode)
    for dtype in ("float32", "bfloat16")
    for padding in ((2, 0), (1, 1))
    for mode in ("reflect", "replicate")
]
VAE_MAX_ERROR = 1e-5  # float32
VAE_MAX_RELATIVE_ERROR = 2**-8 + 1e-6  # bfloat16

# add_noise_and_skip: (dtype, channels, with bias + noise); the kernel adds in the plain path's order
# in float32, so float32 is exact and bf16 within half a bf16 step.
SKIP_CASES = [
    (dtype, channels, extras) for dtype in ("float32", "bfloat16") for channels in (6, 128) for extras in (True, False)
]

# quantize_rows_kernel: (dtype, row width, with GELU); 48 is not a power of two, 8192 is the 2B
# model's feed-forward width. Without GELU the kernel does the plain path's arithmetic exactly; with
# it, its tanh (from exp) differs from torch's in the last float32 bits, which moves a few values
# to the neighbouring e4m3 step (2⁻³ of the value).
QUANTIZE_CASES = [
    (dtype, cols, gelu) for dtype in ("float32", "bfloat16") for cols in (48, 8192) for gelu in (False, True)
]


def _case_name(dtype: str, dim: int, tables: int) -> str:
    return f"{dtype}-D{dim}-tables{tables}"


def _quantize_case_name(dtype: str, cols: int, gelu: bool) -> str:
    return f"{dtype}-K{cols}-{'gelu' if gelu else 'plain'}"


def _vae_case_name(dtype: str, channels: int, extras: bool, padding: tuple[int, int], space_mode: str) -> str:
    return f"{dtype}-C{channels}-{'all' if extras else 'norm-only'}-pad{padding[0]}{padding[1]}-{space_mode}"


def _measure() -> dict[str, dict[str, float]]:
    """Run in the child: the kernel against the plain path, per case, plus two negative controls."""
    import numpy as np
    import torch.nn.functional as F
    import triton.language as tl
    from triton.runtime import interpreter

    from ltx_core.model.kernels import qk_norm_rope
    from ltx_core.model.rope import apply_rope, rope_tables, video_positions

    truncating = interpreter._convert_float

    def convert_float(data, input_dtype, output_dtype, rounding_mode):
        if input_dtype == tl.float32 and output_dtype == tl.bfloat16:  # round to nearest even, as the GPU
            rounded = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(torch.bfloat16)
            return rounded.view(torch.int16).numpy().view(np.uint16)
        if input_dtype == tl.float32 and output_dtype == tl.float8e4nv:  # likewise (the GPU saturates at 448)
            rounded = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(torch.float8_e4m3fn)
            return rounded.view(torch.uint8).numpy()
        return truncating(data, input_dtype, output_dtype, rounding_mode)

    interpreter._convert_float = convert_float

    def plain(x, weight, cos, sin):
        return apply_rope(F.rms_norm(x, (x.shape[-1],), weight, 1e-6), cos, sin).float()

    results = {}
    for dtype_name, dim, tables in CASES:
        dtype, gen = DTYPES[dtype_name], torch.Generator().manual_seed(dim + tables)
        positions = video_positions(*LATENT, frame_rate=25.0, causal_fix=True)
        positions = positions + torch.arange(tables)[:, None, None] * 3  # distinct tables per sample
        cos, sin = rope_tables(positions, dim, 10000.0, (20, 2048, 2048))
        q, k = (scale * torch.randn(BATCH, positions.shape[-1], dim, generator=gen) for scale in (1, 3))
        q_weight, k_weight = (1 + 0.1 * torch.randn(dim, generator=gen) for _ in range(2))
        q, k, q_weight, k_weight = (t.to(dtype) for t in (q, k, q_weight, k_weight))
        q_out, k_out = qk_norm_rope(q, k, q_weight, k_weight, 1e-6, cos, sin)
        q_ref, k_ref = plain(q, q_weight, cos, sin), plain(k, k_weight, cos, sin)
        errors = torch.cat([(q_out.float() - q_ref).flatten(), (k_out.float() - k_ref).flatten()]).abs()
        results[_case_name(dtype_name, dim, tables)] = {
            "max_error": errors.max().item(),
            "differing": (errors > 0).float().mean().item(),
            "dtype_kept": q_out.dtype == k_out.dtype == dtype,
        }
        if (dtype_name, dim, tables) == ("float32", 96, 2):
            swapped = qk_norm_rope(q, k, q_weight, k_weight, 1e-6, sin, cos)[0]
            unweighted = qk_norm_rope(q, k, torch.ones_like(q_weight), k_weight, 1e-6, cos, sin)[0]
            results["controls"] = {
                "swapped_cos_sin": (swapped - q_ref).abs().max().item(),
                "no_weight": (unweighted - q_ref).abs().max().item(),
            }
    results.update(_measure_vae())
    results.update(_measure_quantize())
    results.update(_measure_skip())
    return results


def _measure_skip() -> dict[str, dict[str, float]]:
    """add_noise_and_skip_kernel against the plain function, per case."""
    from ltx_core.model.kernels import add_noise_and_skip_kernel
    from ltx_core.model.vae.blocks import _add_noise_and_skip

    results = {}
    for dtype_name, channels, extras in SKIP_CASES:
        gen = torch.Generator().manual_seed(channels)
        h, skip = (torch.randn(BATCH, channels, 3, 4, 5, generator=gen) for _ in range(2))
        extra = [torch.randn(channels, generator=gen), torch.randn(4, 5, generator=gen)]
        extra += [torch.randn(channels, generator=gen)]
        h, skip, *extra = (t.to(DTYPES[dtype_name]) for t in (h, skip, *extra))
        bias, noise, noise_scale = extra if extras else (None, None, None)
        out = add_noise_and_skip_kernel(h, bias, noise, noise_scale, skip)
        as_float = (None if t is None else t.float() for t in (h, bias, noise, noise_scale, skip))
        ref = _add_noise_and_skip.__wrapped__(*as_float)
        results[f"skip-{dtype_name}-C{channels}-{extras}"] = {
            "max_error": (out.float() - ref).abs().max().item(),
            "max_relative_error": ((out.float() - ref).abs() / ref.abs().clamp(min=1e-3)).max().item(),
            "layout_ok": out.shape == h.shape and out.is_contiguous(memory_format=torch.channels_last_3d),
        }
    return results


def _measure_quantize() -> dict[str, dict[str, float]]:
    """quantize_rows_kernel against the plain fp8.quantize_rows / gelu_quantize_rows, per case."""
    from ltx_core.model.fp8 import _gelu_quantize_rows, _quantize_rows
    from ltx_core.model.kernels import quantize_rows_kernel

    results = {}
    for dtype_name, cols, gelu in QUANTIZE_CASES:
        gen = torch.Generator().manual_seed(cols)
        x = torch.randn(6, cols, generator=gen) * torch.tensor([1e-3, 0.1, 1, 10, 100, 0.0])[:, None]
        x = x.to(DTYPES[dtype_name])
        values, scales = quantize_rows_kernel(x, gelu=gelu)
        plain = (_gelu_quantize_rows if gelu else _quantize_rows).__wrapped__
        ref_values, ref_scales = plain(x)
        results[_quantize_case_name(dtype_name, cols, gelu)] = {
            "scale_error": ((scales - ref_scales).abs() / ref_scales).max().item(),
            "values_differing": (values.float() != ref_values.float()).float().mean().item(),
            "dequantized_error": (values.float() * scales - ref_values.float() * ref_scales).abs().max().item()
            / (ref_values.float() * ref_scales).abs().max().item(),
            "dtypes_ok": values.dtype == torch.float8_e4m3fn and scales.dtype == torch.float32,
        }
    return results


def _measure_vae() -> dict[str, dict[str, float]]:
    """norm_silu_pad_kernel against the plain function, per VAE case, plus negative controls."""
    from ltx_core.model.kernels import norm_silu_pad_kernel
    from ltx_core.model.vae.convolution import _norm_silu_pad

    plain = _norm_silu_pad.__wrapped__
    results = {}
    for dtype_name, channels, extras, (front, back), space_mode in VAE_CASES:
        space = 0 if space_mode == "zeros" else 1
        gen = torch.Generator().manual_seed(channels + front)
        x = 1.5 * torch.randn(BATCH, channels, 3, 4, 5, generator=gen) + 0.3
        inputs = [0.5 * torch.randn(channels, generator=gen), torch.randn(4, 5, generator=gen)]
        inputs += [0.2 * torch.randn(channels, generator=gen)]
        inputs += [0.2 * torch.randn(BATCH, channels, generator=gen) for _ in range(2)]  # shift, scale
        if not extras:
            inputs = [None] * 5
        x, *inputs = (None if t is None else t.to(DTYPES[dtype_name]) for t in (x, *inputs))
        out = norm_silu_pad_kernel(x, *inputs, front, back, 1e-8, space, space_mode)
        ref = plain(x.float(), *(None if t is None else t.float() for t in inputs), front, back, space_mode, space)
        results[_vae_case_name(dtype_name, channels, extras, (front, back), space_mode)] = {
            "max_error": (out.float() - ref).abs().max().item(),
            "max_relative_error": ((out.float() - ref).abs() / ref.abs().clamp(min=1e-3)).max().item(),
            "shape_ok": out.shape == ref.shape and out.dtype == x.dtype,
            "channels_last": out.is_contiguous(memory_format=torch.channels_last_3d),
        }
        if (dtype_name, channels, extras, front, space) == ("float32", 6, True, 1, 0):
            bias, noise, noise_scale, shift, scale = inputs
            no_bias = norm_silu_pad_kernel(x, None, noise, noise_scale, shift, scale, front, back, 1e-8)
            no_noise = norm_silu_pad_kernel(x, bias, None, None, shift, scale, front, back, 1e-8)
            results["vae-controls"] = {
                "no_bias": (no_bias - ref).abs().max().item(),
                "no_noise": (no_noise - ref).abs().max().item(),
            }
    return results


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, float]] | None:
    """The child's measurements, or None without Triton (the tests then skip in their body, where a
    skip counts as a failure under LTX_REQUIRE_ORACLES=1)."""
    if importlib.util.find_spec("triton") is None:
        return None
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": pythonpath}
    child = subprocess.run(
        [sys.executable, __file__], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.splitlines()[-1])


def _results(measured: dict[str, dict[str, float]] | None) -> dict[str, dict[str, float]]:
    if measured is None:
        pytest.skip("triton is not installed (pip install triton), so the Triton kernel cannot be checked")
    return measured


@pytest.mark.parity
@pytest.mark.parametrize("case", CASES, ids=[_case_name(*case) for case in CASES])
def test_kernel_matches_the_plain_path(measured, case):
    result = _results(measured)[_case_name(*case)]
    assert result["dtype_kept"]
    assert result["max_error"] <= MAX_ERROR[case[0]], result
    assert result["differing"] <= MAX_DIFFERING[case[0]], result


@pytest.mark.parity
@pytest.mark.parametrize("case", VAE_CASES, ids=[_vae_case_name(*case) for case in VAE_CASES])
def test_vae_kernel_matches_the_plain_path(measured, case):
    result = _results(measured)[_vae_case_name(*case)]
    assert result["shape_ok"] and result["channels_last"], result
    if case[0] == "float32":
        assert result["max_error"] <= VAE_MAX_ERROR, result
    else:
        assert result["max_relative_error"] <= VAE_MAX_RELATIVE_ERROR, result


@pytest.mark.parity
@pytest.mark.parametrize("case", QUANTIZE_CASES, ids=[_quantize_case_name(*case) for case in QUANTIZE_CASES])
def test_quantize_kernel_matches_the_plain_path(measured, case):
    result = _results(measured)[_quantize_case_name(*case)]
    assert result["dtypes_ok"], result
    if case[2]:  # GELU
        assert result["scale_error"] <= 1e-6 and result["values_differing"] <= 0.01, result
        assert result["dequantized_error"] <= 2**-4, result  # at most one e4m3 step of the largest value
    else:
        assert result["scale_error"] == 0 and result["values_differing"] == 0, result


@pytest.mark.parity
@pytest.mark.parametrize("case", SKIP_CASES, ids=[f"{d}-C{c}-{e}" for d, c, e in SKIP_CASES])
def test_skip_kernel_matches_the_plain_path(measured, case):
    dtype, channels, extras = case
    result = _results(measured)[f"skip-{dtype}-C{channels}-{extras}"]
    assert result["layout_ok"], result
    if dtype == "float32":
        assert result["max_error"] == 0, result
    else:
        assert result["max_relative_error"] <= VAE_MAX_RELATIVE_ERROR, result


@pytest.mark.parity
def test_vae_kernel_uses_bias_and_noise(measured):
    controls = _results(measured)["vae-controls"]
    assert controls["no_bias"] >= 1e-2
    assert controls["no_noise"] >= 1e-2


@pytest.mark.parity
def test_wrong_tables_or_weight_are_caught(measured):
    controls = _results(measured)["controls"]
    assert controls["swapped_cos_sin"] >= 1e-2
    assert controls["no_weight"] >= 1e-2


def test_not_available_on_the_cpu():
    assert not triton_available(torch.zeros(1))


@pytest.mark.parametrize("enabled", [True, False])
def test_attention_uses_the_kernel_when_fusing(monkeypatch, enabled):
    calls = []

    def fake_kernel(q, k, *args):
        calls.append(q.shape)
        return q, k

    monkeypatch.setattr(kernels, "triton_available", lambda t: True)
    monkeypatch.setattr(kernels, "qk_norm_rope", fake_kernel)
    fusion.set_fusion(enabled, devices=("cpu",))
    try:
        attn = transformer.Attention(8, 2, 8, 1e-6)
        for p in attn.parameters():
            torch.nn.init.normal_(p)
        rope = (torch.ones(1, 5, 4), torch.zeros(1, 5, 4))
        with torch.no_grad():
            attn(torch.randn(2, 5, 8), rope=rope)
            attn(torch.randn(2, 5, 8), context=torch.randn(2, 3, 8))  # cross-attention: never
    finally:
        fusion.set_fusion(True)
    assert calls == ([torch.Size([2, 5, 8])] if enabled else [])


@pytest.mark.parametrize("enabled", [True, False])
def test_vae_convolution_uses_the_kernel_when_fusing(monkeypatch, enabled):
    calls = []

    def fake_kernel(x, bias, noise, noise_scale, shift, scale, front, back, eps, *space):
        calls.append((x.shape, bias is not None, noise is not None, shift is not None, front, back))
        return convolution.pad_time(x, front, back)

    monkeypatch.setattr(kernels, "triton_available", lambda t: True)
    monkeypatch.setattr(kernels, "norm_silu_pad_kernel", fake_kernel)
    fusion.set_fusion(enabled, devices=("cpu",))
    try:
        conv = convolution.CausalConv3d(4, 4)
        for p in conv.parameters():
            torch.nn.init.normal_(p)
        x, bias = torch.randn(1, 4, 3, 2, 2), torch.randn(4)
        with torch.no_grad():
            conv(x, convolution.Prologue(bias=bias, shift=torch.zeros(1, 4), scale=torch.zeros(1, 4)))
            conv(x)  # no prologue: never
    finally:
        fusion.set_fusion(True)
    assert calls == ([(x.shape, True, False, True, 2, 0)] if enabled else [])


if __name__ == "__main__":  # the child process, with TRITON_INTERPRET=1
    print(json.dumps(_measure()))


def test_a_failing_kernel_falls_back_to_the_plain_path(monkeypatch, caplog):
    """A kernel that cannot run (a Triton that cannot build for the GPU, say) is logged once, and
    this and every later call take the plain path instead of stopping the generation."""
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("no kernel for this GPU")

    monkeypatch.setattr(kernels, "triton_available", lambda t: True)
    monkeypatch.setattr(kernels, "_failed", [])
    monkeypatch.setattr(kernels, "norm_silu_pad_kernel", broken)
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)  # the plain path, not compiled for the CPU
    fusion.set_fusion(True, devices=("cpu",))
    try:
        conv = convolution.CausalConv3d(4, 4)
        for p in conv.parameters():
            torch.nn.init.normal_(p)
        x = torch.randn(1, 4, 3, 2, 2)
        with torch.no_grad(), caplog.at_level("WARNING"):
            outputs = [conv(x, convolution.Prologue()) for _ in range(2)]
    finally:
        fusion.set_fusion(True)
    with torch.no_grad():
        expected = conv(x, convolution.Prologue())  # fusion off for the CPU again: the plain path
    assert all(torch.allclose(out, expected, atol=1e-6) for out in outputs)
    assert calls == [1] and not kernels.kernels_usable(x)
    assert sum("using the plain path" in r.message for r in caplog.records) == 1


def _conv_with_kernel(monkeypatch, kernel) -> tuple[torch.nn.Module, torch.Tensor]:
    """A VAE convolution whose fused prologue runs `kernel`, with fusion on for the CPU."""
    monkeypatch.setattr(kernels, "triton_available", lambda t: True)
    monkeypatch.setattr(kernels, "_failed", [])
    monkeypatch.setattr(kernels, "norm_silu_pad_kernel", kernel)
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)
    conv = convolution.CausalConv3d(4, 4)
    for p in conv.parameters():
        torch.nn.init.normal_(p)
    return conv, torch.randn(1, 4, 3, 2, 2)


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), RuntimeError("Triton: out of memory")],
    ids=["torch", "triton"],
)
def test_out_of_memory_in_a_kernel_propagates_and_switches_nothing_off(monkeypatch, error):
    """An injected out-of-memory reaches the caller as torch.OutOfMemoryError (what the VAE's tiling
    retry catches), and the kernel stays in use: the next call runs it."""
    calls = []

    def short_of_memory_once(x, bias, noise, noise_scale, shift, scale, front, back, eps, *space):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return convolution.pad_time(x, front, back)

    conv, x = _conv_with_kernel(monkeypatch, short_of_memory_once)
    fusion.set_fusion(True, devices=("cpu",))
    try:
        with torch.no_grad():
            with pytest.raises(torch.OutOfMemoryError, match="out of memory"):
                conv(x, convolution.Prologue())
            assert kernels.kernels_usable(x)
            conv(x, convolution.Prologue())
    finally:
        fusion.set_fusion(True)
    assert calls == [1, 1] and not kernels._failed


def test_out_of_memory_in_a_compiled_function_propagates_and_keeps_it_compiled(monkeypatch):
    compiled_calls = []

    def compile_short_of_memory_once(fn, **options):
        def run(*args):
            compiled_calls.append(1)
            if len(compiled_calls) == 1:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return fn(*args)

        return run

    monkeypatch.setattr(torch, "compile", compile_short_of_memory_once)
    double = fusion.fused(lambda x: 2 * x)
    fusion.set_fusion(True, devices=("cpu",))
    try:
        with pytest.raises(torch.OutOfMemoryError):
            double(torch.ones(2))
        assert torch.equal(double(torch.ones(2)), torch.full((2,), 2.0))
    finally:
        fusion.set_fusion(True)
    assert compiled_calls == [1, 1]  # the second call ran compiled again


def test_vae_tiling_retries_an_injected_out_of_memory_with_the_kernels_on(monkeypatch, caplog):
    """The VAE's automatic tiling provokes out-of-memory on purpose: a kernel that meets it during the
    untiled attempt lets it through to the retry, and the tiled decode still uses the kernels."""
    from ltx_core import VAEConfig, VideoVAE
    from tiny import TINY_VAE_LAYOUTS, random_vae_state_dict

    with torch.device("meta"):
        vae = VideoVAE(VAEConfig.from_metadata(TINY_VAE_LAYOUTS["0.9.1"][0]))
    vae.load_state_dict(random_vae_state_dict({k: v.shape for k, v in vae.state_dict().items()}, 3), assign=True)
    latents = torch.randn(1, vae.config.latent_channels, 2, 2, 2)
    plain = vae.decode(latents, 0.05, tiling="off")
    calls = []

    def kernel(x, bias, noise, noise_scale, shift, scale, front, back, eps, space, space_mode):
        calls.append(x.shape[-1])
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        plain = convolution._norm_silu_pad.__wrapped__  # standing in for the kernel
        return plain(x, bias, noise, noise_scale, shift, scale, front, back, space_mode, space)

    _conv_with_kernel(monkeypatch, kernel)
    monkeypatch.setattr(kernels, "add_noise_and_skip_kernel", blocks._add_noise_and_skip.__wrapped__)
    fusion.set_fusion(True, devices=("cpu",))
    try:
        with torch.no_grad():
            tiled = vae.decode(latents, 0.05, tiling="auto", memory_budget=2**40)
        usable = kernels.kernels_usable(latents)
    finally:
        fusion.set_fusion(True)
    assert len(calls) > 2 and not kernels._failed and usable
    assert tiled.shape == plain.shape and "retrying with TilingPlan" in caplog.text
