"""Schedules, seeded noise, frame conditioning and the Euler loop, against exact hand computations
and the references' schedulers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltx_core.model.patchify import to_tokens
from ltx_core.sampling.conditioning import FrameCondition, appended_start, condition_latents
from ltx_core.sampling.noise import seeded_generator, seeded_noise
from ltx_core.sampling.sampler import sample
from ltx_core.sampling.schedule import (
    custom_sigmas,
    linear_quadratic_sigmas,
    partial_schedule,
    resolution_shift,
    shifted_sigmas,
)
from ltx_core.text.encoder import Conditioning
from tiny import diffusers_ltx_scheduler

SHAPE = (2, 4, 3, 2, 3)  # B, C, F, H, W


class FakeModel(torch.nn.Module):
    """v = a·x + σ_token + text marker: cheap, deterministic, sensitive to every input the loop feeds."""

    def __init__(self, a: float = 0.5) -> None:
        super().__init__()
        self.a = a
        self.config = SimpleNamespace(in_channels=SHAPE[1], causal_temporal_positioning=False)
        self.calls: list[tuple[torch.Size, torch.Size]] = []
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, sigma, context, mask, positions):
        self.calls.append((x.shape, sigma.shape))
        self.inputs.append((x, sigma))
        sigma_tok = sigma[:, None, None] if sigma.ndim == 1 else sigma[..., None]
        marker = (context * mask[..., None]).sum(dim=(1, 2))[:, None, None]
        return self.a * x + sigma_tok + marker


def _text(batch: int = 1, negative: bool = True) -> Conditioning:
    gen = torch.Generator().manual_seed(9)
    neg = Conditioning(torch.randn(batch, 3, 5, generator=gen), torch.tensor([[1, 1, 0]] * batch)) if negative else None
    return Conditioning(torch.randn(batch, 3, 5, generator=gen), torch.ones(batch, 3, dtype=torch.int64), neg)


# --- schedules ------------------------------------------------------------------------------------


def test_shifted_schedule_known_values():
    # 768×512×121 → 16×16×24 latent tokens, 40 steps (values of the published schedule)
    sigmas = shifted_sigmas(40, 6144)
    assert sigmas.shape == (41,) and sigmas.dtype == torch.float32
    assert resolution_shift(6144) == pytest.approx(2.7833, abs=1e-4)
    expected_head = torch.tensor([1.0, 0.99798, 0.99587])
    expected_tail = torch.tensor([0.54479, 0.44914, 0.31222, 0.1, 0.0])
    assert torch.allclose(sigmas[:3], expected_head, atol=1e-5)
    assert torch.allclose(sigmas[-5:], expected_tail, atol=1e-5)
    assert torch.equal(shifted_sigmas(1, 6144), torch.tensor([1.0, 0.0]))  # one step: no 0/0 stretch


@pytest.mark.parity
@pytest.mark.parametrize(("steps", "tokens"), [(40, 6144), (20, 4992), (8, 600), (50, 13376)])
def test_shifted_schedule_matches_diffusers(steps, tokens):
    pytest.importorskip("diffusers")
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    scheduler = diffusers_ltx_scheduler()
    mu = calculate_shift(tokens, 1024, 4096, 0.95, 2.05)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    assert (shifted_sigmas(steps, tokens) - scheduler.sigmas).abs().max() <= 1e-6


@pytest.mark.parity
@pytest.mark.parametrize(("steps", "linear_steps"), [(8, None), (1, None), (40, None), (30, 10)])
def test_linear_quadratic_matches_official(steps, linear_steps):
    rf = pytest.importorskip("ltx_video.schedulers.rf")
    reference = rf.linear_quadratic_schedule(steps, 0.025, linear_steps)
    ours = linear_quadratic_sigmas(steps, 0.025, linear_steps)
    assert ours[-1] == 0 and (ours[:-1] - reference).abs().max() <= 1e-7


def test_linear_quadratic_distilled_values():
    expected = [1, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219, 0]
    assert torch.allclose(linear_quadratic_sigmas(8), torch.tensor(expected), atol=1e-4)


def test_custom_and_partial_schedules():
    assert torch.equal(custom_sigmas([1.0, 0.5, 0.2]), torch.tensor([1.0, 0.5, 0.2, 0.0]))
    with pytest.raises(ValueError, match="strictly decrease"):
        custom_sigmas([1.0, 0.5, 0.7])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        custom_sigmas([1.5, 0.5])
    with pytest.raises(ValueError, match="empty"):
        custom_sigmas([])
    tail = partial_schedule(lambda n: shifted_sigmas(n, 4096), 10, 0.5)
    assert torch.equal(tail, shifted_sigmas(20, 4096)[-11:])
    with pytest.raises(ValueError, match="denoise"):
        partial_schedule(lambda n: shifted_sigmas(n, 4096), 10, 0.0)
    with pytest.raises(ValueError, match="steps"):
        shifted_sigmas(0, 4096)


# --- noise ----------------------------------------------------------------------------------------


def test_seeded_noise_reproduces_and_ignores_dtype():
    a = seeded_noise(SHAPE, 42)
    assert torch.equal(a, seeded_noise(SHAPE, 42))
    assert not torch.equal(a, seeded_noise(SHAPE, 43))
    assert torch.equal(seeded_noise(SHAPE, 42, dtype=torch.bfloat16), a.bfloat16())


# --- the loop -------------------------------------------------------------------------------------


def _manual_euler(noise, sigmas, text, guidance, a=0.5):
    """The loop written out: x += (σ' − σ)·(v_u + g·(v_c − v_u)) with the fake velocity."""
    x = noise.permute(0, 2, 3, 4, 1).reshape(noise.shape[0], -1, noise.shape[1])
    pos = (text.context * text.mask[..., None]).sum(dim=(1, 2))[:, None, None]
    neg = (text.negative.context * text.negative.mask[..., None]).sum(dim=(1, 2))[:, None, None]
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        v_u, v_c = a * x + s + neg, a * x + s + pos
        x = x + (s_next - s) * (v_u + guidance * (v_c - v_u))
    b, c, f, h, w = noise.shape
    return x.reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3)


def test_euler_with_guidance_is_exact():
    noise = seeded_noise(SHAPE, 1)
    sigmas = shifted_sigmas(5, 18)
    model = FakeModel()
    out = sample(model, noise, sigmas, _text(), guidance_scale=3.0)
    assert torch.allclose(out, _manual_euler(noise, sigmas, _text(), 3.0), atol=1e-6, rtol=0)
    assert len(model.calls) == 5
    assert model.calls[0] == (torch.Size((4, 18, 4)), torch.Size((4,)))  # one batched call: uncond + cond


def test_guidance_one_runs_the_positive_prompt_alone():
    model = FakeModel()
    sample(model, seeded_noise(SHAPE, 1), shifted_sigmas(2, 18), _text(negative=False), guidance_scale=1.0)
    assert model.calls[0] == (torch.Size((2, 18, 4)), torch.Size((2,)))


def test_on_step_reports_and_can_cancel():
    seen = []

    def on_step(step, total, denoised):
        seen.append((step, total, denoised.shape))
        if step == 1:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        sample(FakeModel(), seeded_noise(SHAPE, 1), shifted_sigmas(4, 18), _text(), on_step=on_step)
    assert seen == [(0, 4, torch.Size(SHAPE)), (1, 4, torch.Size(SHAPE))]


def test_conditioned_frames_stay_clean_and_partial_strength_starts_mixed():
    noise = seeded_noise(SHAPE, 2)
    image = seeded_noise((1, 4, 1, 2, 3), 3)
    model = FakeModel()
    out = sample(model, noise, shifted_sigmas(4, 18), _text(), conditions=[FrameCondition(image, 0, 1.0)])
    assert torch.equal(out[:, :, :1], image.expand(2, -1, -1, -1, -1))  # bit for bit
    assert model.calls[0][1] == torch.Size((4, 18))  # per-token noise levels

    model = FakeModel()
    sample(model, noise, torch.tensor([1.0, 0.0]), _text(), conditions=[FrameCondition(image, 8, 0.25)])
    x, sigma = model.inputs[0]  # (2B, N, C), (2B, N); latent frame 1 = tokens 6 … 11
    expected = (0.25 * image + 0.75 * noise[:, :, 1:2]).permute(0, 2, 3, 4, 1).reshape(2, 6, 4)
    assert torch.allclose(x[2:, 6:12], expected, atol=1e-6)
    assert torch.allclose(sigma[:, 6:12], torch.tensor(0.75)) and sigma[:, :6].eq(1).all()


def test_condition_placement_and_errors():
    clean, strength = condition_latents(SHAPE, [FrameCondition(torch.ones(1, 4, 1, 2, 3), 16, 0.7)])
    assert strength[:, :, 2].eq(0.7).all() and strength[:, :, :2].eq(0).all() and clean[:, :, 2].eq(1).all()
    with pytest.raises(ValueError, match="a condition can start at frame 0 or a multiple of 8, got 12: use 8 or 16"):
        condition_latents(SHAPE, [FrameCondition(torch.ones(1, 4, 1, 2, 3), 12)])
    with pytest.raises(ValueError, match="pixel frame 0 or later"):
        FrameCondition(torch.ones(1, 4, 1, 2, 3), -8)
    with pytest.raises(ValueError, match="strength"):
        FrameCondition(torch.ones(1, 4, 1, 2, 3), 0, 1.5)
    with pytest.raises(ValueError, match="runs past"):
        condition_latents(SHAPE, [FrameCondition(torch.ones(1, 4, 2, 2, 3), 16)])
    with pytest.raises(ValueError, match="width and height"):
        condition_latents(SHAPE, [FrameCondition(torch.ones(1, 4, 1, 4, 3), 0)])


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match="needs a negative prompt"):
        sample(FakeModel(), seeded_noise(SHAPE, 1), shifted_sigmas(2, 18), _text(negative=False), guidance_scale=3)
    with pytest.raises(ValueError, match=r"noise must be \(B, 4, F, H, W\)"):
        sample(FakeModel(), torch.zeros(2, 3, 1, 1, 1), shifted_sigmas(2, 18), _text())
    with pytest.raises(ValueError, match="3 prompts for 2 videos"):
        sample(FakeModel(), seeded_noise(SHAPE, 1), shifted_sigmas(2, 18), _text(batch=3))


# --- the appended layout (0.9.5+) -------------------------------------------------------------------


def _appended(noise, conditions, seed=7, causal=True):
    return appended_start(
        noise,
        torch.tensor(1.0),
        conditions,
        initial=None,
        frame_rate=25.0,
        causal_fix=causal,
        generator=seeded_generator(seed),
    )


def test_appended_layout_places_tokens_and_positions():
    noise = seeded_noise((1, 4, 5, 1, 2), 1)  # 33 frames, 10 video tokens
    image = seeded_noise((1, 4, 1, 1, 2), 2)
    clip = seeded_noise((1, 4, 3, 1, 2), 3)  # 17 frames: prefix of 2 latent frames + 1 in place
    first = seeded_noise((1, 4, 1, 1, 2), 4)
    conds = [FrameCondition(first, 0, 0.5), FrameCondition(image, 20, 1.0), FrameCondition(clip, 8, 0.25)]
    state = _appended(noise, conds)
    assert state.appended == 2 + 4 and state.tokens.shape == (1, 16, 4) and state.positions.shape == (1, 3, 16)
    # extra noise is drawn per appended condition, in order, (B, C, f, H, W)
    generator = seeded_generator(7)
    image_noise, prefix_noise = (
        torch.randn(1, 4, 1, 1, 2, generator=generator),
        torch.randn(1, 4, 2, 1, 2, generator=generator),
    )
    assert torch.equal(state.tokens[:, :2], to_tokens(image))  # strength 1: lerp gives the image exactly
    assert torch.equal(state.tokens[:, 2:6], to_tokens(torch.lerp(prefix_noise, clip[:, :, :2], 0.25)))
    video = noise.clone()
    video[:, :, :1] = torch.lerp(noise[:, :, :1], first, 0.5)
    video[:, :, 3:4] = torch.lerp(noise[:, :, 3:4], clip[:, :, 2:], 0.25)  # latent frame 8 / 8 + 2
    assert torch.equal(state.tokens[:, 6:], to_tokens(video))
    assert state.strength[0].tolist() == [1.0] * 2 + [0.25] * 4 + [0.5] * 2 + [0.0] * 4 + [0.25] * 2 + [0.0] * 2
    # pixel frames: image at 20; clip prefix at 8 + (0, 1) (causal fix); video 0, 1, 9, 17, 25
    frames = (state.positions[0, 0] * 25).round().tolist()
    assert frames == [20] * 2 + [8] * 2 + [9] * 2 + [0, 0, 1, 1, 9, 9, 17, 17, 25, 25]
    assert not torch.equal(image_noise, prefix_noise)


def test_appended_layout_checks_frames():
    noise = torch.zeros(1, 4, 3, 1, 2)
    _appended(noise, [FrameCondition(torch.zeros(1, 4, 1, 1, 2), 5)])  # images anywhere
    with pytest.raises(ValueError, match="a clip can start at frame 0 or a multiple of 8, got 4"):
        _appended(noise, [FrameCondition(torch.zeros(1, 4, 2, 1, 2), 4)])
    with pytest.raises(ValueError, match="runs past the video's 3 latent frames"):
        _appended(noise, [FrameCondition(torch.zeros(1, 4, 1, 1, 2), 17)])
    with pytest.raises(ValueError, match="unknown conditioning layout 'sideways'"):
        sample(FakeModel(), seeded_noise(SHAPE, 1), shifted_sigmas(2, 18), _text(), layout="sideways")


def test_appended_tokens_hold_until_their_noise_level_and_are_dropped():
    noise = seeded_noise(SHAPE, 2)
    image = seeded_noise((1, 4, 1, 2, 3), 3)
    sigmas = torch.tensor([1.0, 0.7, 0.4, 0.0])
    model = FakeModel()
    out = sample(
        model,
        noise,
        sigmas,
        _text(),
        layout="appended",
        conditions=[FrameCondition(image, 8, 0.5)],
        generator=seeded_generator(5),
    )
    assert out.shape == SHAPE
    (x0, s0), (x1, s1), (x2, s2) = model.inputs  # (2B, 6 + 18, C), (2B, 24)
    assert s0[:, :6].eq(0.5).all() and s1[:, :6].eq(0.5).all() and torch.allclose(s2[:, :6], torch.tensor(0.4))
    assert s0[:, 6:].eq(1.0).all() and torch.allclose(s1[:, 6:], torch.tensor(0.7))
    assert torch.equal(x0[:, :6], x1[:, :6]) and torch.equal(x1[:, :6], x2[:, :6])  # held while σ ≥ 1 − s
    assert not torch.equal(x0[:, 6:], x1[:, 6:])


def test_hard_conditions_are_renoised_each_step():
    noise = seeded_noise(SHAPE, 2)
    image = seeded_noise((1, 4, 1, 2, 3), 3)
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    model = FakeModel()
    conditions = [FrameCondition(image, 0, 1.0)]
    sample(
        model,
        noise,
        sigmas,
        _text(),
        layout="appended",
        conditions=conditions,
        cond_noise_scale=0.15,
        generator=seeded_generator(5),
    )
    generator = seeded_generator(5)
    for (x, _), sigma in zip(model.inputs, sigmas[:-1], strict=True):
        expected = to_tokens(image)[:, :6] + 0.15 * torch.randn(2, 18, 4, generator=generator)[:, :6] * sigma**2
        assert torch.allclose(x[:2, :6], expected, atol=1e-6)
