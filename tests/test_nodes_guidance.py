"""The release's settings in the sampler node, and LTX Guidance (pack).

Steps 0 and guidance 0 run the release's steps or fixed noise levels, its guidance (CFG and STG per noise
level, CFG-zero*) and its sampling, each step's branches in one model call: the node's latents equal
`ltx_core.sample` given the release's Guidance, sigmas and stochastic flag (0 difference, float32) for a 2B
dev, two 2B distilled and a 13B dev release (a narrow 48-block stand-in). The guidance node's custom
settings reach the sampler; saved values (30 steps, guidance 3) mean constant CFG as before; errors are
in node-input words. Negative controls show that each comparison can fail.
"""

from __future__ import annotations

import pytest
import torch

from comfy_fake import install
from tiny_comfy import CHECKPOINT_095, CHECKPOINT_13B_DEV, CHECKPOINT_DISTILLED, SCHEDULER_095, T5, write_single_file
from workflows.build import import_pack

pack = import_pack()
nodes, core = pack.nodes, pack.ltx_core
Guidance = core.sampling.guidance.Guidance
FROM_MODEL = "(from the model file)"
DEV_2B = "ltxv-2b-0.9.6-dev.safetensors"  # 28 narrow blocks: the official STG block 19 exists
SEED = 5


@pytest.fixture(scope="module")
def dev_2b(tmp_path_factory):
    return write_single_file(tmp_path_factory.mktemp("dev_2b") / DEV_2B, 28, "0.9.5", scheduler=SCHEDULER_095)


@pytest.fixture
def comfy(monkeypatch, tmp_path, comfy_root, dev_2b):
    """The fake ComfyUI over the tiny models, with the 28-block 2B dev checkpoint added."""
    fake = install(monkeypatch, tmp_path)
    for folder, name in (("checkpoints", CHECKPOINT_095), ("checkpoints", CHECKPOINT_DISTILLED),
                         ("checkpoints", CHECKPOINT_13B_DEV), ("text_encoders", T5)):  # fmt: skip
        (fake.models / folder).mkdir(parents=True, exist_ok=True)
        (fake.models / folder / name).symlink_to(comfy_root / "models" / folder / name)
    (fake.models / "checkpoints" / DEV_2B).symlink_to(dev_2b)
    fake.tokenizer = comfy_root / "bundled_tokenizer" / "spiece.model"
    return fake


def _inputs(checkpoint: str, release: str = "auto") -> tuple:
    """(model, positive, negative, latent of 9 frames at 64 × 64) from the nodes."""
    model, _, _ = nodes.LTXPackModelLoader().load(checkpoint, FROM_MODEL, "default", "default", "default", release)
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    positive, negative = nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", 16)
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, 9, 1)
    return model, positive, negative, latent


def _node(model, positive, negative, latent, steps: int, guidance: float, **optional) -> tuple[torch.Tensor, list]:
    """The sampler node's latents and the batch of each model call."""
    batches = []
    hook = model.module.register_forward_pre_hook(lambda _, args: batches.append(args[0].shape[0]))
    try:
        args = (model, positive, negative, latent, SEED, steps, guidance, "auto", 25.0, 1.0)
        (out,) = nodes.LTXPackSampler().sample(*args, **optional)
    finally:
        hook.remove()
    return out["samples"], batches


def _core(model, positive, negative, latent, sigmas, guidance: Guidance, stochastic: bool) -> torch.Tensor:
    """ltx_core.sample on the same inputs, seed and settings."""
    text = nodes.types.from_conditioning(positive, negative if guidance.uses_negative else None, torch.float32)
    generator = core.sampling.noise.seeded_generator(SEED)
    noise = core.sampling.noise.draw_noise(tuple(latent["samples"].shape), generator)
    with torch.inference_mode():
        return core.sample(
            model.module, noise, sigmas, text, guidance=guidance, stochastic_sampling=stochastic, generator=generator
        )


@pytest.mark.parametrize(
    ("checkpoint", "release", "steps", "branches", "stochastic"),
    [
        (DEV_2B, "0.9.6-dev", 40, {3}, False),  # CFG 3 + STG 1 on block 19 at every step
        (CHECKPOINT_DISTILLED, "0.9.8-distilled", 8, {1}, False),  # 8 fixed noise levels, no guidance
        (CHECKPOINT_DISTILLED, "0.9.6-distilled", 8, {1}, True),  # 8 linear-quadratic steps, stochastic
        (CHECKPOINT_13B_DEV, "0.9.8-dev", 30, {1, 2, 3}, False),  # CFG and STG per noise-level range
    ],
)
def test_steps_0_guidance_0_run_the_release(comfy, checkpoint, release, steps, branches, stochastic):
    model, positive, negative, latent = _inputs(checkpoint, release)
    defaults = model.defaults
    assert (model.release.name, model.release.size) == (release, "13B" if "13b" in checkpoint else "2B")
    out, batches = _node(model, positive, negative, latent, 0, 0.0)

    guidance = Guidance.from_config(defaults.guidance_config())
    tokens = latent["samples"][0, 0].numel()
    sigmas = core.make_schedule(defaults.schedule, defaults.steps, tokens)
    if defaults.timesteps is not None:  # the 0.9.7+ distilled releases: their own noise levels
        assert sigmas[:-1].tolist() == pytest.approx(defaults.timesteps, abs=1e-7)
    assert defaults.stochastic_sampling is stochastic and len(sigmas) == steps + 1
    expected = _core(model, positive, negative, latent, sigmas, guidance, stochastic)
    assert torch.equal(out, expected), (out - expected).abs().max()
    assert comfy.progress[-1] == (steps, steps)
    # one model call per step, as many samples as the step's branches (negative, positive, perturbed)
    assert batches == [len(step.branches) for step in guidance.per_step(sigmas[:-1])] and set(batches) == branches
    room = core.memory.transformer_activation_bytes(
        model.module.config.hidden_dim, max(branches), tokens, torch.float32
    )
    assert model.handle.activations[-1] == room  # the memory estimate counts the largest batch
    (node_guidance,) = nodes.LTXPackGuidance().guidance(model, "release", 3.0, 1.0, "attention_values", "", 0.7, False)
    assert node_guidance == guidance  # the guidance node's preset release is the same guidance

    # Negative controls: the other sampling, and constant CFG 3 without STG, give other latents.
    other, _ = _node(model, positive, negative, latent, 0, 0.0, sampling="euler" if stochastic else "stochastic")
    assert (other - out).abs().max() > 1e-3
    constant, constant_batches = _node(model, positive, negative, latent, 0, 3.0)
    assert (constant - out).abs().max() > 1e-3 and set(constant_batches) == {2}

    # The negative prompt is read only when a step runs CFG: one of the wrong width fails only then.
    wrong = [[torch.randn(1, 4, 7), {}]]
    if guidance.uses_negative:
        with pytest.raises(ValueError, match="the negative CONDITIONING holds text features of width 7"):
            _node(model, positive, wrong, latent, 0, 0.0)
    else:
        assert torch.equal(_node(model, positive, wrong, latent, 0, 0.0)[0], out)


def test_saved_values_30_steps_guidance_3_keep_constant_cfg(comfy):
    """Workflows saved before steps 0 / guidance 0 existed: 30 steps of the release's schedule with
    constant CFG 3 and no STG, as the sampler ran them, on a release whose own guidance has STG."""
    model, positive, negative, latent = _inputs(DEV_2B, "0.9.6-dev")
    out, batches = _node(model, positive, negative, latent, 30, 3.0)
    sigmas = core.make_schedule("linear_quadratic", 30, latent["samples"][0, 0].numel())
    text = nodes.types.from_conditioning(positive, negative, torch.float32)
    generator = core.sampling.noise.seeded_generator(SEED)
    noise = core.sampling.noise.draw_noise(tuple(latent["samples"].shape), generator)
    with torch.inference_mode():
        expected = core.sample(model.module, noise, sigmas, text, guidance_scale=3.0, generator=generator)
    assert torch.equal(out, expected) and batches == [2] * 30
    release, _ = _node(model, positive, negative, latent, 30, 0.0)  # negative control: the release's guidance
    assert (release - out).abs().max() > 1e-3


def test_custom_guidance_reaches_the_sampler(comfy):
    model, positive, negative, latent = _inputs(CHECKPOINT_095)  # one block: STG perturbs block 0
    (custom,) = nodes.LTXPackGuidance().guidance(model, "custom", 2.5, 1.5, "attention_skip", " 0 ,", 0.5, True)
    assert custom == Guidance(
        guidance_scale=2.5,
        stg_scale=1.5,
        rescaling_scale=0.5,
        skip_block_list=(0,),
        stg_mode="attention_skip",
        cfg_star_rescale=True,
    )
    out, batches = _node(model, positive, negative, latent, 3, 3.0, guidance_settings=custom)  # the widget unused
    sigmas = core.make_schedule(model.defaults.schedule, 3, latent["samples"][0, 0].numel())
    expected = _core(model, positive, negative, latent, sigmas, custom, False)
    assert torch.equal(out, expected) and batches == [3, 3, 3]
    widget, _ = _node(model, positive, negative, latent, 3, 3.0)  # negative control: the widget's CFG 3 alone
    assert (widget - out).abs().max() > 1e-3
    (cfg_only,) = nodes.LTXPackGuidance().guidance(model, "custom", 2.5, 0.0, "attention_values", "", 0.7, False)
    assert _node(model, positive, negative, latent, 3, 0.0, guidance_settings=cfg_only)[1] == [2, 2, 2]


def _assert_in_node_words(message: str, *expected: str) -> None:
    for words in expected:
        assert words in message, message
    assert "skip_block_list" not in message and "guidance_scale" not in message  # the core's words


def test_guidance_errors_are_in_node_words(comfy):
    model, positive, negative, latent = _inputs(CHECKPOINT_095)  # one block, the 0.9.5 release: STG on 19
    guide = nodes.LTXPackGuidance().guidance
    cases = [
        (
            lambda: guide(model, "custom", 3.0, 1.0, "attention_values", "1", 0.7, False),
            ["skip_blocks '1' of LTX Guidance (pack) skips block 1 for STG", "this 2B model has 1 block (0 to 0)",
             "name blocks below 1 in skip_blocks"],
        ),
        (
            lambda: guide(model, "custom", 3.0, 1.0, "attention_values", "19;20", 0.7, False),
            ["skip_blocks '19;20' of LTX Guidance (pack) is not a list of block numbers", "19, 20"],
        ),
        (
            lambda: guide(model, "custom", 3.0, 1.0, "attention_values", "-1", 0.7, False),
            ["is not a list of block numbers"],
        ),
        (
            lambda: guide(model, "custom", 3.0, 1.0, "attention_values", " ", 0.7, False),
            ["stg_scale 1 of LTX Guidance (pack) has no block to perturb", "or set stg_scale 0"],
        ),
        (
            lambda: guide(model, "release", 3.0, 1.0, "attention_values", "0", 0.7, False),
            ["the 0.9.5 release's guidance skips block 19", "preset custom and blocks below 1"],
        ),
        (
            lambda: _node(model, positive, negative, latent, 2, 0.0),
            ["the 0.9.5 release's guidance skips block 19", "use guidance 1 or more on the sampler"],
        ),
        (
            lambda: _node(model, positive, negative, latent, 2, 0.5),
            ["guidance 0.5 of LTX Sampler (pack) is neither 0 (the release's guidance) nor 1 or more"],
        ),
    ]  # fmt: skip
    for make, words in cases:
        with pytest.raises(ValueError) as error:
            make()
        _assert_in_node_words(str(error.value), *words)
    # custom blocks unused without STG are no error
    guide(model, "custom", 3.0, 0.0, "attention_values", "30", 0.7, False)


def test_guidance_of_another_model_is_refused_by_the_sampler(comfy):
    big, _, _, _ = _inputs(CHECKPOINT_13B_DEV)
    (official,) = nodes.LTXPackGuidance().guidance(big, "release", 3.0, 1.0, "attention_values", "19", 0.7, False)
    model, positive, negative, latent = _inputs(DEV_2B, "0.9.6-dev")
    with pytest.raises(ValueError) as error:
        _node(model, positive, negative, latent, 2, 0.0, guidance_settings=official)
    _assert_in_node_words(
        str(error.value),
        "the LTX Guidance (pack) connected to guidance_settings skips blocks 22, 28, 35, 39 for STG",
        "this 2B model has 28 blocks (0 to 27): connect the sampler's model to the model input of LTX Guidance",
    )
