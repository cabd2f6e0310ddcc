"""Multiscale in the nodes: LTX Upsampler Loader (pack), LTX Latent Upscale (pack) and the sampler's
multiscale passes.

The upscale node equals `ltx_core.upsample_latents` (0 difference) for spatial and temporal upsamplers,
AdaIN and tone mapping included, and drops the input's conditions. The chain Empty Latent → Sampler
(first pass) → Upscale → Sampler (second pass), with steps 0 and guidance 0, equals the core composed by
hand: `sample()` with the noise levels and guidance of each pass as the core's multiscale settings resolve
them (`resolve_multiscale`), `upsample_latents` between them, each pass's noise from its sampler's seed
(0 difference, float32, the 48-block 13B dev stand-in and the 2B 0.9.8 distilled model). Errors name
node inputs.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from comfy_fake import install
from tiny_comfy import (
    CHECKPOINT,
    CHECKPOINT_13B_DEV,
    CHECKPOINT_DISTILLED,
    DISTILLED_STEPS,
    SCHEDULER_095,
    SPATIAL_UPSCALER,
    T5,
    VAE,
    write_single_file,
    write_upsampler,
)
from workflows.build import import_pack

pack = import_pack()
nodes, core = pack.nodes, pack.ltx_core
CONDITIONS_KEY = core.latent_guides.CONDITIONS_KEY
GUIDE_FRAMES_KEY = core.latent_guides.GUIDE_FRAMES_KEY
FROM_MODEL = "(from the model file)"
TEMPORAL = "ltxv-temporal-upscaler-0.9.7.safetensors"
FIRST_SEED, SECOND_SEED = 5, 6


@pytest.fixture
def comfy(monkeypatch, tmp_path, comfy_root):
    """The fake ComfyUI over the tiny models, with a temporal upsampler in models/upscale_models (where
    Lightricks' own pack listed them) and the workflows' spatial one in models/latent_upscale_models."""
    fake = install(monkeypatch, tmp_path)
    for folder, name in (("checkpoints", CHECKPOINT), ("checkpoints", CHECKPOINT_DISTILLED),
                         ("checkpoints", CHECKPOINT_13B_DEV), ("vae", VAE), ("text_encoders", T5),
                         ("latent_upscale_models", SPATIAL_UPSCALER)):  # fmt: skip
        (fake.models / folder).mkdir(parents=True, exist_ok=True)
        (fake.models / folder / name).symlink_to(comfy_root / "models" / folder / name)
    (fake.models / "upscale_models").mkdir()
    write_upsampler(fake.models / "upscale_models" / TEMPORAL, spatial=False, temporal=True)
    fake.tokenizer = comfy_root / "bundled_tokenizer" / "spiece.model"
    return fake


def _model(checkpoint: str, release: str = "auto") -> tuple:
    model, vae, _ = nodes.LTXPackModelLoader().load(checkpoint, FROM_MODEL, "default", "default", "default", release)
    return model, vae


def _prompts() -> tuple:
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    return nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", 16)


def _upsampler(name: str = SPATIAL_UPSCALER):
    (upsampler,) = nodes.LTXPackUpsamplerLoader().load(name, "default", "default")
    return upsampler


def _latents(shape=(1, 128, 3, 2, 3), seed: int = 1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_loader_lists_both_folders_and_registers_the_newer_one(comfy):
    listed = nodes.LTXPackUpsamplerLoader.INPUT_TYPES()["required"]["upsampler_name"][0]
    assert listed == [SPATIAL_UPSCALER, TEMPORAL]
    paths = nodes.comfy_bridge._folder_paths()
    # ComfyUI 0.3.64 has no latent_upscale_models: the pack registers it under models/, as newer ComfyUI does
    assert paths.folder_names_and_paths["latent_upscale_models"][0] == [str(comfy.models / "latent_upscale_models")]
    assert _upsampler().module.config.kind == "spatial ×2"
    assert _upsampler(TEMPORAL).module.config.kind == "temporal ×2"


def test_a_folder_made_by_extra_model_paths_keeps_its_roots_and_gains_models(comfy):
    paths = nodes.comfy_bridge._folder_paths()
    paths.folder_names_and_paths["latent_upscale_models"] = (["/elsewhere/latent_upscale_models"], set())
    nodes.LTXPackUpsamplerLoader.INPUT_TYPES()
    roots = paths.folder_names_and_paths["latent_upscale_models"][0]
    assert roots == ["/elsewhere/latent_upscale_models", str(comfy.models / "latent_upscale_models")]


@pytest.mark.parametrize(("name", "adain", "tone_map"), [(SPATIAL_UPSCALER, 1.0, 0.0), (TEMPORAL, 0.5, 0.6)])
def test_upscale_equals_the_core_and_follows_the_frame_rule(comfy, name, adain, tone_map):
    _, vae = _model(CHECKPOINT_DISTILLED, "0.9.8-distilled")
    upsampler = _upsampler(name)
    latents = _latents()
    (out,) = nodes.LTXPackLatentUpscale().upscale({"samples": latents}, upsampler, vae, adain, tone_map)
    expected = core.upsample_latents(
        upsampler.module, vae.module, latents, adain_factor=adain, tone_map_compression=tone_map
    )
    assert set(out) == {"samples"} and torch.equal(out["samples"], expected)
    # spatial: height and width doubled; temporal: F latent frames → 2F − 1 (pixel frames 1 + 8k → 1 + 16k)
    assert out["samples"].shape == ((1, 128, 3, 4, 6) if name == SPATIAL_UPSCALER else (1, 128, 5, 2, 3))
    (other,) = nodes.LTXPackLatentUpscale().upscale({"samples": latents}, upsampler, vae, 0.0, 0.0)
    assert (other["samples"] - expected).abs().max() > 1e-3  # negative control: without AdaIN
    assert upsampler.loads == [None, None] and upsampler.activations[-1] > 0  # placed with room for activations


def test_upscale_drops_conditions_and_keeps_the_batch_index(comfy):
    _, vae = _model(CHECKPOINT_DISTILLED, "0.9.8-distilled")
    upsampler = _upsampler()
    latents = _latents()
    condition = core.FrameCondition(latents[:, :, :1], 0, 1.0)
    mask = torch.ones(1, 1, 3, 1, 1)
    latent = {"samples": latents, "noise_mask": mask, CONDITIONS_KEY: [condition], "batch_index": [0]}
    (out,) = nodes.LTXPackLatentUpscale().upscale(latent, upsampler, vae, 1.0, 0.0)
    assert set(out) == {"samples", "batch_index"}
    (plain,) = nodes.LTXPackLatentUpscale().upscale({"samples": latents}, upsampler, vae, 1.0, 0.0)
    assert torch.equal(out["samples"], plain["samples"])


def _assert_words(make, *words: str) -> None:
    with pytest.raises(ValueError) as error:
        make()
    for part in words:
        assert part in str(error.value), str(error.value)


def test_errors_are_in_node_words(comfy, tmp_path):
    loader = nodes.LTXPackUpsamplerLoader()
    (comfy.models / "latent_upscale_models" / VAE).symlink_to(comfy.models / "vae" / VAE)
    (comfy.models / "latent_upscale_models" / T5).symlink_to(comfy.models / "text_encoders" / T5)
    (comfy.models / "checkpoints" / SPATIAL_UPSCALER).symlink_to(
        comfy.models / "latent_upscale_models" / SPATIAL_UPSCALER
    )
    broken = comfy.models / "latent_upscale_models" / "broken.safetensors"
    save_file(
        {"initial_conv.weight": torch.zeros(32, 128, 3, 3, 3), "final_conv.weight": torch.zeros(128, 32, 3, 3, 3)},
        broken,
    )
    _assert_words(
        lambda: loader.load(VAE, "default", "default"),
        f"{VAE}: contains an LTX-Video VAE; expected an LTX-Video latent upsampler",
        "Choose it in vae_name of the LTX Model Loader (pack)",
    )
    _assert_words(lambda: loader.load(T5, "default", "default"), "Choose it in text_encoder_name of the LTX Text")
    (comfy.models / "upscale_models" / CHECKPOINT).symlink_to(comfy.models / "checkpoints" / CHECKPOINT)
    _assert_words(
        lambda: loader.load(CHECKPOINT, "default", "default"),
        "contains an LTX-Video transformer and an LTX-Video VAE; expected an LTX-Video latent upsampler",
        "Choose it in model_name of the LTX Model Loader (pack)",
    )
    (comfy.models / "upscale_models" / CHECKPOINT).unlink()
    _assert_words(
        lambda: loader.load(CHECKPOINT, "default", "default"),
        "was not found in models/latent_upscale_models or models/upscale_models",
    )
    _assert_words(
        lambda: loader.load("broken.safetensors", "default", "default"), "broken.safetensors: lacks the tensor"
    )
    _assert_words(
        lambda: nodes.LTXPackModelLoader().load(SPATIAL_UPSCALER, FROM_MODEL, "default", "default"),
        f"{SPATIAL_UPSCALER}: contains an LTX-Video latent upsampler; expected an LTX-Video transformer",
        "Choose it in upsampler_name of the LTX Upsampler Loader (pack)",
    )

    upscale = nodes.LTXPackLatentUpscale().upscale
    upsampler = _upsampler()
    _, vae = _model(CHECKPOINT_DISTILLED, "0.9.8-distilled")
    _, old_vae = _model(CHECKPOINT)
    _assert_words(
        lambda: upscale({"samples": _latents(), GUIDE_FRAMES_KEY: 1}, upsampler, vae, 1.0, 0.0),
        "LTX Latent Upscale (pack) still holds the guide frames of core's LTXVAddGuide: put LTXVCropGuides before",
    )
    _assert_words(
        lambda: upscale({"samples": _latents()}, upsampler, old_vae, 1.0, 0.0),
        "the VAE given to LTX Latent Upscale (pack) is the 0.9.1 release's",
    )
    _assert_words(
        lambda: upscale({"samples": torch.zeros(1, 4, 8, 8)}, upsampler, vae, 1.0, 0.0),
        "the latent given to LTX Latent Upscale (pack) has shape (1, 4, 8, 8)",
    )


def _sample(model, positive, negative, latent, seed: int, multiscale: str, batches: list | None = None, **inputs):
    """The sampler node's LATENT (steps 0, guidance 0 unless `inputs` say otherwise); `batches` collects the
    batch of each model call."""
    batches = [] if batches is None else batches
    hook = model.module.register_forward_pre_hook(lambda _, args: batches.append(args[0].shape[0]))
    try:
        args = dict(seed=seed, steps=0, guidance=0.0, schedule="auto", frame_rate=25.0, denoise=1.0)
        args.update(inputs)
        (out,) = nodes.LTXPackSampler().sample(model, positive, negative, latent, multiscale=multiscale, **args)
    finally:
        hook.remove()
    return out


def _core_pass(model, positive, negative, shape, generator, settings, initial=None) -> torch.Tensor:
    """ltx_core.sample with one pass's resolved noise levels and guidance, its noise drawn from `generator`."""
    text = nodes.types.from_conditioning(positive, negative if settings.guidance.uses_negative else None, torch.float32)
    noise = core.sampling.noise.draw_noise(shape, generator)
    with torch.inference_mode():
        return core.sample(
            model.module,
            noise,
            settings.sigmas(shape[2] * shape[3] * shape[4]),
            text,
            guidance=settings.guidance,
            stochastic_sampling=settings.stochastic_sampling,
            initial=initial,
            layout=settings.conditioning,
            cond_noise_scale=settings.cond_noise_scale,
            generator=generator,
        )


def test_13b_dev_first_pass_upscale_second_pass_equals_the_core(comfy):
    """The passes' own noise levels (27 of 30 steps, then the last 13) and guidance (CFG and STG per noise
    level, then STG 1 on block 27 without CFG), the second pass going on with the first pass's generator."""
    model, vae = _model(CHECKPOINT_13B_DEV, "0.9.8-dev")
    positive, negative = _prompts()
    upsampler = _upsampler()
    (empty,) = nodes.LTXPackEmptyLatentVideo().make(64, 96, 9, 1)  # the first pass's size
    first_batches, second_batches = [], []
    first = _sample(model, positive, negative, empty, FIRST_SEED, "first pass", first_batches)
    assert comfy.progress[-1] == (27, 27)
    (upscaled,) = nodes.LTXPackLatentUpscale().upscale(first, upsampler, vae, 1.0, 0.0)
    second = _sample(model, positive, negative, upscaled, SECOND_SEED, "second pass", second_batches)
    assert comfy.progress[-1] == (13, 13)
    assert second["samples"].shape == (1, 128, 2, 6, 4) and set(second) == {"samples"}
    assert (set(first_batches), set(second_batches)) == ({1, 2, 3}, {2})

    resolved = core.multiscale.resolve_multiscale(core.Settings(), model.defaults)
    generator = core.sampling.noise.seeded_generator(FIRST_SEED)  # one generator for both passes
    expected_first = _core_pass(model, positive, negative, (1, 128, 2, 3, 2), generator, resolved.first)
    assert torch.equal(first["samples"], expected_first)
    up = core.upsample_latents(upsampler.module, vae.module, expected_first)
    expected = _core_pass(model, positive, negative, tuple(up.shape), generator, resolved.second, initial=up)
    assert torch.equal(second["samples"], expected), (second["samples"] - expected).abs().max()

    # Negative control: the second pass from its own seed instead of the first pass's generator.
    fresh = core.sampling.noise.seeded_generator(SECOND_SEED)
    own_seed = _core_pass(model, positive, negative, tuple(up.shape), fresh, resolved.second, initial=up)
    assert (own_seed - expected).abs().max() > 1e-3


def test_guidance_node_preset_release_follows_the_pass(comfy):
    model, _ = _model(CHECKPOINT_13B_DEV, "0.9.8-dev")
    positive, negative = _prompts()
    latent = {"samples": _latents((1, 128, 2, 2, 2))}
    (preset,) = nodes.LTXPackGuidance().guidance(model, "release", 3.0, 1.0, "attention_values", "", 0.7, False)
    (custom,) = nodes.LTXPackGuidance().guidance(model, "custom", 2.0, 0.0, "attention_values", "", 1.0, False)
    runs = {}
    for name, settings in (("widget", None), ("preset", preset), ("custom", custom)):
        batches = []
        out = _sample(model, positive, negative, latent, 1, "second pass", batches, steps=2, guidance_settings=settings)
        runs[name] = (out["samples"], batches)
    assert torch.equal(runs["preset"][0], runs["widget"][0]) and runs["preset"][1] == [2, 2]  # STG, no CFG
    assert runs["custom"][1] == [2, 2] and (runs["custom"][0] - runs["widget"][0]).abs().max() > 1e-3


def _image_scale(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """ComfyUI's ImageScale with upscale_method bilinear and crop disabled (comfy.utils.common_upscale)."""
    return torch.nn.functional.interpolate(images.movedim(-1, 1), size=(height, width), mode="bilinear").movedim(1, -1)


@pytest.mark.parametrize("size", ["2B", "13B"])
def test_multiscale_chain_to_frames_equals_the_core_pipeline(comfy, size, tmp_path):
    """Empty Latent (first size) → Sampler (first pass) → Upscale → Sampler (second pass) → Decode → ImageScale
    equals `text_to_video(…, Settings(multiscale=True))` frame for frame, 0.9.8 distilled: 2B, and 13B, whose
    second pass asks for tone mapping 0.6 before decoding (the 13B file: 48 narrow blocks, written here)."""
    name = CHECKPOINT_DISTILLED
    if size == "13B":
        name = "ltxv-13b-0.9.8-distilled.safetensors"
        write_single_file(
            comfy.models / "checkpoints" / name,
            48,
            "0.9.5",
            scheduler=SCHEDULER_095,
            allowed_inference_steps=DISTILLED_STEPS,
        )
    model, vae = _model(name, "0.9.8-distilled")
    assert model.release.size == size
    defaults, width, height, seed = model.defaults, 224, 160, 7
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    positive, negative = nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", defaults.text_tokens)
    upsampler = _upsampler()
    (first_w, first_h), _ = core.multiscale.multiscale_sizes(width, height, defaults.downscale_factor)
    (empty,) = nodes.LTXPackEmptyLatentVideo().make(first_w, first_h, 9, 1)
    first = _sample(model, positive, negative, empty, seed, "first pass")
    (upscaled,) = nodes.LTXPackLatentUpscale().upscale(first, upsampler, vae, 1.0, 0.0)
    second = _sample(model, positive, negative, upscaled, seed, "second pass")
    tone_map = defaults.second_pass.tone_map_compression
    assert second.get(nodes.types.TONE_MAP_KEY, 0.0) == tone_map == (0.6 if size == "13B" else 0.0)
    decode = nodes.LTXPackVAEDecode().decode
    (frames,) = decode(second, vae, defaults.decode_timestep, defaults.decode_noise_scale, seed, "auto")
    frames = _image_scale(frames, width, height)

    models = core.Models(model.module, vae.module, encoder.module, model.release, upsampler.module)
    settings = core.Settings(width=width, height=height, frames=9, seed=seed, device="cpu", multiscale=True)
    expected = core.text_to_video(models, "a red fox", "blurry", settings)[0]
    assert frames.shape == expected.shape == (9, height, width, 3)
    assert torch.equal(frames, expected), (frames - expected).abs().max()
    if tone_map:  # negative control: decoded without the tone mapping
        plain = {"samples": second["samples"]}
        (untoned,) = decode(plain, vae, defaults.decode_timestep, defaults.decode_noise_scale, seed, "auto")
        assert (_image_scale(untoned, width, height) - expected).abs().max() > 1e-3


def test_pass_steps_and_connected_sigmas(comfy):
    model, _ = _model(CHECKPOINT_13B_DEV, "0.9.8-dev")
    positive, negative = _prompts()
    latent = {"samples": _latents((1, 128, 2, 2, 2))}
    levels = []
    hook = model.module.register_forward_pre_hook(lambda _, args: levels.append(args[1]))  # (x, σ per token, …)
    try:
        _sample(model, positive, negative, latent, 1, "second pass", [], steps=2)
        sigmas = torch.tensor([0.8, 0.3])
        _sample(model, positive, negative, latent, 1, "second pass", [], sigmas=sigmas)
    finally:
        hook.remove()
    assert comfy.progress[-1] == (2, 2)
    window = core.passes.pass_sigmas(model.defaults, "second", 8, 2)
    seen = [float(t.flatten()[0]) for t in levels]
    assert seen == pytest.approx([*window[:-1].tolist(), 0.8, 0.3])


def test_sampler_pass_errors_are_in_node_words(comfy):
    positive, negative = _prompts()
    latent = {"samples": torch.zeros(1, 128, 2, 2, 2)}
    old, _ = _model(CHECKPOINT)
    _assert_words(
        lambda: _sample(old, positive, negative, latent, 1, "second pass", [], guidance=3.0),
        "multiscale second pass of LTX Sampler (pack): the 0.9.1 2B release has no multiscale recipe",
        "set multiscale to off",
    )
    model, _ = _model(CHECKPOINT_DISTILLED, "0.9.8-distilled")
    _assert_words(
        lambda: _sample(model, positive, negative, latent, 1, "second pass", [], denoise=0.5),
        "denoise 0.5 with the multiscale second pass of LTX Sampler (pack)",
        "set denoise to 1, or connect sigmas",
    )


def test_a_multiscale_pass_needs_the_release_named_where_files_cannot_tell_it(comfy):
    """13B 0.9.7 and 0.9.8 dev files look alike and run alike in one pass, but their upscalers differ: a
    multiscale pass refuses the loader's auto (one pass takes it), and runs once the release is named."""
    model, _ = _model(CHECKPOINT_13B_DEV)
    assert model.release.alike
    with pytest.raises(ValueError, match="set release on the LTX Model Loader \\(pack\\) to the file's release"):
        nodes.sampler._sigmas(model, "first", 0, "auto", 1.0, None, 6)
    named, _ = _model(CHECKPOINT_13B_DEV, "0.9.8-dev")
    assert nodes.sampler._sigmas(named, "first", 0, "auto", 1.0, None, 6).numel() > 2
