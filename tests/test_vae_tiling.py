"""Bounded-memory VAE encode/decode: exact temporal encode chunks, tiled ≈ untiled within a stated
tolerance, plans from a memory budget, the out-of-memory retry and seeded noise under tiling
(tiny random weights, CPU)."""

from __future__ import annotations

import pytest
import torch
from test_vae import tiny_vae

from ltx_core.config import VAE_090, VAE_091, VAE_095
from ltx_core.model.vae.tiling import (
    CALL_OVERHEAD,
    CPU_BUDGET,
    LIVE_TENSORS,
    MIN_PLAN,
    TilingPlan,
    decoder_bytes_per_pixel,
    default_budget,
    encoder_bytes_per_pixel,
    plan_decode,
    plan_encode,
    shrink_plan,
)
from tiny import TINY_VAE_LAYOUTS


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """mean |a − b| / mean |b|"""
    return ((a - b).abs().mean() / b.abs().mean()).item()


def _video(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- encode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", TINY_VAE_LAYOUTS)
@pytest.mark.parametrize("frames", [1, 2, 3])
def test_temporal_encode_chunks_are_exact(layout, frames):
    """Chunks of 8·frames pixel frames after frame 0, every causal conv and time fold fed the previous
    chunk's last frames: the whole video's latents to float rounding (measured ≤ 2.5e-6)."""
    vae = tiny_vae(layout)
    video = _video((1, 3, 41, 32, 64))
    with torch.no_grad():
        full = vae.encode(video, tiling="off")
        chunked = vae.encode(video, tiling=TilingPlan(tile=8, overlap=1, frames=frames, frame_overlap=0))
    assert chunked.shape == full.shape == (1, 16, 6, 1, 2)
    assert (chunked - full).abs().max() <= 1e-5


def test_spatial_encode_tiles_are_close_to_untiled():
    """Stated tolerance: mean |error| ≤ 8 % of mean |latent| (measured 5.8 % with the edge-skipping
    cross-fade, 10.3 % with a plain linear one) for 192-pixel tiles overlapping by 128 on this tiny random
    encoder, whose receptive field is far wider than a trained one's. Posterior samples are drawn once
    for the whole latent, so sampling adds no further error."""
    vae = tiny_vae("0.9.5")
    video = _video((1, 3, 9, 256, 256))
    with torch.no_grad():
        full = vae.encode(video, tiling="off")
        tiled = vae.encode(video, tiling=TilingPlan(tile=6, overlap=4, frames=1, frame_overlap=0))
    assert _relative(tiled, full) <= 0.08


def test_single_tile_encode_and_its_samples_match_untiled():
    vae = tiny_vae("0.9.5")
    video = _video((1, 3, 17, 64, 64))
    whole_tile = TilingPlan(tile=2, overlap=1, frames=1, frame_overlap=0)
    with torch.no_grad():
        assert (vae.encode(video, tiling=whole_tile) - vae.encode(video, tiling="off")).abs().max() <= 1e-5
        sampled = [
            vae.encode(video, sample=True, generator=torch.Generator().manual_seed(3), tiling=plan)
            for plan in ("off", whole_tile)
        ]
    assert (sampled[0] - sampled[1]).abs().max() <= 1e-5


# --- decode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latent", "plan", "tolerance"),
    [
        ((1, 16, 3, 12, 12), TilingPlan(tile=9, overlap=6, frames=3, frame_overlap=1), 0.06),  # spatial tiles
        ((1, 16, 7, 2, 2), TilingPlan(tile=4, overlap=2, frames=6, frame_overlap=4), 0.08),  # temporal chunks
    ],
)
def test_tiled_decode_is_close_to_untiled(latent, plan, tolerance):
    """Stated tolerance: mean |error| ≤ 6 % (spatial) / 8 % (temporal) of mean |output|. Measured on
    this tiny random decoder (receptive field far wider than a trained one's): 3.9 % spatial, 6.2 %
    temporal with the edge-skipping cross-fade (7.5 % and 7.7 % with a plain linear one). Short temporal
    overlaps cost more here (4-frame chunks sharing 2: 27 %)."""
    vae = tiny_vae("0.9.5")
    z = torch.randn(latent, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = vae.decode(z, 0.05, tiling="off")
        tiled = vae.decode(z, 0.05, tiling=plan)
    assert tiled.shape == full.shape
    assert _relative(tiled, full) <= tolerance


def test_single_piece_decode_is_exact():
    vae = tiny_vae("0.9.5")
    z = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = vae.decode(z, 0.05, tiling=TilingPlan(tile=3, overlap=2, frames=3, frame_overlap=1))
        assert (whole - vae.decode(z, 0.05, tiling="off")).abs().max() <= 1e-5


def test_tiled_decode_noise_is_seeded():
    """The decode-noise mix is drawn for the whole latent and every piece replays the same injected-noise
    maps: reproducible per seed, temporal chunks see the untiled maps (so the error matches the
    noise-free case) and a single piece equals the untiled decode."""
    vae = tiny_vae("0.9.1")
    z = torch.randn(1, 16, 4, 1, 3, generator=torch.Generator().manual_seed(0))

    def decode(seed: int, plan: TilingPlan | str, noise: float = 0.025) -> torch.Tensor:
        with torch.no_grad():
            generator = torch.Generator().manual_seed(seed)
            return vae.decode(z, 0.05, noise_scale=noise, generator=generator, tiling=plan)

    tiles = TilingPlan(tile=2, overlap=1, frames=3, frame_overlap=2)
    chunks = TilingPlan(tile=4, overlap=1, frames=3, frame_overlap=2)
    untiled = decode(0, "off")
    first = decode(0, tiles)
    assert torch.equal(first, decode(0, tiles))
    assert (first - decode(1, tiles)).abs().max() > 1e-3
    assert (decode(0, TilingPlan(tile=4, overlap=1, frames=8)) - untiled).abs().max() <= 1e-5
    with_noise = _relative(decode(0, chunks), untiled)
    without = _relative(decode(0, chunks, noise=0.0), decode(0, "off", noise=0.0))
    assert with_noise <= 1.2 * without


# --- memory budget and out-of-memory retry ----------------------------------------------------------


def test_default_budget_on_cpu():
    assert default_budget("cpu") == CPU_BUDGET


@pytest.mark.parametrize("config", [VAE_090, VAE_091, VAE_095])
def test_estimates_follow_the_widest_stage(config):
    """The widest activation of every released VAE is the full-resolution stage: 128 channels at H/4 × W/4
    (8 elements per pixel), times the live copies (calibrated on an H100, see tiling.py)."""
    assert decoder_bytes_per_pixel(config, torch.bfloat16) == LIVE_TENSORS * 8 * 2
    assert encoder_bytes_per_pixel(config, torch.float32) == LIVE_TENSORS * 8 * 4


def test_decode_plan_follows_the_memory_budget():
    shape = (1, 128, 16, 16, 24)  # 768×512×121
    per_pixel = decoder_bytes_per_pixel(VAE_091, torch.bfloat16)
    assert plan_decode(VAE_091, shape, 10**15, torch.bfloat16) is None
    chunked = plan_decode(VAE_091, shape, 3 * 2**30, torch.bfloat16)
    assert chunked is not None and chunked.tile >= 24 and chunked.frames < 16  # whole frames, shorter chunks
    tiled = plan_decode(VAE_091, shape, 2 * 2**30, torch.bfloat16)
    assert tiled is not None and 4 < tiled.tile < 24
    assert (8 * (tiled.frames - 1) + 1) * (32 * tiled.tile) ** 2 * per_pixel <= 2 * 2**30
    assert plan_decode(VAE_091, shape, 1, torch.bfloat16) == MIN_PLAN


def test_encode_plan_prefers_exact_temporal_chunks():
    shape = (1, 3, 121, 512, 768)
    per_pixel = encoder_bytes_per_pixel(VAE_091, torch.bfloat16)
    assert plan_encode(VAE_091, shape, 10**15, torch.bfloat16) is None
    plan = plan_encode(VAE_091, shape, int(50 * 512 * 768 * per_pixel) + CALL_OVERHEAD, torch.bfloat16)
    assert plan is not None and plan.tile >= 24 and 8 * plan.frames + 1 <= 50
    small = plan_encode(VAE_091, shape, 2**28, torch.bfloat16)
    assert small is not None and small.tile < 24 and small.frames == 1


def test_shrink_plan_halves_until_the_minimum():
    plan, steps = None, 0
    while (plan := shrink_plan(plan, (1, 128, 16, 16, 24))) is not None:
        steps += 1
        assert steps < 10
    assert steps >= 3


def test_out_of_memory_is_retried_with_smaller_tiles(monkeypatch):
    """A decoder that 'runs out of memory' above 40 latent elements per call: auto tiling falls back from
    the untiled decode to `shrink_plan`'s first plan and returns exactly what that plan gives."""
    vae = tiny_vae("0.9.5")
    z = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    decoder_forward = vae.decoder.forward
    calls = []

    def limited(x: torch.Tensor, *args: object) -> torch.Tensor:
        calls.append(tuple(x.shape[2:]))
        if x.shape[2:].numel() > 40:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return decoder_forward(x, *args)

    monkeypatch.setattr(vae.decoder, "forward", limited)
    with torch.no_grad():
        retried = vae.decode(z, 0.05, tiling="auto", memory_budget=10**15)
        expected = vae.decode(z, 0.05, tiling=shrink_plan(None, z.shape))
    assert calls[0] == (3, 4, 4) and torch.equal(retried, expected)
    monkeypatch.setattr(vae.decoder, "forward", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    with pytest.raises(torch.OutOfMemoryError, match="every plan tried .*untiled.*lower the resolution"):
        vae.decode(z, 0.05, tiling="auto", memory_budget=10**15)


def test_bad_tiling_arguments_raise():
    vae = tiny_vae("0.9.0")
    with pytest.raises(ValueError, match="overlap < tile"):
        TilingPlan(tile=4, overlap=4)
    with pytest.raises(ValueError, match="'auto', 'off' or a TilingPlan"):
        vae.decode(torch.zeros(1, 16, 2, 1, 1), tiling="on")
    with pytest.raises(ValueError, match="frame_overlap ≥ 1"):
        vae.decode(torch.zeros(1, 16, 4, 1, 1), tiling=TilingPlan(frames=2, frame_overlap=0))
