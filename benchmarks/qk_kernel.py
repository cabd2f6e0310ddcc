"""The Triton query/key kernel (`qk_norm_rope`) against the torch.compile'd `rms_norm_rope` called for
q and for k, at the 2B model's self-attention shape: q, k (2, 6144, 2048) bf16, cos/sin (1, 6144, 1024)
float32; each timed call runs it 28 times, as one forward does. Usage: python benchmarks/qk_kernel.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformer_forward import time_cuda  # noqa: E402

from ltx_core import LTXV_2B, video_positions  # noqa: E402
from ltx_core.model.kernels import qk_norm_rope  # noqa: E402
from ltx_core.model.rope import rope_tables  # noqa: E402
from ltx_core.model.transformer import rms_norm_rope  # noqa: E402

LAYERS, LATENT, ITERS = 28, (16, 16, 24), 20


def median_ms(fn) -> float:
    return statistics.median(time_cuda(fn, ITERS))  # after 3 warm-ups (they compile)


def main() -> None:
    gen = torch.Generator("cuda").manual_seed(0)
    q, k = (torch.randn(2, 6144, 2048, device="cuda", generator=gen).bfloat16() for _ in range(2))
    qw, kw = (1 + 0.1 * torch.randn(2048, device="cuda", generator=gen).bfloat16() for _ in range(2))
    positions = video_positions(*LATENT, frame_rate=25.0, causal_fix=False, device="cuda")
    cos, sin = rope_tables(positions, 2048, LTXV_2B.rope_theta, LTXV_2B.rope_max_pos)
    eps = LTXV_2B.qk_norm_eps

    def triton_path() -> tuple[torch.Tensor, torch.Tensor]:
        return qk_norm_rope(q, k, qw, kw, eps, cos, sin)

    def compiled_path() -> tuple[torch.Tensor, torch.Tensor]:
        return rms_norm_rope(q, qw, eps, cos, sin), rms_norm_rope(k, kw, eps, cos, sin)

    with torch.inference_mode():
        delta = max(
            (a.float() - b.float()).abs().max().item() for a, b in zip(triton_path(), compiled_path(), strict=True)
        )
        moved = 4 * q.nbytes + cos.nbytes + sin.nbytes  # read q, k, cos, sin; write q, k
        for name, path in (("triton qk_norm_rope", triton_path), ("compiled rms_norm_rope ×2", compiled_path)):
            ms = median_ms(lambda path=path: [path() for _ in range(LAYERS)])
            print(f"{name:28s} {ms:7.2f} ms per {LAYERS} layers, {moved * LAYERS / ms / 1e6:6.0f} GB/s")
    print(f"max |Δ| triton vs compiled: {delta:.4g} ({torch.cuda.get_device_name()})")


if __name__ == "__main__":
    main()
