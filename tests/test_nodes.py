"""Node definitions: valid V1 schemas with tooltips, registration, and each node's behaviour and errors."""

from __future__ import annotations

import sys

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comfy_fake import Interrupted, install
from tiny import train_tiny_spiece
from tiny_comfy import CHECKPOINT, CHECKPOINT_095, CHECKPOINT_13B_DEV, CHECKPOINT_DISTILLED, GGUF, T5, VAE
from workflows.build import import_pack

pack = import_pack()
nodes = pack.nodes
CONDITIONS_KEY = pack.ltx_core.latent_guides.CONDITIONS_KEY
FROM_MODEL = "(from the model file)"
WIDGETS = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
# ComfyUI's own LTX node ids (0.3.64): a pack node with one of these ids would be silently dropped.
CORE_LTX_IDS = {
    "EmptyLTXVLatentVideo",
    "LTXVImgToVideo",
    "LTXVAddGuide",
    "LTXVCropGuides",
    "LTXVConditioning",
    "ModelSamplingLTXV",
    "LTXVScheduler",
    "LTXVPreprocess",
    "ModelMergeLTXV",
}


@pytest.mark.parametrize("cls", nodes.NODE_CLASSES, ids=lambda c: c.__name__)
def test_schema_is_valid(cls, comfy):
    node_id = cls.__name__
    assert node_id.startswith(nodes.NODE_ID_PREFIX) and node_id not in CORE_LTX_IDS
    assert nodes.NODE_CLASS_MAPPINGS[node_id] is cls and nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id]
    assert cls.CATEGORY == "LTX-Video (pack)" and cls.DESCRIPTION and callable(getattr(cls, cls.FUNCTION))
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))
    declared = cls.INPUT_TYPES()
    assert set(declared) <= {"required", "optional", "hidden"}
    for group in ("required", "optional"):
        for name, (kind, options) in declared.get(group, {}).items():
            assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
            if isinstance(kind, list):
                assert kind and all(isinstance(v, str) for v in kind)
                assert options.get("default", kind[0]) in kind
            elif kind in WIDGETS:
                default = options["default"]
                assert isinstance(default, WIDGETS[kind]), f"{node_id}.{name} default {default!r}"
                assert options.get("min", default) <= default <= options.get("max", default)
            else:
                assert isinstance(kind, str) and kind.isupper(), f"{node_id}.{name}: socket type {kind!r}"
    parameters = set(getattr(cls, cls.FUNCTION).__code__.co_varnames)
    assert {n for g in declared.values() for n in g} <= parameters


def test_loaders_list_comfy_folders_with_gguf(comfy):
    declared = nodes.LTXPackModelLoader.INPUT_TYPES()["required"]
    checkpoints = [CHECKPOINT, CHECKPOINT_095, CHECKPOINT_DISTILLED, CHECKPOINT_13B_DEV]
    assert declared["model_name"][0] == sorted([*checkpoints, GGUF])
    assert declared["vae_name"][0] == ["(from the model file)", *sorted([*checkpoints, VAE])]
    assert T5 in nodes.LTXPackTextEncoderLoader.INPUT_TYPES()["required"]["text_encoder_name"][0]


def test_loader_errors_name_the_file_and_the_fix(comfy):
    loader = nodes.LTXPackModelLoader()
    with pytest.raises(ValueError, match="holds only the transformer .*Choose a VAE in vae_name"):
        loader.load(GGUF, FROM_MODEL, "default", "default")
    with pytest.raises(ValueError, match="missing.safetensors was not found in models/checkpoints or models/diff"):
        loader.load("missing.safetensors", FROM_MODEL, "default", "default")


def test_loading_is_deterministic_and_fp8_works(comfy):
    model, vae, _ = nodes.LTXPackModelLoader().load(GGUF, VAE, "default", "cpu")
    again, _, _ = nodes.LTXPackModelLoader().load(GGUF, VAE, "default", "cpu")
    assert model.release.name == vae.release.name == "0.9.1" and model.handle.device == "cpu"
    first, second = model.module.state_dict(), again.module.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    fp8, _, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, "(from the model file)", "fp8_e4m3fn", "default")
    assert fp8.module.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn


@pytest.fixture
def user_comfy(monkeypatch, tmp_path, comfy_root):
    """A ComfyUI of its own (files may be added): the tiny models linked in as a user lays them out,
    the T5 file alone, and a stand-in for ComfyUI's bundled T5 tokenizer outside models/."""
    fake = install(monkeypatch, tmp_path)
    for folder, name in (("checkpoints", CHECKPOINT), ("diffusion_models", GGUF), ("vae", VAE), ("text_encoders", T5)):
        (fake.models / folder).mkdir(parents=True, exist_ok=True)
        (fake.models / folder / name).symlink_to(comfy_root / "models" / folder / name)
    fake.tokenizer = tmp_path / "comfy" / "text_encoders" / "t5_tokenizer" / "spiece.model"
    fake.tokenizer.parent.mkdir(parents=True)
    fake.tokenizer.write_bytes(train_tiny_spiece())
    return fake


def _spy_on_text_encoder_loads(monkeypatch) -> list:
    calls = []
    real = nodes.loaders.load_text_encoder

    def spy(path, **kwargs):
        calls.append(kwargs["tokenizer_path"])
        return real(path, **kwargs)

    monkeypatch.setattr(nodes.loaders, "load_text_encoder", spy)
    return calls


def test_text_encoder_takes_the_bundled_tokenizer_only_without_one_beside(user_comfy, monkeypatch):
    calls = _spy_on_text_encoder_loads(monkeypatch)
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    assert calls == [user_comfy.tokenizer]  # decided before loading, loaded once
    assert encoder.module.tokenizer.source == user_comfy.tokenizer
    positive, negative = nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", 16)
    assert positive[0][0].shape == negative[0][0].shape == (1, 16, 32)
    assert positive[0][1]["attention_mask"].shape == (1, 16)
    beside = user_comfy.models / "text_encoders" / "tokenizer" / "spiece.model"
    beside.parent.mkdir()
    beside.write_bytes(user_comfy.tokenizer.read_bytes())
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    assert calls[1:] == [None] and encoder.module.tokenizer.source == beside


def test_text_encoder_without_any_tokenizer_says_so_in_node_words(user_comfy):
    user_comfy.tokenizer = None  # a ComfyUI whose bundled tokenizer is gone
    with pytest.raises(ValueError) as error:
        nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    folder = user_comfy.models / "text_encoders"
    assert str(error.value) == (
        f"{T5}: has no T5 tokenizer (looked for spiece.model and tokenizer.json in {folder}, {folder / 'tokenizer'}); "
        "expected T5's tokenizer (spiece.model or tokenizer.json). Put T5's spiece.model or tokenizer.json (from "
        "google/t5-v1_1-xxl) next to the file in models/text_encoders. ComfyUI's own T5 tokenizer, "
        "comfy/text_encoders/t5_tokenizer/tokenizer.json, is missing too: updating or reinstalling ComfyUI brings "
        f"it back. (file: {folder / T5})"
    )


def test_bundled_tokenizer_is_found_in_comfyuis_namespace_package(tmp_path, monkeypatch):
    """In ComfyUI `comfy` and `comfy.text_encoders` have no __init__.py, so they have no __file__."""
    bridge = nodes.comfy_bridge
    bundled = tmp_path / "ComfyUI" / "comfy" / "text_encoders" / "t5_tokenizer" / "tokenizer.json"
    bundled.parent.mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path / "ComfyUI"))
    try:
        import comfy.text_encoders

        assert comfy.text_encoders.__file__ is None
        assert bridge.default_tokenizer() is None
        bundled.write_text("{}")
        assert bridge.default_tokenizer() == bundled
    finally:
        for name in ("comfy.text_encoders", "comfy"):
            sys.modules.pop(name, None)


def _truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _write_gguf(path, architecture: str, key: str) -> None:
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_tensor(key, np.zeros((2, 2), np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()


TEXT_ENCODER_MISTAKES = {  # file written into models/text_encoders → what the node must say
    "checkpoint": (
        lambda p: p.symlink_to(p.parents[1] / "checkpoints" / CHECKPOINT),
        "contains an LTX-Video transformer and an LTX-Video VAE; expected a T5 text encoder. Choose it in "
        "model_name of the LTX Model Loader (pack) (models/checkpoints or models/diffusion_models).",
    ),
    "vae": (
        lambda p: p.symlink_to(p.parents[1] / "vae" / VAE),
        "contains an LTX-Video VAE; expected a T5 text encoder. Choose it in vae_name of the LTX Model Loader",
    ),
    "clip": (
        lambda p: save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2)}, p),
        "contains no known model (none of the LTX-Video transformer, VAE or T5 key layouts); expected a T5",
    ),
    "truncated": (
        lambda p: (p.write_bytes((p.parent / T5).read_bytes()), _truncated(p)),
        "is truncated: its header describes",
    ),
    "transformer gguf": (
        lambda p: p.symlink_to(p.parents[1] / "diffusion_models" / GGUF),
        "contains an LTX-Video transformer; expected a T5 text encoder. Choose it in model_name",
    ),
    "flux gguf": (
        lambda p: _write_gguf(p, "flux", "double_blocks.0.img_attn.qkv.weight"),
        "general.architecture is 'flux'; expected a T5 encoder GGUF",
    ),
}


@pytest.mark.parametrize("mistake", TEXT_ENCODER_MISTAKES)
def test_each_text_encoder_mistake_reaches_the_user(user_comfy, mistake):
    write, message = TEXT_ENCODER_MISTAKES[mistake]
    name = f"{mistake.replace(' ', '_')}.{'gguf' if 'gguf' in mistake else 'safetensors'}"
    write(user_comfy.models / "text_encoders" / name)
    with pytest.raises(ValueError) as error:
        nodes.LTXPackTextEncoderLoader().load(name, "default", "default")
    _assert_in_node_words(str(error.value), f"{name}: {message}")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "tokenizer.json: is not a readable tokenizer.json"),
        (b'{"version": "1.0", "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}}', "no </s>"),
    ],
)
def test_a_wrong_tokenizer_beside_the_file_is_reported(user_comfy, content, message):
    (user_comfy.models / "text_encoders" / "tokenizer.json").write_bytes(content)
    with pytest.raises(ValueError) as error:
        nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    _assert_in_node_words(str(error.value), message)
    assert "Replace that file with T5's spiece.model or tokenizer.json" in str(error.value)


def test_each_model_loader_mistake_reaches_the_user(user_comfy):
    models = user_comfy.models
    (models / "checkpoints" / T5).symlink_to(models / "text_encoders" / T5)
    (models / "diffusion_models" / VAE).symlink_to(models / "vae" / VAE)
    _write_gguf(models / "diffusion_models" / "t5.gguf", "t5encoder", "enc.blk.0.attn_q.weight")
    (models / "diffusion_models" / "cut.safetensors").write_bytes((models / "checkpoints" / CHECKPOINT).read_bytes())
    _truncated(models / "diffusion_models" / "cut.safetensors")
    split = models / "checkpoints" / "transformer_only.safetensors"
    save_file({"adaln_single.emb.timestep_embedder.linear_1.weight": torch.zeros(2, 2)}, split)
    mistakes = {  # (model_name, vae_name) → message
        (T5, FROM_MODEL): f"{T5}: contains a T5 text encoder; expected an LTX-Video transformer. Choose it in "
        "text_encoder_name of the LTX Text Encoder Loader (pack) (models/text_encoders).",
        (VAE, FROM_MODEL): f"{VAE}: contains an LTX-Video VAE; expected an LTX-Video transformer. Choose it in "
        "vae_name",
        ("t5.gguf", FROM_MODEL): "t5.gguf: general.architecture is 't5encoder'; expected 'ltxv'; this GGUF holds "
        "another model. Choose it in text_encoder_name",
        ("cut.safetensors", FROM_MODEL): "cut.safetensors: is truncated",
        (CHECKPOINT, "transformer_only.safetensors"): "transformer_only.safetensors: contains an LTX-Video "
        "transformer; expected an LTX-Video VAE. Choose it in model_name",
        (GGUF, GGUF): f"{GGUF} was not found in models/vae or models/checkpoints (looked in {models / 'vae'}, "
        f"{models / 'checkpoints'}); put the file there",
    }
    for (model_name, vae_name), message in mistakes.items():
        with pytest.raises(ValueError) as error:
            nodes.LTXPackModelLoader().load(model_name, vae_name, "default", "default")
        _assert_in_node_words(str(error.value), message)


def _assert_in_node_words(message: str, expected: str) -> None:
    assert expected in message, message
    assert ".." not in message  # one period between sentences
    for api_word in ("load_transformer", "load_vae", "load_text_encoder", "tokenizer_path", "loader."):
        assert api_word not in message, message


def test_empty_latent_checks_sizes():
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(96, 64, 17, 2)
    assert latent["samples"].shape == (2, 128, 3, 2, 3)
    with pytest.raises(ValueError, match="use 17 or 25"):
        nodes.LTXPackEmptyLatentVideo().make(96, 64, 20, 1)
    with pytest.raises(ValueError, match="got width 100.*use 96 or 128"):
        nodes.LTXPackEmptyLatentVideo().make(100, 64, 17, 1)


def test_image_condition_chains_and_checks(comfy):
    _, vae, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, "(from the model file)", "default", "default")
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, 17, 1)
    image = torch.rand(1, 50, 70, 3)
    (first,) = nodes.LTXPackImageCondition().condition(latent, vae, image, 0, 1.0, 29)
    (both,) = nodes.LTXPackImageCondition().condition(first, vae, image, -1, 0.5, 0)
    assert both["noise_mask"].flatten().tolist() == [0.0, 1.0, 0.5]
    assert not torch.equal(both["samples"][:, :, 2], latent["samples"][:, :, 2])
    recorded = both[CONDITIONS_KEY]  # exactly, for 0.9.5+ models; the input's list is not changed
    assert [(c.frame, c.strength) for c in recorded] == [(0, 1.0), (16, 0.5)] and len(first[CONDITIONS_KEY]) == 1
    assert torch.equal(recorded[1].latents, both["samples"][:, :, 2:])
    # An image between latent frames is recorded only (0.9.5+ models append it); a clip there is refused.
    (between,) = nodes.LTXPackImageCondition().condition(first, vae, image, 3, 1.0, 0)
    assert [c.frame for c in between[CONDITIONS_KEY]] == [0, 3] and torch.equal(between["samples"], first["samples"])
    with pytest.raises(ValueError, match="a clip can start at frame 0 or a multiple of 8, got 3: use 0 or 8"):
        nodes.LTXPackImageCondition().condition(latent, vae, torch.rand(9, 64, 64, 3), 3, 1.0, 0)
    with pytest.raises(ValueError, match="strength 1.5 is out of range"):
        nodes.LTXPackImageCondition().condition(latent, vae, image, 0, 1.5, 0)
    with pytest.raises(ValueError, match="1 \\+ 8·k frames: use 1 or 9"):
        nodes.LTXPackImageCondition().condition(latent, vae, torch.rand(4, 64, 64, 3), 0, 1.0, 0)


def test_sampler_reports_progress_keeps_conditions_and_can_be_cancelled(comfy):
    model, vae, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, "(from the model file)", "default", "default")
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    positive, negative = nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", 16)
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, 9, 1)
    (latent,) = nodes.LTXPackImageCondition().condition(latent, vae, torch.rand(1, 64, 64, 3), 0, 1.0, 0)
    sampler = nodes.LTXPackSampler()
    args = (model, positive, negative, latent, 7, 2, 3.0, "auto", 25.0, 1.0)
    (out,) = sampler.sample(*args)
    assert comfy.progress == [(1, 2), (2, 2)]
    assert torch.allclose(out["samples"][:, :, 0], latent["samples"][:, :, 0])  # the first frame stays
    assert torch.equal(out["samples"], sampler.sample(*args)[0]["samples"])  # seeded
    (custom,) = sampler.sample(*args[:-1], 1.0, sigmas=torch.tensor([1.0, 0.5, 0.0]))
    assert custom["samples"].shape == out["samples"].shape
    comfy.interrupt_after = comfy.checks + 1
    with pytest.raises(Interrupted):
        sampler.sample(*args)
    with pytest.raises(
        ValueError, match=r"\(1, 16, 2, 2, 2\) \(16 channels, 5-D\); an LTX-Video latent video is \(batch, 128, frames"
    ):
        sampler.sample(model, positive, negative, {"samples": torch.zeros(1, 16, 2, 2, 2)}, *args[4:])
    comfy.interrupt_after = None
    (between,) = nodes.LTXPackImageCondition().condition(latent, vae, torch.rand(1, 64, 64, 3), 3, 1.0, 0)
    with pytest.raises(ValueError) as error:  # 0.9.1 keeps conditions in place
        sampler.sample(model, positive, negative, between, *args[4:])
    _assert_in_node_words(str(error.value), "frame 3, but this 0.9.1 model writes conditions in place")
    _assert_in_node_words(str(error.value), "set that node's frame to 0 or 8")


def _keyframes(checkpoint: str, last: int, seed: int = 5, steps: int = 3):
    """EmptyLatent → ImageCondition(frame 0) → ImageCondition(`last`) → Sampler on `checkpoint`, 25
    frames of 64×64. Returns the sampler's latents and what the core needs to redo it."""
    model, vae, _ = nodes.LTXPackModelLoader().load(checkpoint, FROM_MODEL, "default", "default")
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    positive, negative = nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", 16)
    images = torch.rand(2, 1, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, 25, 1)
    for image, frame in zip(images, (0, last), strict=True):
        (latent,) = nodes.LTXPackImageCondition().condition(latent, vae, image, frame, 1.0, 29)
    args = (model, positive, negative, latent, seed, steps, 3.0, "auto", 25.0, 1.0)
    (out,) = nodes.LTXPackSampler().sample(*args)
    text = nodes.types.from_conditioning(positive, negative, model.module.dtype)
    return out["samples"], model, vae, images, latent, text


def _core_sample(model, latent, text, conditions, seed: int = 5, steps: int = 3, **layout) -> torch.Tensor:
    core = pack.ltx_core
    samples = latent["samples"]
    generator = core.sampling.noise.seeded_generator(seed)
    noise = core.sampling.noise.draw_noise(tuple(samples.shape), generator)
    sigmas = core.sampling.schedule.make_schedule(model.defaults.schedule, steps, samples[0, 0].numel())
    with torch.inference_mode():
        return core.sample(
            model.module, noise, sigmas, text, guidance_scale=3.0, conditions=conditions, generator=generator, **layout
        )


@pytest.mark.parametrize("last", [-1, 13])
def test_keyframes_follow_the_release_095(comfy, last):
    out, model, vae, images, latent, text = _keyframes(CHECKPOINT_095, last)
    assert model.release.name == "0.9.5"
    core = pack.ltx_core
    with torch.inference_mode():  # encoded as keyframes_to_video encodes them
        encoded = [
            vae.module.encode(
                core.media.video_tensor_from_frames(
                    core.media.compress_like_h264(core.media.resize_and_crop(image, 64, 64), 29)
                )
            ).float()
            for image in images
        ]
    conditions = [core.FrameCondition(encoded[0], 0), core.FrameCondition(encoded[1], 24 if last < 0 else last)]
    expected = _core_sample(model, latent, text, conditions, layout="appended", cond_noise_scale=0.15)
    assert out.shape == latent["samples"].shape  # the appended tokens are dropped
    assert torch.allclose(out, expected, atol=1e-5, rtol=0), (out - expected).abs().max()
    if last < 0:  # negative control: the old nodes wrote the last frame in place
        in_place = core.latent_guides.conditions_from_mask(latent["samples"], latent["noise_mask"])
        old = _core_sample(model, latent, text, in_place, initial=latent["samples"])
        assert (out - old).abs().max() > 1e-2


def test_keyframes_stay_in_place_for_091(comfy):
    out, model, _, _, latent, text = _keyframes(CHECKPOINT, -1)
    assert model.release.name == "0.9.1" and latent["noise_mask"].flatten().tolist() == [0.0, 1.0, 1.0, 0.0]
    in_place = pack.ltx_core.latent_guides.conditions_from_mask(latent["samples"], latent["noise_mask"])
    assert torch.equal(out, _core_sample(model, latent, text, in_place, initial=latent["samples"]))


def test_core_guides_in_our_sampler_are_cut_by_our_decode_or_refused(comfy):
    """A LATENT + CONDITIONING as core's LTXVAddGuide leaves them (one guide frame after the video's,
    `keyframe_idxs` in the conditioning): sampled by a 0.9.5+ model with the guide frame returned after the
    video's, which our decode leaves out; refused by a 0.9.1 model and after one of our condition nodes."""
    model, vae, _ = nodes.LTXPackModelLoader().load(CHECKPOINT_095, FROM_MODEL, "default", "default")
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    positive, negative = nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", 16)
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, 17, 1)  # 3 latent frames of 2 × 2
    guide = torch.randn(1, 128, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    idxs = torch.tensor([[11] * 4, [0, 0, 32, 32], [0, 32, 0, 32]])[None]
    guided = {"samples": torch.cat([latent["samples"], guide], dim=2), "noise_mask": torch.ones(1, 1, 4, 1, 1)}
    guided["noise_mask"][:, :, 3] = 0.0
    positive, negative = ([[c, {**extra, "keyframe_idxs": idxs}]] for c, extra in (positive[0], negative[0]))
    args = (positive, negative, guided, 5, 2, 3.0, "auto", 25.0, 1.0)
    (out,) = nodes.LTXPackSampler().sample(model, *args)
    assert out["samples"].shape == (1, 128, 4, 2, 2) and torch.equal(out["samples"][:, :, 3:], guide)
    decode = nodes.LTXPackVAEDecode()
    (frames,) = decode.decode(out, vae, 0.05, 0.025, 0, "off")
    (cropped,) = decode.decode({"samples": out["samples"][:, :, :3]}, vae, 0.05, 0.025, 0, "off")
    assert frames.shape == (17, 64, 64, 3) and torch.equal(frames, cropped)
    (ours,) = nodes.LTXPackImageCondition().condition(guided, vae, torch.rand(1, 64, 64, 3), 0, 1.0, 0)
    with pytest.raises(ValueError) as error:
        nodes.LTXPackSampler().sample(model, positive, negative, ours, *args[3:])
    _assert_in_node_words(str(error.value), "an LTX Image Condition (pack) node comes after core's LTXVAddGuide")
    old, _, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, FROM_MODEL, "default", "default")
    with pytest.raises(ValueError) as error:
        nodes.LTXPackSampler().sample(old, *args)
    _assert_in_node_words(str(error.value), "appends guide frames, which this 0.9.1 model does not take")


def test_memory_modes_reach_the_memory_manager(comfy, monkeypatch):
    model, vae, _ = nodes.LTXPackModelLoader().load(
        CHECKPOINT, "(from the model file)", "default", "default", "low_vram"
    )
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default", "low_vram")
    assert model.handle.memory == vae.handle.memory == encoder.handle.memory == "low_vram"
    positive, negative = nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", 16)
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, 9, 1)
    sampler = nodes.LTXPackSampler()
    args = (model, positive, negative, latent, 7, 1, 3.0, "auto", 25.0, 1.0)
    streamed = sampler.sample(*args)[0]["samples"]  # from the loader: low_vram
    whole = sampler.sample(*args, memory="default")[0]["samples"]
    assert model.handle.loads == ["low_vram", "default"]
    assert torch.equal(streamed, whole)
    # room for the activations: guidance doubles the batch of 8 tokens of the 32-wide tiny model
    config = model.module.config
    expected = pack.ltx_core.memory.transformer_activation_bytes(config.hidden_dim, 2, 8, model.module.dtype)
    assert model.handle.activations == [expected] * 2 and encoder.handle.activations[0] > 0
    budgets = []
    monkeypatch.setattr(
        type(vae.module),
        "decode",
        lambda self, *a, **k: budgets.append(k["memory_budget"]) or torch.zeros(1, 3, 9, 64, 64),
    )
    nodes.LTXPackVAEDecode().decode({"samples": whole}, vae, 0.05, 0.025, 0, "auto")
    assert budgets == [pack.ltx_core.memory.LOW_VRAM_VAE_BUDGET]


def test_fp8_matmul_converts_gguf_layers_and_the_vae_stays_in_bf16_or_fp32(comfy):
    fp8 = pack.ltx_core.model.fp8
    model, vae, _ = nodes.LTXPackModelLoader().load(GGUF, VAE, "fp8_matmul", "cpu")
    linears = [m for name, m in model.module.named_modules() if name.startswith("transformer_blocks.") and
               hasattr(m, "in_features")]  # fmt: skip
    assert linears and all(isinstance(m, fp8.Fp8Linear) for m in linears)  # none stayed GGML blocks
    assert next(vae.module.parameters()).dtype == torch.bfloat16
    for weight_dtype, expected in (("fp16", torch.bfloat16), ("fp32", torch.float32), ("fp8_e4m3fn", torch.bfloat16)):
        _, vae, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, FROM_MODEL, weight_dtype, "cpu")
        assert next(vae.module.parameters()).dtype == expected, weight_dtype


def test_fp16_vae_file_runs_in_bf16(user_comfy):
    from safetensors.torch import load_file

    tensors = {k: v.half() for k, v in load_file(user_comfy.models / "vae" / VAE).items()}
    save_file(tensors, user_comfy.models / "vae" / "vae_fp16.safetensors", metadata=_metadata(VAE, user_comfy))
    _, vae, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, "vae_fp16.safetensors", "default", "cpu")
    assert next(vae.module.parameters()).dtype == torch.bfloat16


def _metadata(name: str, comfy) -> dict:
    from safetensors import safe_open

    with safe_open(comfy.models / "vae" / name, "pt") as f:
        return f.metadata()


def test_decode_noise_only_for_timestep_conditioned_vaes(user_comfy):
    """The 0.9.0 VAE was released without decode noise (official code, diffusers and ComfyUI core add it
    only for timestep-conditioned decoders): its decode ignores decode_noise_scale; a 0.9.1 one uses it."""
    import json

    from tiny import TINY_VAE_LAYOUTS, random_vae_state_dict

    layout = {**TINY_VAE_LAYOUTS["0.9.0"][0], "latent_channels": 128}
    with torch.device("meta"):
        vae_090 = pack.ltx_core.VideoVAE(pack.ltx_core.VAEConfig.from_metadata(layout))
    weights = random_vae_state_dict({k: v.shape for k, v in vae_090.state_dict().items()}, 4)
    metadata = {"config": json.dumps({"vae": layout})}
    save_file(weights, user_comfy.models / "vae" / "vae_090.safetensors", metadata=metadata)
    latent = {"samples": torch.randn(1, 128, 2, 2, 3)}
    decode = nodes.LTXPackVAEDecode().decode
    for name, noisy in (("vae_090.safetensors", False), (VAE, True)):
        _, vae, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, name, "default", "cpu")
        assert vae.module.config.timestep_conditioning == noisy
        quiet, loud = (decode(latent, vae, 0.05, scale, 0, "off")[0] for scale in (0.0, 0.5))
        assert torch.equal(quiet, loud) != noisy, name


def test_model_folders_are_listed_once_from_comfyuis_file_list(user_comfy):
    folder = user_comfy.models / "text_encoders" / "t5_folder"
    folder.mkdir()
    for name in ("config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        (folder / name).write_bytes(b"{}")
    (user_comfy.models / "text_encoders" / "notes.json").write_text("{}")  # not a model
    listed = nodes.LTXPackTextEncoderLoader.INPUT_TYPES()["required"]["text_encoder_name"][0]
    assert listed == sorted([T5, "t5_folder"])


def test_decode_and_encode_round_trip_and_decode_can_be_cancelled(comfy):
    _, vae, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, "(from the model file)", "default", "default")
    (latent,) = nodes.LTXPackVAEEncode().encode(torch.rand(9, 64, 96, 3), vae, "auto")
    assert latent["samples"].shape == (1, 128, 2, 2, 3)
    (frames,) = nodes.LTXPackVAEDecode().decode(latent, vae, 0.05, 0.025, 0, "off")
    assert frames.shape == (9, 64, 96, 3) and 0 <= frames.min() and frames.max() <= 1
    with pytest.raises(ValueError, match="use 9 or 17"):
        nodes.LTXPackVAEEncode().encode(torch.rand(10, 64, 96, 3), vae, "auto")
    comfy.interrupt_after = comfy.checks + 5  # part-way through the decoder's layers
    with pytest.raises(Interrupted):
        nodes.LTXPackVAEDecode().decode(latent, vae, 0.05, 0.025, 0, "auto")


def test_conditioning_from_core_text_encoders_is_accepted(comfy):
    from ltxpack.nodes.types import from_conditioning

    core_style = [[torch.randn(1, 7, 32), {"pooled_output": None}]]  # no attention mask
    text = from_conditioning(core_style, core_style, torch.float32)
    assert text.mask.tolist() == [[1] * 7] and text.negative is not None


def test_pack_registers_only_inside_comfyui(monkeypatch):
    import types

    from test_package import _import_pack

    assert not hasattr(_import_pack("ltx_pack_plain"), "NODE_CLASS_MAPPINGS")
    monkeypatch.setitem(sys.modules, "folder_paths", types.ModuleType("folder_paths"))
    inside = _import_pack("ltx_pack_in_comfy")
    assert set(inside.NODE_CLASS_MAPPINGS) == set(nodes.NODE_CLASS_MAPPINGS)
    assert "comfy" not in sys.modules and "comfy_api" not in sys.modules
