"""LTX LoRA Loader (pack): a chain of LoRA nodes samples exactly as `apply_loras` on the core model,
strength 0 is no LoRA, branches of one graph sample with their own LoRAs, removing the node gives the
base model's numbers without loading it again, the loaded weights are never written, and a wrong file
is refused in node words."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from safetensors.torch import save, save_file

from comfy_fake import install
from tiny import tiny_lora
from tiny_comfy import CHECKPOINT, CHECKPOINT_095, LORA, LORA_2, T5, _transformer_tensors
from workflows.build import import_pack

pack = import_pack()
nodes, core = pack.nodes, pack.ltx_core
FROM_MODEL = "(from the model file)"
SEED, STEPS = 7, 2


@pytest.fixture
def graph(comfy):
    """The loader's outputs and the sampler's other inputs, made once as ComfyUI's cache keeps them."""
    model, _, _ = nodes.LTXPackModelLoader().load(CHECKPOINT_095, FROM_MODEL, "default", "default")
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    positive, negative = nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", 16)
    (latent,) = nodes.LTXPackEmptyLatentVideo().make(64, 64, 9, 1)
    return model, (positive, negative, latent)


def _sample(model, inputs, seed: int = SEED) -> torch.Tensor:
    positive, negative, latent = inputs
    (out,) = nodes.LTXPackSampler().sample(model, positive, negative, latent, seed, STEPS, 3.0, "auto", 25.0, 1.0)
    return out["samples"]


def _with_lora(model, name: str, strength: float):
    (out,) = nodes.LTXPackLoraLoader().add(model, name, strength)
    return out


def _core_sample(comfy, model, inputs, loras: list[tuple[str, float]], seed: int = SEED) -> torch.Tensor:
    """What the sampler node computes, done with the core on a model of its own: the checkpoint loaded
    again, the LoRA files applied with `apply_loras`, `sample` with the release's schedule and CFG 3."""
    positive, negative, latent = inputs
    transformer, _ = core.load_transformer(comfy.models / "checkpoints" / CHECKPOINT_095, device="cpu")
    core.apply_loras(transformer, [(comfy.models / "loras" / name, strength) for name, strength in loras])
    samples = latent["samples"]
    generator = core.sampling.noise.seeded_generator(seed)
    noise = core.sampling.noise.draw_noise(tuple(samples.shape), generator)
    sigmas = core.sampling.schedule.make_schedule(model.defaults.schedule, STEPS, samples[0, 0].numel())
    text = nodes.types.from_conditioning(positive, negative, transformer.dtype)
    with torch.inference_mode():
        return core.sample(transformer, noise, sigmas, text, guidance_scale=3.0, generator=generator)


def test_a_chain_equals_apply_loras_on_the_core_model(comfy, graph):
    model, inputs = graph
    weights = {k: (v.data_ptr(), v.clone()) for k, v in model.module.state_dict().items()}
    chained = _with_lora(_with_lora(model, LORA, 0.8), LORA_2, -0.5)
    assert [(lora.name, strength) for lora, strength in chained.loras] == [(LORA, 0.8), (LORA_2, -0.5)]
    assert model.loras == () and chained.handle is model.handle  # the input is untouched, the module shared
    assert torch.equal(_sample(chained, inputs), _core_sample(comfy, model, inputs, [(LORA, 0.8), (LORA_2, -0.5)]))
    base = _sample(model, inputs)  # the loader's own output after the chain: the base model's numbers
    assert torch.equal(base, _core_sample(comfy, model, inputs, []))
    assert not torch.equal(base, _sample(chained, inputs))  # negative control: the LoRAs do change it
    after = model.module.state_dict()  # no weight was written, copied or moved
    assert all(after[k].data_ptr() == ptr and torch.equal(after[k], value) for k, (ptr, value) in weights.items())


def test_strength_zero_is_no_lora(comfy, graph):
    model, inputs = graph
    base = _sample(model, inputs)
    assert torch.equal(_sample(_with_lora(model, LORA, 0.0), inputs), base)
    layers = core.model.storage.linear_layers(model.module)
    assert all(layer.lora_up is None for _, layer in layers)  # strength 0 puts no factors on the model


def test_branches_of_one_graph_sample_with_their_own_loras(comfy, graph):
    """One loader feeding two LoRA nodes and two samplers, run in turn as ComfyUI runs a graph (and again,
    as a later prompt with one branch changed would): each equals its LoRA alone on a model of its own."""
    model, inputs = graph
    first, second = _with_lora(model, LORA, 1.0), _with_lora(model, LORA_2, 0.7)
    outputs = [_sample(first, inputs), _sample(second, inputs), _sample(first, inputs)]
    alone = [_core_sample(comfy, model, inputs, [(LORA, 1.0)]), _core_sample(comfy, model, inputs, [(LORA_2, 0.7)])]
    assert torch.equal(outputs[0], alone[0]) and torch.equal(outputs[1], alone[1])
    assert torch.equal(outputs[2], outputs[0]) and not torch.equal(outputs[0], outputs[1])


def test_removing_the_lora_node_gives_the_base_again_without_reloading(comfy, monkeypatch):
    loads = []
    real = nodes.loaders.load_transformer
    monkeypatch.setattr(nodes.loaders, "load_transformer", lambda *a, **k: loads.append(a) or real(*a, **k))
    model, _, _ = nodes.LTXPackModelLoader().load(CHECKPOINT_095, FROM_MODEL, "default", "default")
    (encoder,) = nodes.LTXPackTextEncoderLoader().load(T5, "default", "default")
    inputs = (*nodes.LTXPackTextEncode().encode(encoder, "a red fox", "blurry", 16),)
    inputs += nodes.LTXPackEmptyLatentVideo().make(64, 64, 9, 1)
    base = _sample(model, inputs)
    with_lora = _sample(_with_lora(model, LORA, 1.0), inputs)
    stronger = _sample(_with_lora(model, LORA, 1.5), inputs)  # another strength: no load either
    assert torch.equal(_sample(model, inputs), base)  # the LoRA node removed: the sampler takes the model's
    assert not torch.equal(with_lora, base) and not torch.equal(stronger, with_lora)
    assert len(loads) == 1 and model.handle.loads == ["default"] * 4  # loaded once, placed for each sampler run
    assert core.lora.loras_of(model.module).entries == []


def test_the_lora_list_holds_the_loras_folder_safetensors(comfy):
    declared = nodes.LTXPackLoraLoader.INPUT_TYPES()["required"]
    assert declared["lora_name"][0] == sorted([LORA, LORA_2])
    assert declared["strength"][1]["default"] == 1.0 and declared["model"][0] == "LTXPACK_MODEL"


@pytest.fixture
def lora_comfy(monkeypatch, tmp_path, comfy_root):
    """A ComfyUI of its own whose models/loras may hold anything, with the tiny checkpoints linked in."""
    fake = install(monkeypatch, tmp_path)
    for folder in ("checkpoints", "loras", "text_encoders"):
        (fake.models / folder).mkdir(parents=True)
    for name in (CHECKPOINT, CHECKPOINT_095):
        (fake.models / "checkpoints" / name).symlink_to(comfy_root / "models" / "checkpoints" / name)
    return fake


@functools.cache
def _config():
    """The tiny checkpoints' transformer config (1 block of 32 heads × 2)."""
    return _transformer_tensors()[0]


def _lora_for(**changes: int) -> dict:
    return tiny_lora(dataclasses.replace(_config(), **changes), 1)


LORA_MISTAKES = {  # file written into models/loras → what the node must say
    "checkpoint": (
        lambda p, models: p.symlink_to(models / "checkpoints" / CHECKPOINT),
        "is not a LoRA (its keys: model.diffusion_model.adaln_single",
        "Choose a LoRA file from models/loras in lora_name of LTX LoRA Loader (pack); a model file belongs in the "
        "LTX Model Loader (pack).",
    ),
    "narrower model": (
        lambda p, models: save_file(_lora_for(num_heads=16, cross_attention_dim=32), p),  # width 32, not 64
        "is a LoRA for another model size: transformer_blocks.0.attn1.to_k is 32→32 in the LoRA, 64→64 here",
        "one made for this model, LTX-Video 0.9.5 2B (the model loader's release output says which)",
    ),
    "deeper model": (  # the tiny 13B dev model: 48 blocks of the same width
        lambda p, models: save_file(_lora_for(num_layers=48), p),
        "names blocks up to 47, and this model has blocks 0 … 0 (another model size)",
        "or load the model the LoRA was made for",
    ),
    "no such layers": (
        lambda p, models: save_file({k.replace(".attn1.", ".attn3."): v for k, v in _lora_for().items()}, p),
        "modules that match no linear layer of this model (transformer_blocks.0.attn3.to_k, ",
        "expected a LoRA for the LTX-Video transformer whose modules are its layers. Choose in lora_name",
    ),
    "truncated": (
        lambda p, models: p.write_bytes(save(_lora_for())[: len(save(_lora_for())) // 2]),
        "is truncated",
        "Choose a LoRA file",
    ),
}


@pytest.mark.parametrize("mistake", LORA_MISTAKES)
def test_each_lora_mistake_reaches_the_user_in_node_words(lora_comfy, mistake):
    write, found, advice = LORA_MISTAKES[mistake]
    path = lora_comfy.models / "loras" / "mistake.safetensors"
    write(path, lora_comfy.models)
    model, _, _ = nodes.LTXPackModelLoader().load(CHECKPOINT_095, FROM_MODEL, "default", "default")
    with pytest.raises(ValueError) as error:
        nodes.LTXPackLoraLoader().add(model, "mistake.safetensors", 1.0)
    message = str(error.value)
    assert message.startswith("mistake.safetensors: ") and found in message and advice in message, message
    assert f"(file: {path})" in message and ".." not in message
    assert "apply_loras" not in message and "load_lora" not in message
    assert core.lora.loras_of(model.module) is None  # refused before anything reached the model


def test_a_missing_lora_file_names_the_folder(lora_comfy):
    model, _, _ = nodes.LTXPackModelLoader().load(CHECKPOINT_095, FROM_MODEL, "default", "default")
    with pytest.raises(ValueError, match=r"gone\.safetensors was not found in models/loras \(looked in "):
        nodes.LTXPackLoraLoader().add(model, "gone.safetensors", 1.0)
