"""Settings over a release's official one-pass settings (ltx_core/settings.py) and the pipeline running
them: each release resolves to what its config sets, each field overrides one part, bad values name the
field, and the pipeline runs what was resolved (model calls and their batch, the negative prompt only
with CFG, prompt length, the sampler's and the decoder's arguments)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltx_core.defaults import RELEASE_DEFAULTS
from ltx_core.pipeline import Models, text_to_video
from ltx_core.sampling.guidance import Guidance
from ltx_core.sampling.schedule import custom_sigmas, linear_quadratic_sigmas
from ltx_core.settings import Settings, resolve_settings
from tiny import write_tiny_checkpoints

# configs/ltxv-2b-0.9.8-distilled.yaml: first_pass.timesteps, then second_pass.timesteps[-1]
DISTILLED_TIMESTEPS = (1.0, 0.9937, 0.9875, 0.9812, 0.975, 0.9094, 0.725, 0.4219)
DEV_13B = RELEASE_DEFAULTS["13b-0.9.8-dev"]
TWO_B = RELEASE_DEFAULTS["2b-0.9.1"]


def test_each_release_resolves_to_its_official_one_pass():
    for entry in RELEASE_DEFAULTS.values():
        run = resolve_settings(Settings(), entry)
        assert run.guidance == Guidance.from_config(entry.guidance_config()), entry.key
        assert (run.steps, run.stochastic_sampling, run.text_tokens, run.frame_rate) == (
            entry.steps,
            entry.stochastic_sampling,
            entry.text_tokens,
            entry.frame_rate,
        )
        assert (run.conditioning, run.cond_noise_scale) == (entry.conditioning, entry.cond_noise_scale)
        assert (run.decode_timestep, run.decode_noise_scale) == (entry.decode_timestep, entry.decode_noise_scale)
        assert run.given == frozenset()
    distilled = resolve_settings(Settings(), RELEASE_DEFAULTS["2b-0.9.8-distilled"])
    assert distilled.sigmas(18).tolist() == pytest.approx([*DISTILLED_TIMESTEPS, 0.0])
    assert not distilled.guidance.uses_negative and distilled.guidance.max_branches(distilled.sigmas(18)[:-1]) == 1
    assert resolve_settings(Settings(), RELEASE_DEFAULTS["2b-0.9.6-distilled"]).stochastic_sampling
    dev = resolve_settings(Settings(), DEV_13B)
    assert dev.guidance.cfg_star_rescale and dev.guidance.guidance_timesteps[:2] == (1.0, 0.996)
    assert dev.guidance.max_branches(dev.sigmas(18)[:-1]) == 3  # CFG + STG in one call where both run
    two_b = resolve_settings(Settings(), TWO_B)
    assert (two_b.guidance.guidance_scale, two_b.guidance.stg_scale, two_b.guidance.skip_block_list) == (3, 1, (19,))
    assert two_b.perturbed_blocks() == (19,)
    # 13B dev: the blocks of the ranges whose STG scale is above 0 (not 11 and 25: that range's scale is 0)
    assert dev.perturbed_blocks() == (22, 28, 35, 39)


def test_each_guidance_field_replaces_only_its_part():
    """13B dev keeps its σ ranges: a single value applies to every range, the other parts stay per range."""
    ranges = Guidance.from_config(DEV_13B.guidance_config())
    cases = [  # (Settings fields, the Guidance fields they replace)
        ({"guidance_scale": 4.0}, {"guidance_scale": 4.0}),
        ({"stg_mode": "stg_t"}, {"stg_mode": "transformer_block"}),  # the official short name
        ({"stg_blocks": [19, 20]}, {"skip_block_list": (19, 20)}),
        ({"rescaling_scale": 0.7}, {"rescaling_scale": 0.7}),
        ({"cfg_star_rescale": False}, {"cfg_star_rescale": False}),
        # the first range names no block: STG at every step needs blocks for it
        ({"stg_scale": 2.0, "stg_blocks": (28,)}, {"stg_scale": 2.0, "skip_block_list": (28,)}),
    ]
    for given, replaced in cases:
        run = resolve_settings(Settings(**given), DEV_13B)
        assert run.guidance == dataclasses.replace(ranges, **replaced), given
        assert run.guidance.guidance_timesteps == ranges.guidance_timesteps and run.given == set(given)
    # CFG off keeps the release's STG (a second branch); STG off too: one forward, no negative prompt
    sigmas = resolve_settings(Settings(), TWO_B).sigmas(18)[:-1]
    no_cfg = resolve_settings(Settings(guidance_scale=1), TWO_B).guidance
    assert not no_cfg.uses_negative and no_cfg.max_branches(sigmas) == 2
    assert resolve_settings(Settings(guidance_scale=1, stg_scale=0), TWO_B).guidance.max_branches(sigmas) == 1
    # `guidance` replaces the whole, and the single fields apply over it
    custom = Guidance(guidance_scale=2.0, stg_scale=0.5, skip_block_list=(3,))
    assert resolve_settings(Settings(guidance=custom), DEV_13B).guidance == custom
    over = resolve_settings(Settings(guidance=custom, stg_scale=0.0), DEV_13B).guidance
    assert over == dataclasses.replace(custom, stg_scale=0.0)
    assert resolve_settings(Settings(stochastic_sampling=True), TWO_B).stochastic_sampling


def test_steps_timesteps_and_schedule():
    distilled = RELEASE_DEFAULTS["2b-0.9.8-distilled"]
    assert resolve_settings(Settings(steps=4), distilled).sigmas(18).tolist() == linear_quadratic_sigmas(4).tolist()
    assert resolve_settings(Settings(schedule="shifted", steps=4), distilled).timesteps is None
    explicit = resolve_settings(Settings(timesteps=[0.9, 0.5, 0.0]), TWO_B)  # a final 0 is allowed
    assert explicit.steps == 2 and explicit.sigmas(18).tolist() == custom_sigmas([0.9, 0.5]).tolist()
    assert explicit.given == {"timesteps"}
    # video-to-video: the last steps of a longer schedule, for fixed noise levels as for named schedules
    partial = resolve_settings(Settings(), distilled).sigmas(18, denoise=0.5)
    assert partial.tolist() == linear_quadratic_sigmas(16)[-9:].tolist()
    assert resolve_settings(Settings(steps=20), TWO_B).steps == 20


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (Settings(steps=0), "Settings.steps must be a whole number ≥ 1, got 0"),
        (Settings(timesteps=[0.9, 0.5], steps=3), "2 timesteps but steps=3"),
        (Settings(timesteps=[0.5, 0.9]), "sigmas must strictly decrease"),
        (Settings(text_tokens=0), "Settings.text_tokens must be a whole number ≥ 1"),
        (Settings(frame_rate=0.0), "Settings.frame_rate must be a frame rate above 0"),
        (Settings(cond_noise_scale=-1.0), "Settings.cond_noise_scale must be a finite number ≥ 0"),
        (Settings(decode_noise_scale=2.0), "Settings.decode_noise_scale must be in \\[0, 1\\]"),
        (Settings(schedule="cosine"), "Settings.schedule 'cosine' is not one of shifted, linear_quadratic"),
        (Settings(conditioning="sideways"), "unknown conditioning layout 'sideways'"),
        (Settings(stg_scale=-1.0), "stg_scale must be a finite number ≥ 0"),
        (Settings(rescaling_scale=2.0), "rescaling_scale must be in \\[0, 1\\]"),
        (Settings(stg_mode="sideways"), "unknown stg_mode 'sideways'"),
    ],
)
def test_bad_settings_name_the_field(settings, message):
    with pytest.raises(ValueError, match=message):
        resolve_settings(settings, TWO_B)


def test_stg_without_blocks_and_blocks_beyond_the_model_are_refused():
    with pytest.raises(ValueError, match="stg_scale 1 has no block to perturb"):
        resolve_settings(Settings(stg_scale=1.0), RELEASE_DEFAULTS["2b-0.9.6-distilled"])
    with pytest.raises(ValueError, match="stg_scale 2 in the range from σ = 1.0 has no block"):
        resolve_settings(Settings(stg_scale=2.0), DEV_13B)
    run = resolve_settings(Settings(), TWO_B)
    run.check_blocks(28)
    with pytest.raises(ValueError, match=r"0.9.1 2B's STG perturbs block 19, but this model has 1 block \(0\)"):
        run.check_blocks(1)
    with pytest.raises(
        ValueError, match=r"the Settings' STG perturbs block 28, but this model has 28 blocks \(0 … 27\)"
    ):
        resolve_settings(Settings(stg_blocks=(28,)), TWO_B).check_blocks(28)
    resolve_settings(Settings(stg_blocks=(28,), stg_scale=0.0), TWO_B).check_blocks(28)  # STG off: never used


def test_describe_says_each_value_and_where_it_comes_from():
    line = resolve_settings(Settings(guidance_scale=5.0, stochastic_sampling=True), TWO_B).describe(
        {"guidance_scale": "--guidance 5"}
    )
    assert line.startswith("40 steps, shifted schedule, CFG 5 (--guidance 5), STG 1, STG mode attention_values")
    assert (
        "STG blocks 19, rescaling 0.7, CFG-zero* off, stochastic sampling on (set), 25 fps, 128 prompt tokens" in line
    )
    assert line.endswith(f"unmarked: LTX-Video 0.9.1 2B's defaults (from {TWO_B.source})")
    dev = resolve_settings(Settings(), DEV_13B).describe()
    assert "guidance by σ range from 1/0.996/0.9933/0.985/0.9767/0.9008/0.618, CFG 1/1/6/8/6/1/1" in dev
    assert "STG blocks none/11,25,35,39/22,35,39/28/28/28/28" in dev
    distilled = resolve_settings(Settings(steps=6), RELEASE_DEFAULTS["2b-0.9.8-distilled"]).describe()
    assert "6 steps (set), linear-quadratic schedule (the fixed noise levels are for 8 steps)" in distilled


# --- the pipeline runs what was resolved -------------------------------------------------------------

SMALL = dict(width=64, height=96, frames=9, device="cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Models:
    """0.9.5 2B (28 blocks, causal positions, the 0.9.5 VAE) as files; other releases by name."""
    files = write_tiny_checkpoints(tmp_path_factory.mktemp("release"), layout="0.9.5")
    return Models.load(files["checkpoint"], files["text_encoder"], dtype=torch.float32)


def _as(models: Models, release: str) -> Models:
    return dataclasses.replace(models, release=release)


def _run(models: Models, monkeypatch, settings: Settings) -> dict:
    """text_to_video, watched: each model call's batch, the encoder's negative prompt and prompt length,
    the sampler's keyword arguments and the decoder's."""
    from ltx_core import pipeline

    seen: dict = {"batches": []}
    encode, sample, decode = models.text_encoder.encode, pipeline.sample, models.vae.decode

    def watch_encode(prompt, negative, max_length, **kwargs):
        seen["negative"], seen["tokens"] = negative, max_length
        return encode(prompt, negative, max_length, **kwargs)

    def watch_sample(*args, **kwargs):
        seen["text"], seen["sample"] = args[3], kwargs  # sample(model, noise, sigmas, text, …)
        return sample(*args, **kwargs)

    def watch_decode(latents, timestep, **kwargs):
        seen["decode"] = (timestep, kwargs["noise_scale"])
        return decode(latents, timestep, **kwargs)

    monkeypatch.setattr(models.text_encoder, "encode", watch_encode)
    monkeypatch.setattr(pipeline, "sample", watch_sample)
    monkeypatch.setattr(models.vae, "decode", watch_decode)
    hook = models.transformer.register_forward_pre_hook(lambda module, args: seen["batches"].append(len(args[0])))
    try:
        seen["frames"] = text_to_video(models, "a red fox", settings=settings)
    finally:
        hook.remove()
        monkeypatch.undo()
    return seen


def test_distilled_runs_one_forward_of_batch_one_per_step(models, monkeypatch):
    seen = _run(_as(models, "0.9.8-distilled"), monkeypatch, Settings(**SMALL))
    assert seen["batches"] == [1] * 8  # its 8 noise levels, no CFG, no STG
    assert seen["negative"] is None and seen["text"].negative is None  # no CFG: no negative prompt encoded
    assert seen["tokens"] == 256 and seen["decode"] == (0.05, 0.025)
    assert seen["sample"]["guidance"] == Guidance.from_config(RELEASE_DEFAULTS["2b-0.9.8-distilled"].guidance_config())
    assert seen["sample"]["stochastic_sampling"] is False and seen["sample"]["layout"] == "appended"
    stochastic = _run(_as(models, "0.9.6-distilled"), monkeypatch, Settings(**SMALL))
    assert stochastic["batches"] == [1] * 8 and stochastic["sample"]["stochastic_sampling"] is True


def test_dev_runs_cfg_and_stg_in_one_call_and_each_can_be_turned_off(models, monkeypatch):
    """0.9.5: CFG 3 and STG on block 19: one call of batch 3 per step (negative, positive, perturbed)."""
    steps = dict(SMALL, steps=3)
    cases = {
        (): [3] * 3,
        ("guidance_scale",): [2] * 3,
        ("stg_scale",): [2] * 3,
        ("guidance_scale", "stg_scale"): [1] * 3,
    }
    for off, batches in cases.items():
        values = {"guidance_scale": 1.0, "stg_scale": 0.0}
        seen = _run(models, monkeypatch, Settings(**steps, **{name: values[name] for name in off}))
        assert seen["batches"] == batches, off
        assert (seen["negative"] is not None) == ("guidance_scale" not in off), off


def test_each_setting_reaches_the_sampler_and_the_decoder(models, monkeypatch):
    settings = Settings(
        **SMALL,
        steps=2,
        frame_rate=24.0,
        stochastic_sampling=True,
        text_tokens=64,
        conditioning="in_place",
        cond_noise_scale=0.05,
        decode_timestep=0.1,
        decode_noise_scale=0.0,
        stg_blocks=(3, 4),
        stg_mode="attention_skip",
    )
    seen = _run(models, monkeypatch, settings)
    kwargs = seen["sample"]
    assert (kwargs["frame_rate"], kwargs["stochastic_sampling"], kwargs["layout"]) == (24.0, True, "in_place")
    assert kwargs["cond_noise_scale"] == 0.05 and seen["tokens"] == 64 and seen["decode"] == (0.1, 0.0)
    assert kwargs["guidance"].skip_block_list == (3, 4) and kwargs["guidance"].stg_mode == "attention_skip"
    assert seen["frames"].shape == (1, 9, 96, 64, 3)


def test_blocks_beyond_the_model_are_refused_before_the_prompt_is_encoded(models, monkeypatch):
    monkeypatch.setattr(models.text_encoder, "encode", lambda *a, **k: pytest.fail("encoded first"))
    with pytest.raises(ValueError, match=r"perturbs block 30, but this model has 28 blocks"):
        text_to_video(models, "a red fox", settings=Settings(**SMALL, stg_blocks=(30,)))
