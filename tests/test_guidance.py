"""Guidance settings (CFG, STG, rescaling, CFG-zero*, ranges), the model's skip-layer perturbation and the
sampler's batching of guidance branches, against hand computations; parity with the references is in
test_guidance_parity.py."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from ltx_core import LTXVideoTransformer, video_positions
from ltx_core.model import fusion, kernels, transformer
from ltx_core.model.transformer import SkipLayers
from ltx_core.sampling.guidance import Guidance, StepGuidance, std_rescale
from ltx_core.sampling.noise import seeded_generator, seeded_noise
from ltx_core.sampling.sampler import sample
from ltx_core.sampling.schedule import shifted_sigmas
from ltx_core.text.encoder import Conditioning
from tiny import random_state_dict, tiny_transformer_config

SIGMAS = shifted_sigmas(6, 18)  # 1, .878, .734, .563, .356, .1, 0
SHAPE = (2, 16, 3, 2, 3)  # two videos of 18 tokens


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one CPU thread is faster than several, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> LTXVideoTransformer:
    cfg = tiny_transformer_config(layers=3)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    return LTXVideoTransformer.from_state_dict(cfg, random_state_dict(shapes, 5))


def _text(batch: int = 1, seed: int = 9) -> Conditioning:
    gen = torch.Generator().manual_seed(seed)
    negative = Conditioning(torch.randn(batch, 4, 24, generator=gen), torch.tensor([[1, 1, 0, 0]] * batch))
    return Conditioning(torch.randn(batch, 5, 24, generator=gen), torch.ones(batch, 5, dtype=torch.int64), negative)


def _sample(model, noise, guidance=None, text=None, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return sample(model, noise, SIGMAS, text or _text(), guidance=guidance, **kwargs)


# --- the settings -------------------------------------------------------------------------------------

# Lightricks/LTX-Video configs: ltxv-2b-0.9.1.yaml (top level), ltxv-13b-0.9.8-dev.yaml (second_pass),
# ltxv-2b-0.9.8-distilled.yaml (first_pass)
CONFIG_2B = {
    "guidance_scale": 3,
    "stg_scale": 1,
    "rescaling_scale": 0.7,
    "skip_block_list": [19],
    "num_inference_steps": 40,
    "stg_mode": "attention_values",
    "decode_timestep": 0.05,
    "stochastic_sampling": False,
}
SECOND_PASS_13B = {
    "guidance_scale": [1],
    "stg_scale": [1],
    "rescaling_scale": [1],
    "guidance_timesteps": [1.0],
    "skip_block_list": [27],
    "num_inference_steps": 30,
    "skip_initial_inference_steps": 17,
    "cfg_star_rescale": True,
}
DISTILLED = {
    "timesteps": [1.0, 0.9937],
    "guidance_scale": 1,
    "stg_scale": 0,
    "rescaling_scale": 1,
    "skip_block_list": [42],
}


def test_built_from_official_configs():
    two_b = Guidance.from_config(CONFIG_2B)  # other keys (steps, decode, stochastic_sampling) are ignored
    assert two_b == Guidance(guidance_scale=3.0, stg_scale=1.0, rescaling_scale=0.7, skip_block_list=(19,))
    assert Guidance.from_config(dict(CONFIG_2B, stg_mode="stg_av")) == two_b  # the CLI's short names
    assert Guidance.from_config({"stg_mode": "STG_T"}).stg_mode == "transformer_block"
    assert Guidance.from_config({"guidance_scale": None}) == Guidance()  # None: the default

    second = Guidance.from_config(SECOND_PASS_13B)
    assert second.guidance_scale == (1.0,) and second.skip_block_list == (27,) and second.cfg_star_rescale
    (step,) = set(second.per_step(torch.tensor([0.9, 0.4])))
    assert step.branches == ("cond", "perturbed") and step.skip_blocks == (27,) and step.rescaling_scale == 1.0

    assert second.max_branches(SIGMAS[:-1]) == 2 and not second.uses_negative
    assert Guidance.from_config(CONFIG_2B).max_branches(SIGMAS[:-1]) == 3
    assert Guidance(guidance_timesteps=(1.0, 0.5), guidance_scale=(1.0, 8.0)).uses_negative

    distilled = Guidance.from_config(DISTILLED)
    assert not distilled.uses_negative and distilled.max_branches(SIGMAS[:-1]) == 1
    assert {s.branches for s in distilled.per_step(SIGMAS[:-1])} == {("cond",)}  # block 42 is never used


def test_a_step_takes_the_first_range_starting_at_or_below_its_noise_level():
    guidance = Guidance(
        guidance_timesteps=(1.0, 0.9933, 0.5),
        guidance_scale=(1.0, 2.0, 3.0),
        stg_scale=1.0,
        skip_block_list=((0,), (1,), (2,)),
    )
    sigmas = torch.tensor([1.0, 0.99999, 0.9933, 0.99329, 0.6, 0.5, 0.2])  # 0.9933: equal in float32
    steps = guidance.per_step(sigmas)
    # range i holds [start i, start i − 1); below the last start (0.2) the last range goes on
    assert [s.guidance_scale for s in steps] == [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    assert [s.skip_blocks for s in steps] == [(0,), (1,), (1,), (2,), (2,), (2,), (2,)]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"guidance_scale": [1, 3]}, "guidance_scale has one value per range .* give guidance_timesteps"),
        ({"stg_scale": [1, 2], "skip_block_list": [1], "guidance_timesteps": [1.0]}, "2 values for 1 guidance_time"),
        ({"skip_block_list": [[1], [2]], "guidance_timesteps": [1.0, 0.5, 0.2]}, "2 values for 3 guidance_timest"),
        ({"guidance_timesteps": [0.5, 0.9]}, r"from high to low .* got \[0.5, 0.9\]"),
        ({"guidance_timesteps": [1000, 500]}, r"noise levels in \[0, 1\]"),
        ({"stg_scale": -1}, "stg_scale must be a finite number ≥ 0 \\(0 turns STG off\\), got -1.0"),
        ({"rescaling_scale": 1.5}, r"rescaling_scale must be in \[0, 1\] \(1 and 0 mean no rescaling\), got 1.5"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number, got nan"),
        (
            {"guidance_scale": [3, "x"], "guidance_timesteps": [1.0, 0.5]},
            r"guidance_scale must be a number or a list of numbers, got \[3, 'x'\]",
        ),
        ({"stg_mode": "attention"}, "unknown stg_mode 'attention'; choose one of attention_values, attention_skip"),
        ({"stg_scale": 1}, "stg_scale 1 has no block to perturb: set skip_block_list"),
        (
            {"stg_scale": [0, 2], "skip_block_list": [[3], []], "guidance_timesteps": [1.0, 0.5]},
            "stg_scale 2 in the range from σ = 0.5 has no block",
        ),
        ({"skip_block_list": [1, [2]]}, "block indices or one list of them per range"),
        ({"skip_block_list": [-1]}, r"block indices \(0, 1, …\), got -1"),
        ({"skip_block_list": "19"}, "skip_block_list must be a list, got '19'"),
        ({"cfg_star_rescale": "yes"}, "cfg_star_rescale must be true or false"),
        ({"guidance_rescale": 2.0}, r"guidance_rescale must be in \[0, 1\]"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        Guidance(**settings)


def test_settings_are_frozen_and_normalised():
    guidance = Guidance(guidance_scale=[2, 3], guidance_timesteps=[1, 0.5], skip_block_list=[[1, 2], []])
    assert guidance.guidance_scale == (2.0, 3.0) and guidance.guidance_timesteps == (1.0, 0.5)
    assert guidance.skip_block_list == ((1, 2), ())
    with pytest.raises(AttributeError):
        guidance.stg_scale = 1.0  # type: ignore[misc]
    assert hash(guidance) == hash(
        Guidance(guidance_scale=(2, 3), guidance_timesteps=(1, 0.5), skip_block_list=((1, 2), ()))
    )


# --- combining the branches ---------------------------------------------------------------------------


def _predictions(batch: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return {name: torch.randn(batch, 6, 4, generator=gen) for name in ("uncond", "cond", "perturbed")}


def _step(**kwargs) -> StepGuidance:
    settings = dict(
        guidance_scale=3.0, stg_scale=2.0, rescaling_scale=0.7, skip_blocks=(1,), stg_mode="attention_values"
    )
    return StepGuidance(**{**settings, **kwargs})


def test_cfg_stg_and_rescaling_combine_as_the_official_pipeline():
    p = _predictions()
    u, c, pert = p["uncond"], p["cond"], p["perturbed"]
    guided = u + 3 * (c - u) + 2 * (c - pert)
    std = lambda t: t.reshape(2, -1).std(dim=1)[:, None, None]  # noqa: E731 (unbiased, per sample)
    expected = guided * (0.7 * std(c) / std(guided) + 0.3)
    assert torch.allclose(_step().combine(p), expected, atol=1e-6, rtol=0)
    assert torch.equal(_step(rescaling_scale=1.0).combine(p), guided)  # official: 1 = no rescaling
    assert torch.allclose(_step(rescaling_scale=0.0).combine(p), guided, atol=1e-6, rtol=0)
    no_stg = _step(stg_scale=0.0, skip_blocks=())
    assert torch.equal(no_stg.combine(p), u + 3 * (c - u))  # rescaling only comes with STG
    assert torch.allclose(_step(guidance_scale=1.0).combine(p), std_rescale(c + 2 * (c - pert), c, 0.7))


def test_cfg_star_scales_each_sample_by_its_own_projection():
    p = _predictions()
    u, c = p["uncond"], p["cond"]
    alpha = torch.stack([(c[i] * u[i]).sum() / ((u[i] ** 2).sum() + 1e-8) for i in range(2)])[:, None, None]
    expected = alpha * u + 3 * (c - alpha * u)
    step = _step(stg_scale=0.0, skip_blocks=(), cfg_star_rescale=True)
    assert torch.allclose(step.combine(p), expected, atol=1e-6, rtol=0)
    alone = step.combine({k: v[1:] for k, v in p.items()})
    assert torch.allclose(step.combine(p)[1:], alone, atol=1e-6, rtol=0)


def test_residual_mode_runs_no_perturbed_branch_and_adds_only_rescaling(model, caplog):
    guidance = Guidance(stg_scale=1.0, skip_block_list=(1,), stg_mode="residual", rescaling_scale=0.7)
    (step,) = set(guidance.per_step(SIGMAS[:-1]))
    assert step.branches == ("uncond", "cond") and step.skip_blocks == ()
    p = _predictions()
    assert torch.equal(step.combine(p), std_rescale(p["uncond"] + 3 * (p["cond"] - p["uncond"]), p["cond"], 0.7))
    with caplog.at_level(logging.WARNING):
        _sample(model, seeded_noise(SHAPE, 1), guidance)
    assert "'residual' perturbs nothing" in caplog.text


# --- the model's perturbation ------------------------------------------------------------------------


def _forward_inputs(batch: int):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(batch, 18, 16, generator=gen)
    context, mask = torch.randn(batch, 5, 24, generator=gen), torch.ones(batch, 5)
    return x, torch.full((batch,), 0.6), context, mask, video_positions(3, 2, 3, frame_rate=25.0, causal_fix=False)


@pytest.mark.parametrize("mode", ["attention_values", "attention_skip", "transformer_block"])
def test_skip_layers_perturb_only_the_chosen_samples(model, mode):
    inputs = _forward_inputs(3)
    with torch.no_grad():
        plain = model(*inputs)
        skipped = model(*inputs, skip=SkipLayers(mode, {0, 2}, torch.tensor([False, True, False])))
    assert torch.equal(skipped[[0, 2]], plain[[0, 2]])
    assert (skipped[1] - plain[1]).abs().max() > 0.1


def test_transformer_block_mode_skipping_every_block_leaves_only_the_ends(model):
    inputs = _forward_inputs(1)
    with torch.no_grad():
        skipped = model(*inputs, skip=SkipLayers("transformer_block", {0, 1, 2}, torch.tensor([True])))
        blocks, model.transformer_blocks = model.transformer_blocks, torch.nn.ModuleList()
        try:
            bare = model(*inputs)  # no blocks at all
        finally:
            model.transformer_blocks = blocks
    assert torch.equal(skipped, bare)


def test_bad_skip_layers_are_named(model):
    inputs = _forward_inputs(2)
    with pytest.raises(ValueError, match=r"cannot skip blocks \[3\]: this model has blocks 0 … 2"):
        model(*inputs, skip=SkipLayers("attention_values", {3}, torch.tensor([False, True])))
    with pytest.raises(ValueError, match=r"skip.samples must have shape \(2,\)"):
        model(*inputs, skip=SkipLayers("attention_values", {1}, torch.tensor([True])))
    with pytest.raises(ValueError, match="unknown skip mode 'residual'"):
        SkipLayers("residual", {1}, torch.tensor([True]))
    with pytest.raises(ValueError, match=r"\(B,\) bool mask"):
        SkipLayers("attention_values", {1}, torch.tensor([1.0]))


def test_the_fused_query_key_kernel_still_runs_with_a_skip(monkeypatch):
    """The Triton path (faked here, as in test_kernels) is not bypassed by STG; the perturbed sample's
    attention output is to_out(values)."""
    calls = []

    def fake_kernel(q, k, *args):
        calls.append(q.shape)
        return q, k

    monkeypatch.setattr(kernels, "triton_available", lambda t: True)
    monkeypatch.setattr(kernels, "qk_norm_rope", fake_kernel)
    fusion.set_fusion(True, devices=("cpu",))
    try:
        attn = transformer.Attention(8, 2, 8, 1e-6)
        for p in attn.parameters():
            torch.nn.init.normal_(p)
        x, rope = torch.randn(2, 5, 8), (torch.ones(1, 5, 4), torch.zeros(1, 5, 4))
        with torch.no_grad():
            out = attn(x, rope=rope, skip=SkipLayers("attention_values", {0}, torch.tensor([False, True])))
            values = attn.to_out[0](attn.to_v(x))
    finally:
        fusion.set_fusion(True)
    assert calls == [torch.Size([2, 5, 8])]
    assert torch.equal(out[1], values[1]) and not torch.equal(out[0], values[0])


# --- the sampler's batch -----------------------------------------------------------------------------


def _record_calls(model, calls: list):
    def record(module, args, kwargs):
        skip = kwargs.get("skip")
        calls.append((args[0].shape[0], None if skip is None else (skip.mode, skip.blocks, skip.samples.tolist())))

    return model.register_forward_pre_hook(record, with_kwargs=True)


def test_cfg_and_stg_are_one_model_call_of_three_branches_per_step(model):
    calls: list = []
    hook = _record_calls(model, calls)
    try:
        guidance = Guidance(stg_scale=1.0, skip_block_list=(1, 2), stg_mode="attention_skip")
        _sample(model, seeded_noise(SHAPE, 1), guidance)
    finally:
        hook.remove()
    perturbed_last = [False] * 4 + [True] * 2  # (uncond × 2, cond × 2, perturbed × 2)
    assert calls == [(6, ("attention_skip", frozenset({1, 2}), perturbed_last))] * 6


def test_the_batch_follows_the_ranges(model):
    calls: list = []
    hook = _record_calls(model, calls)
    try:
        guidance = Guidance(
            guidance_timesteps=(1.0, 0.7, 0.4),
            guidance_scale=(1.0, 3.0, 3.0),
            stg_scale=(0.0, 0.0, 1.0),
            skip_block_list=((), (), (0,)),
        )
        _sample(model, seeded_noise(SHAPE, 1), guidance)
    finally:
        hook.remove()
    # σ = 1 → range 0; .878, .734 → range 1 (starts at .7); .563 → range 2; .356, .1 → the last range
    assert [batch for batch, _ in calls] == [2, 4, 4, 6, 6, 6]
    assert [skip is not None for _, skip in calls] == [False, False, False, True, True, True]


def test_default_guidance_is_plain_cfg_as_before(model):
    noise = seeded_noise(SHAPE, 2)
    shorthand = _sample(model, noise, guidance_scale=3.0)
    assert torch.equal(_sample(model, noise, Guidance()), shorthand)
    assert torch.equal(_sample(model, noise), shorthand)


def test_videos_in_a_batch_are_guided_each_on_its_own(model):
    """Each video's perturbed and CFG-zero* branches are its own (the official pipeline mixes them up for
    more than one video): a batch of two equals the two alone."""
    guidance = Guidance(guidance_scale=4.0, stg_scale=1.0, skip_block_list=(1,), cfg_star_rescale=True)
    noise, text = seeded_noise(SHAPE, 3), _text(batch=2)
    both = _sample(model, noise, guidance, text)
    for i in range(2):
        one = Conditioning(text.context[i : i + 1], text.mask[i : i + 1], Conditioning(
            text.negative.context[i : i + 1], text.negative.mask[i : i + 1]
        ))  # fmt: skip
        alone = _sample(model, noise[i : i + 1], guidance, one)
        assert (both[i] - alone[0]).abs().max() <= 1e-5


def test_sampler_checks_guidance_against_model_and_prompts(model):
    noise = seeded_noise(SHAPE, 1)
    with pytest.raises(ValueError, match="inside `guidance`, not beside it"):
        _sample(model, noise, Guidance(), guidance_scale=3.0)
    with pytest.raises(ValueError, match=r"names blocks \[1, 28\], but this model has blocks 0 … 2"):
        _sample(model, noise, Guidance(stg_scale=1.0, skip_block_list=(1, 28)))
    per_range = Guidance(guidance_timesteps=(1.0, 0.5), guidance_scale=(1.0, 5.0))
    positive_only = Conditioning(_text().context, _text().mask)
    with pytest.raises(ValueError, match="guidance_scale 5 needs a negative prompt"):
        _sample(model, noise, per_range, positive_only)


# --- stochastic sampling -----------------------------------------------------------------------------


class _Linear(torch.nn.Module):
    """v = 0.5·x + σ: enough to check the step arithmetic."""

    config = SimpleNamespace(in_channels=SHAPE[1], causal_temporal_positioning=False, num_layers=1)

    def forward(self, x, sigma, context, mask, positions):
        return 0.5 * x + (sigma[:, None, None] if sigma.ndim == 1 else sigma[..., None])


def test_stochastic_steps_renoise_the_clean_estimate_with_the_generators_noise():
    noise = seeded_noise(SHAPE, 4)
    out = _sample(
        _Linear(), noise, Guidance(guidance_scale=1.0), stochastic_sampling=True, generator=seeded_generator(5)
    )
    gen = seeded_generator(5)
    x = noise.permute(0, 2, 3, 4, 1).reshape(2, 18, 16)
    for sigma, sigma_next in zip(SIGMAS[:-1], SIGMAS[1:], strict=True):
        clean = x - sigma * (0.5 * x + sigma)
        x = (1 - sigma_next) * clean + sigma_next * torch.randn(x.shape, generator=gen)
    assert torch.allclose(out, x.reshape(2, 3, 2, 3, 16).permute(0, 4, 1, 2, 3), atol=1e-6, rtol=0)
    euler = _sample(_Linear(), noise, Guidance(guidance_scale=1.0))
    assert (out - euler).abs().max() > 0.1
