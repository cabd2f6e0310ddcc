"""Node definitions: valid V1 schemas with tooltips, registration, and each node's behaviour and errors."""

from __future__ import annotations

import sys

import pytest
import torch

from comfy_fake import Interrupted
from tiny_comfy import CHECKPOINT, GGUF, T5, VAE
from workflows.build import import_pack

pack = import_pack()
nodes = pack.nodes
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
    assert declared["model_name"][0] == sorted([CHECKPOINT, GGUF])
    assert declared["vae_name"][0] == ["(from the model file)", *sorted([CHECKPOINT, VAE])]
    assert T5 in nodes.LTXPackTextEncoderLoader.INPUT_TYPES()["required"]["text_encoder_name"][0]


def test_loader_errors_name_the_file_and_the_fix(comfy):
    loader = nodes.LTXPackModelLoader()
    with pytest.raises(ValueError, match="holds only the transformer .*choose a VAE file"):
        loader.load(GGUF, "(from the model file)", "default", "default")
    with pytest.raises(ValueError, match=VAE.replace(".", r"\.")):
        loader.load(VAE, "(from the model file)", "default", "default")  # a VAE picked as the model
    with pytest.raises(ValueError, match="not found in ComfyUI's checkpoints, diffusion_models"):
        loader.load("missing.safetensors", "(from the model file)", "default", "default")


def test_loading_is_deterministic_and_fp8_works(comfy):
    model, vae = nodes.LTXPackModelLoader().load(GGUF, VAE, "default", "cpu")
    again, _ = nodes.LTXPackModelLoader().load(GGUF, VAE, "default", "cpu")
    assert model.release == vae.release == "0.9.1" and model.handle.device == "cpu"
    first, second = model.module.state_dict(), again.module.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    fp8, _ = nodes.LTXPackModelLoader().load(CHECKPOINT, "(from the model file)", "fp8_e4m3fn", "default")
    assert fp8.module.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn


def test_text_encoder_falls_back_to_the_bundled_tokenizer(comfy, tmp_path):
    lonely = comfy.models / "text_encoders" / "sub"
    lonely.mkdir(exist_ok=True)
    (lonely / T5).write_bytes((comfy.models / "text_encoders" / T5).read_bytes())
    with pytest.raises(ValueError, match="has no T5 tokenizer"):
        nodes.LTXPackTextEncoderLoader().load(f"sub/{T5}", "default", "default")
    comfy.tokenizer = comfy.models / "text_encoders" / "spiece.model"
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(f"sub/{T5}", "default", "default")
    positive, negative = nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", 16)
    assert positive[0][0].shape == negative[0][0].shape == (1, 16, 32)
    assert positive[0][1]["attention_mask"].shape == (1, 16)


def test_empty_latent_checks_sizes():
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(96, 64, 17, 2)
    assert latent["samples"].shape == (2, 128, 3, 2, 3)
    with pytest.raises(ValueError, match="use 17 or 25"):
        nodes.LTXPackEmptyLatentVideo().make(96, 64, 20, 1)
    with pytest.raises(ValueError, match="got width 100.*use 96 or 128"):
        nodes.LTXPackEmptyLatentVideo().make(100, 64, 17, 1)


def test_image_condition_chains_and_checks(comfy):
    _, vae = nodes.LTXPackModelLoader().load(CHECKPOINT, "(from the model file)", "default", "default")
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, 17, 1)
    image = torch.rand(1, 50, 70, 3)
    (first,) = nodes.LTXPackImageCondition().condition(latent, vae, image, 0, 1.0, 29)
    (both,) = nodes.LTXPackImageCondition().condition(first, vae, image, -1, 0.5, 0)
    assert both["noise_mask"].flatten().tolist() == [0.0, 1.0, 0.5]
    assert not torch.equal(both["samples"][:, :, 2], latent["samples"][:, :, 2])
    with pytest.raises(ValueError, match="multiple of 8, got 3: use 0 or 8"):
        nodes.LTXPackImageCondition().condition(latent, vae, image, 3, 1.0, 0)
    with pytest.raises(ValueError, match="strength 1.5 is out of range"):
        nodes.LTXPackImageCondition().condition(latent, vae, image, 0, 1.5, 0)
    with pytest.raises(ValueError, match="1 \\+ 8·k frames: use 1 or 9"):
        nodes.LTXPackImageCondition().condition(latent, vae, torch.rand(4, 64, 64, 3), 0, 1.0, 0)


def test_sampler_reports_progress_keeps_conditions_and_can_be_cancelled(comfy):
    model, vae = nodes.LTXPackModelLoader().load(CHECKPOINT, "(from the model file)", "default", "default")
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
    with pytest.raises(ValueError, match="not an LTX-Video latent video with 128 channels"):
        sampler.sample(model, positive, negative, {"samples": torch.zeros(1, 16, 2, 2, 2)}, *args[4:])


def test_memory_modes_reach_the_memory_manager(comfy, monkeypatch):
    model, vae = nodes.LTXPackModelLoader().load(CHECKPOINT, "(from the model file)", "default", "default", "low_vram")
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
    budgets = []
    monkeypatch.setattr(
        type(vae.module),
        "decode",
        lambda self, *a, **k: budgets.append(k["memory_budget"]) or torch.zeros(1, 3, 9, 64, 64),
    )
    nodes.LTXPackVAEDecode().decode({"samples": whole}, vae, 0.05, 0.025, 0, "auto")
    assert budgets == [pack.ltx_core.memory.LOW_VRAM_VAE_BUDGET]


def test_decode_and_encode_round_trip_and_decode_can_be_cancelled(comfy):
    _, vae = nodes.LTXPackModelLoader().load(CHECKPOINT, "(from the model file)", "default", "default")
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
