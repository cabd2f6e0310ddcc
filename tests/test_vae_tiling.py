"""Bounded-memory VAE encode/decode on tiny random models (CPU): temporal chunks are exact for both halves,
spatial tiles stay within the stated bound on every layout, several independently seeded models and every
plan the planner can choose, tiles see the untiled decode's injected noise, plans follow the memory
budget and stop at the bound with an error naming the memory needed, and out-of-memory is retried.

The bound: tiled against untiled, mean |error| / mean |output| and max |error| / max |output|. It is
measured on random tiny models, whose receptive field (8.6–12.1 latent pixels) is a third of a released
model's; the overlap scales with the receptive field of each layout, but what the error of a trained
model is at that overlap these tests cannot say.
"""

from __future__ import annotations

import logging

import pytest
import torch
from test_vae import tiny_vae

from ltx_core.config import VAE_090, VAE_091, VAE_095
from ltx_core.model.vae import blocks
from ltx_core.model.vae.decoder_stream import Step, stream
from ltx_core.model.vae.tiling import (
    CALL_OVERHEAD,
    CPU_BUDGET,
    LIVE_TENSORS,
    TilingPlan,
    VAEMemoryError,
    candidate_plans,
    decode_bytes,
    decoder_bytes_per_pixel,
    decoder_reach,
    default_budget,
    encode_bytes,
    encoder_bytes_per_pixel,
    encoder_reach,
    plan_decode,
    plan_encode,
    shrink_plan,
    tile_overlap,
)
from tiny import TINY_VAE_LAYOUTS

SEEDS = (0, 1, 2)
# The stated bound per release: (mean |Δ| / mean |x|, max |Δ| / max |x|) of any plan the planner picks,
# against the untiled result. Measured worst over 40 seeded tiny models (the smallest tiles, overlapping
# by exactly the overlap; 12 seeds for every other tile size, grids and streamed strips): decode 0.9.0
# 0.07 % / 1.0 %, 0.9.1 0.19 % / 2.4 %, 0.9.5 0.32 % / 3.0 %; encode 0.18 % / 1.3 % (all layouts).
# Temporal chunks add nothing: they are exact.
DECODE_BOUNDS = {"0.9.0": (0.0025, 0.02), "0.9.1": (0.005, 0.04), "0.9.5": (0.005, 0.04)}
ENCODE_BOUND = (0.005, 0.025)
EXACT = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tiny convolutions run as fast on one thread, and a second one spinning on a busy machine
    (CI runners are shared) made the file take minutes instead of seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _errors(tiled: torch.Tensor, whole: torch.Tensor) -> tuple[float, float]:
    """(mean |Δ| / mean |whole|, max |Δ| / max |whole|)"""
    delta = (tiled - whole).abs()
    return (delta.mean() / whole.abs().mean()).item(), (delta.max() / whole.abs().max()).item()


def _within(errors: tuple[float, float], bound: tuple[float, float]) -> bool:
    return errors[0] <= bound[0] and errors[1] <= bound[1]


def _video(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _latents(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(100 + seed))


def _decode(vae, z: torch.Tensor, tiling, seed: int = 0) -> torch.Tensor:
    """As released: timestep 0.05, latents mixed with 2.5 % noise; the generator also drives 0.9.1's injection."""
    with torch.no_grad():
        return vae.decode(z, 0.05, noise_scale=0.025, generator=torch.Generator().manual_seed(seed), tiling=tiling)


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
        chunked = vae.encode(video, tiling=TilingPlan(tile=8, frames=frames))
    assert chunked.shape == full.shape == (1, 16, 6, 1, 2)
    assert (chunked - full).abs().max() <= EXACT


@pytest.mark.parametrize("layout", TINY_VAE_LAYOUTS)
def test_encode_tiles_meet_the_bound(layout):
    """The planner's smallest tiles (twice the overlap, each overlapping its neighbours by exactly the
    overlap: two, three in a row, and with seed 0 a 2×2 grid and a strip streamed in 1-frame chunks)
    and a larger tile, on three seeded models."""
    for seed in SEEDS:
        vae = tiny_vae(layout, seed)
        o = tile_overlap(encoder_reach(vae.config))
        cases = [((1, 1, 3 * o), 2 * o), ((1, 1, 4 * o), 2 * o), ((1, 1, 3 * o + 3), 2 * o + 3)]
        if seed == 0:  # the costly cases once: 4 tiles of 2o × 2o, and 9 frames
            cases += [((1, 2 * o + 1, 2 * o + 1), 2 * o), ((9, 1, 3 * o), 2 * o)]
        for (frames, h, w), tile in cases:
            video = _video((1, 3, frames, 32 * h, 32 * w), seed)
            with torch.no_grad():
                errors = _errors(vae.encode(video, tiling=TilingPlan(tile, frames=1)), vae.encode(video, tiling="off"))
            assert _within(errors, ENCODE_BOUND), (seed, (frames, h, w), tile, errors)


def test_single_tile_encode_and_its_samples_match_untiled():
    vae = tiny_vae("0.9.5")
    video = _video((1, 3, 17, 64, 64))
    whole_tile = TilingPlan(tile=2, frames=1)
    with torch.no_grad():
        assert (vae.encode(video, tiling=whole_tile) - vae.encode(video, tiling="off")).abs().max() <= EXACT
        sampled = [
            vae.encode(video, sample=True, generator=torch.Generator().manual_seed(3), tiling=plan)
            for plan in ("off", whole_tile)
        ]
    assert (sampled[0] - sampled[1]).abs().max() <= EXACT


# --- decode ---------------------------------------------------------------------------------------


def _window(front: int, back: int, stride: int = 1) -> Step:
    """A step that sums its input over frames t − front … t + back (ends repeated), weighting each offset
    differently, then repeats every frame `stride` times and drops the first stride − 1."""

    def run(x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, :, :1].expand(-1, -1, front, -1, -1), x, x[:, :, -1:].expand(-1, -1, back, -1, -1)], 2)
        t = x.shape[2] - front - back
        out = sum((k + 1.5) * x[:, :, k : k + t] for k in range(front + back + 1))
        return out.repeat_interleave(stride, dim=2)[:, :, stride - 1 :]

    return Step(run, front, back, stride)


def test_streams_of_local_steps_are_the_whole():
    """Steps reaching behind and ahead (behind only, ahead only, neither), temporal ×2 upsamplings among
    them, streamed in pieces of every size over videos of every length: the whole result, frame for frame."""
    steps = [
        _window(1, 1),
        _window(2, 2),
        _window(1, 1, stride=2),
        _window(2, 0),
        _window(0, 0, stride=2),
        _window(1, 1),
    ]
    for frames in range(1, 12):
        z = torch.randn(1, 2, frames, 1, 1, generator=torch.Generator().manual_seed(frames))
        whole = z
        for step in steps:
            whole = step.run(whole)
        for piece in (1, 2, 3):
            pieces = list(stream(steps, z, piece))
            assert torch.equal(torch.cat(pieces, dim=2), whole), (frames, piece)
            assert max(x.shape[2] for x in pieces) <= 8 * piece + steps[-1].back  # + the frames held back


@pytest.mark.parametrize("layout", TINY_VAE_LAYOUTS)
def test_decode_streams_are_exact(layout):
    """Whole frames streamed in pieces of 8·frames frames of each step's input, short enough that every
    stage runs several: the untiled decode to float rounding, the 0.9.1 noise injection included
    (measured ≤ 3.2e-6)."""
    z = _latents((1, 16, 10, 1, 2))
    for seed in SEEDS:
        vae = tiny_vae(layout, seed)
        full = _decode(vae, z, "off", seed)
        for frames in (1, 2, 9):
            assert (_decode(vae, z, TilingPlan(tile=2, frames=frames), seed) - full).abs().max() <= EXACT


@pytest.mark.parametrize("layout", TINY_VAE_LAYOUTS)
def test_decode_tiles_meet_the_bound(layout):
    """The planner's smallest tiles (twice the overlap, each overlapping its neighbours by exactly the
    overlap: two streamed in 1-frame chunks, three in a row, and with seed 0 a 2×2 grid) and a larger
    tile, on three seeded models."""
    for seed in SEEDS:
        vae = tiny_vae(layout, seed)
        o = tile_overlap(decoder_reach(vae.config))
        cases = [((2, 1, 3 * o), 2 * o), ((1, 1, 4 * o), 2 * o), ((1, 1, 3 * o + 3), 2 * o + 3)]
        if seed == 0:  # the costly case once: 4 tiles of 2o × 2o
            cases.append(((1, 2 * o + 1, 2 * o + 1), 2 * o))
        for shape, tile in cases:
            z = _latents((1, 16, *shape), seed)
            errors = _errors(_decode(vae, z, TilingPlan(tile, frames=1), seed), _decode(vae, z, "off", seed))
            assert _within(errors, DECODE_BOUNDS[layout]), (seed, shape, tile, errors)


@pytest.mark.parametrize("layout", TINY_VAE_LAYOUTS)
def test_every_plan_the_planner_can_choose_meets_the_bound(layout):
    """Every candidate plan for a 9-frame strip of 2·overlap + 3 latent pixels, from whole frames in
    1-frame chunks (exact) to the smallest tiles (twice the overlap, 1-frame chunks), on three seeded models."""
    vae = tiny_vae(layout)
    o = tile_overlap(decoder_reach(vae.config))
    side = 2 * o + 3
    plans = list(candidate_plans(2, 1, side, o))
    tiles = [(tile, frames) for tile in (side - 1, side - 2, 2 * o) for frames in (2, 1)]
    assert [(p.tile, p.frames) for p in plans] == [(side, 1), *tiles]
    z = _latents((1, 16, 2, 1, side))
    for seed in SEEDS:
        vae = tiny_vae(layout, seed)
        full = _decode(vae, z, "off", seed)
        for plan in plans:
            errors = _errors(_decode(vae, z, plan, seed), full)
            bound = (1, EXACT) if plan.tile == side else DECODE_BOUNDS[layout]  # whole frames: exact
            assert _within(errors, bound), (seed, plan, errors)


@pytest.mark.parametrize("config", [VAE_090, VAE_091, VAE_095])
def test_the_planners_choose_only_candidates(config):
    """For every budget from the whole decode down to the smallest plan, the planners pick the first
    candidate that fits their estimate (so never a plan outside the tested ones) and below it raise."""
    bf16 = torch.bfloat16
    for shape in [(1, 128, 16, 16, 24), (1, 128, 4, 96, 64)]:  # 768×512×121, 2048×3072×25
        o = tile_overlap(decoder_reach(config))
        candidates = [None, *candidate_plans(*shape[2:], o)]
        costs = [decode_bytes(config, shape, plan, bf16) for plan in candidates]
        for budget in sorted(set(costs)):
            plan = plan_decode(config, shape, budget, bf16)
            assert plan == next(c for c, cost in zip(candidates, costs, strict=True) if cost <= budget)
        with pytest.raises(VAEMemoryError):
            plan_decode(config, shape, min(costs) - 1, bf16)
    video = (1, 3, 33, 2048, 3072)
    o = tile_overlap(encoder_reach(config))
    candidates = [None, *candidate_plans(5, 64, 96, o)]
    costs = [encode_bytes(config, video, plan, bf16) for plan in candidates]
    for budget in sorted(set(costs)):
        assert plan_encode(config, video, budget, bf16) == next(
            c for c, cost in zip(candidates, costs, strict=True) if cost <= budget
        )


@pytest.mark.parametrize("layout", ["0.9.1", "0.9.5"])
def test_tiles_beyond_the_receptive_field_are_exact(layout):
    """Where a tile has weight it is at least a quarter of the overlap from its edge; with an overlap of
    four receptive fields that is beyond the reach of the edge, so the blend is the untiled decode (0.9.1:
    the noise maps under each tile are the untiled ones)."""
    vae = tiny_vae(layout)
    o = 4 * tile_overlap(decoder_reach(vae.config))
    z = _latents((1, 16, 2, 1, o + 8))
    tiled = _decode(vae, z, TilingPlan(tile=o + 4, overlap=o, frames=1))
    assert (tiled - _decode(vae, z, "off")).abs().max() <= EXACT


def test_tiles_see_the_untiled_noise_maps(monkeypatch):
    """0.9.1 injects one noise map per convolution over the whole frame: every tile draws nothing of its
    own and gets the part of the untiled decode's map under it."""
    vae = tiny_vae("0.9.1")
    z = _latents((1, 16, 2, 3, 5))
    seen: list[tuple[object, tuple[slice, slice, tuple[int, int]] | None, torch.Tensor]] = []
    draw = blocks.NoiseField.draw

    def recording(self, key, like):
        seen.append((key, self.window, out := draw(self, key, like)))
        return out

    monkeypatch.setattr(blocks.NoiseField, "draw", recording)
    _decode(vae, z, "off")
    whole = {key: noise for key, _, noise in seen}
    seen.clear()
    _decode(vae, z, TilingPlan(tile=3, overlap=2, frames=1))
    assert len(seen) > len(whole) > 0
    for key, (rows, cols, _), noise in seen:
        s = noise.shape[0] // (rows.stop - rows.start)
        assert torch.equal(noise, whole[key][s * rows.start : s * rows.stop, s * cols.start : s * cols.stop])


def test_tiled_decode_noise_is_seeded():
    vae = tiny_vae("0.9.1")
    z = _latents((1, 16, 3, 1, 3))
    tiles = TilingPlan(tile=2, overlap=1, frames=1)
    first = _decode(vae, z, tiles, seed=0)
    assert torch.equal(first, _decode(vae, z, tiles, seed=0))
    assert (first - _decode(vae, z, tiles, seed=1)).abs().max() > 1e-3


def test_single_piece_decode_is_exact():
    vae = tiny_vae("0.9.5")
    z = _latents((1, 16, 3, 2, 3))
    assert (_decode(vae, z, TilingPlan(tile=3, frames=3)) - _decode(vae, z, "off")).abs().max() <= EXACT


# --- receptive field, memory budget and plans --------------------------------------------------------


def test_receptive_fields():
    """One stage pixel per 3×3 convolution: the released decoders reach 22–30 latent pixels (a third of
    that for the tiny models), so their tiles overlap by that much and are at least twice as wide."""
    assert [round(decoder_reach(c), 1) for c in (VAE_090, VAE_091, VAE_095)] == [23.9, 30.1, 21.6]
    assert [round(encoder_reach(c), 1) for c in (VAE_090, VAE_091, VAE_095)] == [23.0, 23.0, 15.2]
    assert [decoder_reach(tiny_vae(layout).config) for layout in TINY_VAE_LAYOUTS] == [12.125, 8.625, 8.625]


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
    bf16 = torch.bfloat16
    assert plan_decode(VAE_091, shape, 10**15, bf16) is None
    chunked = plan_decode(VAE_091, shape, 3 * 2**30, bf16)
    assert chunked is not None and chunked.tile >= 24 and chunked.frames < 16  # whole frames, exact chunks
    assert decode_bytes(VAE_091, shape, chunked, bf16) <= 3 * 2**30
    with pytest.raises(VAEMemoryError, match=r"needs 1\.\d GiB .* budget is 0\.5 GiB\. Lower the resolution"):
        plan_decode(VAE_091, shape, 2**29, bf16)  # tiles of 2·31 latent pixels cannot cut a 24-wide frame
    large = (1, 128, 4, 128, 128)  # 4096×4096×25: whole frames in 1-frame chunks need 47 GiB, the smallest tiles 21
    o = tile_overlap(decoder_reach(VAE_091))
    tiled = plan_decode(VAE_091, large, 24 * 2**30, bf16)
    assert tiled is not None and 2 * o <= tiled.tile < 128 and decode_bytes(VAE_091, large, tiled, bf16) <= 24 * 2**30


def test_encode_plan_prefers_exact_temporal_chunks():
    shape = (1, 3, 121, 512, 768)
    bf16 = torch.bfloat16
    assert plan_encode(VAE_091, shape, 10**15, bf16) is None
    budget = int(50 * 512 * 768 * encoder_bytes_per_pixel(VAE_091, bf16)) + CALL_OVERHEAD
    plan = plan_encode(VAE_091, shape, budget, bf16)
    assert plan is not None and plan.tile >= 24 and 8 * plan.frames + 1 <= 50
    assert plan_encode(VAE_091, shape, encode_bytes(VAE_091, shape, TilingPlan(24, frames=1), bf16), bf16).frames == 1
    with pytest.raises(VAEMemoryError, match="needs .* GiB"):
        plan_encode(VAE_091, shape, 2**28, bf16)


def test_shrink_plan_halves_down_to_the_smallest_within_the_bound():
    plans, plan = [], None
    while (plan := shrink_plan(plan, (16, 40, 100), 9)) is not None:
        plans.append(plan)
    assert [(p.tile, p.frames) for p in plans] == [(100, 8), (100, 4), (100, 2), (100, 1), (50, 1), (25, 1), (18, 1)]
    assert shrink_plan(None, (1, 2, 3), 9) is None  # one frame, too small to tile: nothing smaller to try


def test_out_of_memory_is_retried_with_smaller_plans(monkeypatch):
    """A last decoder step that 'runs out of memory' above 12 frames: auto tiling falls back from the
    whole decode (25 frames) to `shrink_plan`'s plans, 2-frame chunks (pieces of up to 16 frames and 2
    of context), then 1-frame chunks (up to 8 and 2), which run, exactly."""
    vae = tiny_vae("0.9.5")
    z = _latents((1, 16, 4, 1, 4))
    whole = _decode(vae, z, "off")
    steps = vae.decoder.steps
    calls = []

    def limited(*args):
        *out, last = steps(*args)

        def conv_out(x):
            calls.append(x.shape[2])
            if x.shape[2] > 12:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return last.run(x)

        return [*out, type(last)(conv_out, last.front, last.back)]

    monkeypatch.setattr(vae.decoder, "steps", limited)
    retried = _decode(vae, z, "auto")
    assert calls[0] == 25 and calls[1] > 12 and max(calls[2:]) <= 12
    assert (retried - whole).abs().max() <= EXACT
    monkeypatch.setattr(vae.decoder, "steps", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    with pytest.raises(torch.OutOfMemoryError, match="every plan within the error bound .*whole.*lower the resolution"):
        _decode(vae, z, "auto")


def test_a_budget_too_small_raises_or_uses_the_free_memory(monkeypatch, caplog):
    vae = tiny_vae("0.9.1")
    z = _latents((1, 16, 2, 1, 2))
    with caplog.at_level(logging.WARNING):
        out = vae.decode(z, 0.05, generator=torch.Generator().manual_seed(0), memory_budget=1)
    assert out.shape == (1, 3, 9, 32, 64) and "using the 16.0 GiB of free device memory" in caplog.text
    monkeypatch.setattr("ltx_core.model.vae.autoencoder.default_budget", lambda device: 1)
    with pytest.raises(VAEMemoryError, match=r"needs 0\.3 GiB .* low_vram .* more memory"):
        vae.decode(z, 0.05, memory_budget=1)


def test_bad_tiling_arguments_raise():
    vae = tiny_vae("0.9.0")
    with pytest.raises(ValueError, match="overlap < tile"):
        TilingPlan(tile=4, overlap=4)
    with pytest.raises(ValueError, match="frames ≥ 1"):
        TilingPlan(frames=0)
    with pytest.raises(ValueError, match="'auto', 'off' or a TilingPlan"):
        vae.decode(torch.zeros(1, 16, 2, 1, 1), tiling="on")
