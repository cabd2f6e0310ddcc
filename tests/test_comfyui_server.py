"""The pack in a real ComfyUI server, used as a person does through the HTTP API: the shipped workflows
(API and UI format) on two sets of files, the default user setup, cancel, /free, the cache, and bad
input of every kind a user can produce, each answered in words that name the value, the rule and the fix.

Runs when COMFYUI_PATH names a ComfyUI checkout (see comfy_server.py); CI always runs it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from pathlib import Path

import av
import pytest
import torch
from safetensors.torch import save_file

import comfy_written
from comfy_server import COMFYUI, PACK_FOLDER
from ltx_core import (
    Conditioning,
    Models,
    Settings,
    apply_loras,
    load_latent_upsampler,
    load_text_encoder,
    load_transformer,
    load_vae,
    make_schedule,
    sample,
    text_to_video,
)
from ltx_core.loading.release import detect_release
from ltx_core.media import read_video, resize_and_crop
from ltx_core.sampling.guidance import Guidance
from ltx_core.sampling.noise import draw_noise, seeded_generator
from test_workflows import NAMES, SMALL, expected_frames, load, shrink, ui_to_api
from tiny import tiny_lora
from tiny_comfy import (
    CHECKPOINT_095,
    CHECKPOINT_DISTILLED,
    LORA,
    LORA_2,
    SPATIAL_UPSCALER,
    T5,
    VIDEO,
    VIDEO_FRAMES,
    _transformer_tensors,
)

pytestmark = pytest.mark.comfyui

OURS = {"LTXPackModelLoader", "LTXPackTextEncoderLoader", "LTXPackTextEncode", "LTXPackEmptyLatentVideo"}
FILE_INPUTS = ("model_name", "vae_name", "text_encoder_name")
FILE_SETS = {
    "pack": "",  # written by the pack's tests (tiny_comfy.py)
    "comfy": "comfy_written/",  # written with ComfyUI's own model classes (comfy_written.py)
}
# What the "comfy" set holds (0.9.1 files only: the 0.9.5 workflows keep the pack's 0.9.5 checkpoint there).
COMFY_WRITTEN = {
    comfy_written.CHECKPOINT,
    comfy_written.VAE,
    comfy_written.GGUF,
    comfy_written.T5,
    comfy_written.T5_FP8,
}


def with_files(prompt: dict, file_set: str) -> dict:
    """The prompt with every model file that `file_set` holds taken from it."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        for name in FILE_INPUTS:
            value = node["inputs"].get(name)
            if value in COMFY_WRITTEN:  # the pack's set holds every file the workflows name
                node["inputs"][name] = FILE_SETS[file_set] + value
    return prompt


def small_t2v(seed: int = 1) -> dict:
    """The text-to-video API workflow at the tests' small size."""
    prompt = shrink(load("text_to_video")[1])
    prompt["10"]["inputs"]["seed"] = seed
    return prompt


def saved_video(server, run) -> Path:
    (saved,) = [out for out in run.outputs.values() if "images" in out]
    (entry,) = saved["images"]
    assert entry["type"] == "output" and entry["filename"].endswith(".mp4")
    return server.output_file(entry)


def assert_playable(path: Path, workflow: dict | None, frames: int, height: int, width: int, fps: float) -> None:
    video, rate = read_video(path)
    assert video.shape == (frames, height, width, 3) and rate == pytest.approx(fps)
    if workflow is not None:
        with av.open(str(path)) as container:
            assert json.loads(container.metadata["workflow"]) == workflow
            assert "LTXPackModelLoader" in container.metadata["prompt"]


def spec_from_object_info(node: dict) -> dict:
    """A node's inputs [(name, type, options)] as the server declares them, in `node_spec`'s form."""
    declared = {**node["input"]["required"], **node["input"].get("optional", {})}
    inputs = []
    for name in [*node["input_order"]["required"], *node["input_order"].get("optional", [])]:
        kind, options = declared[name][0], (declared[name][1] if len(declared[name]) > 1 else {})
        inputs.append((name, "COMBO" if isinstance(kind, list) else kind, options))
    upload = any(options.get("image_upload") or options.get("video_upload") for _, _, options in inputs)
    return {"inputs": inputs, "outputs": list(zip(node["output_name"], node["output"], strict=True)), "upload": upload}


def test_nodes_are_registered_next_to_core(comfy_server):
    info = comfy_server.get("/object_info")
    ours = {k: v for k, v in info.items() if k.startswith("LTXPack")}
    assert len(ours) == 15 and all(v["python_module"] == f"custom_nodes.{PACK_FOLDER}" for v in ours.values())
    assert {"EmptyLTXVLatentVideo", "LTXVImgToVideo", "LTXVScheduler", "CLIPLoader"} <= set(info)
    assert "IMPORT FAILED" not in comfy_server.log()


@pytest.mark.parametrize("file_set", FILE_SETS)
@pytest.mark.parametrize("form", ["api", "ui"])
@pytest.mark.parametrize("name", NAMES)
def test_workflow_makes_a_playable_mp4(comfy_server, name, form, file_set):
    ui, api = load(name)
    info = comfy_server.get("/object_info")
    prompt = api if form == "api" else ui_to_api(ui, lambda kind: spec_from_object_info(info[kind]))
    prompt = with_files(shrink(prompt), file_set)
    prompt["10"]["inputs"]["seed"] = 100 + NAMES.index(name) + 10 * (form == "ui")  # no cached result reused
    run = comfy_server.run(prompt, ui)
    assert run.status == "success", json.dumps(run.history["status"], indent=1)[-4000:]
    assert run.previews > 0  # latent previews reached the websocket
    progress = [d for n, d in run.events if n == "progress" and d["node"] == "10"]
    assert progress[-1]["value"] == progress[-1]["max"] == SMALL["steps"]
    path = saved_video(comfy_server, run)
    assert_playable(path, ui, expected_frames(name), SMALL["height"], SMALL["width"], 25.0)


@pytest.mark.parametrize("last", [-1, 3])
def test_keyframes_on_a_095_model_make_a_playable_mp4(comfy_server, last):
    """A 0.9.5+ model appends the keyframes after frame 0 as extra tokens, so the last one may also sit
    between latent frames (frame 3), where 0.9.1 models refuse it (see FAILED)."""
    ui, api = load("keyframe_interpolation")
    prompt = _set(_set(shrink(api), "1", model_name=CHECKPOINT_095), "8", frame=last)
    prompt["10"]["inputs"]["seed"] = 200 + last  # no cached result reused
    run = comfy_server.run(prompt, ui)
    assert run.status == "success", json.dumps(run.history["status"], indent=1)[-4000:]
    assert_playable(saved_video(comfy_server, run), ui, SMALL["length"], SMALL["height"], SMALL["width"], 25.0)


def _extension(direction: str = "forward") -> dict:
    """The video extension API workflow at the tests' small size, extending `direction`."""
    prompt = shrink(load("video_extension")[1])
    for node in ("7", "13"):  # LTX Extend Video, LTX Join Video
        prompt[node]["inputs"]["direction"] = direction
    return prompt


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_video_extension_joins_the_loaded_video_and_the_new_frames(comfy_server, direction):
    """Load Video → Get Video Components → Extend → Sampler → Decode → Join → Save: the mp4 holds the
    old video's frames (resized to the new size) and the new ones outside the overlap, old first going
    forward, last going backward."""
    ui, _ = load("video_extension")
    prompt = _extension(direction)
    prompt["10"]["inputs"]["seed"] = 300 + (direction == "backward")  # no cached result reused
    run = comfy_server.run(prompt, ui)
    assert run.status == "success", json.dumps(run.history["status"], indent=1)[-4000:]
    path = saved_video(comfy_server, run)
    frames = VIDEO_FRAMES + SMALL["length"] - SMALL["overlap"]
    assert_playable(path, ui, frames, SMALL["height"], SMALL["width"], 25.0)
    saved, _ = read_video(path)
    old = resize_and_crop(read_video(comfy_server.base / "input" / VIDEO)[0], SMALL["width"], SMALL["height"])
    kept, elsewhere = (saved[:VIDEO_FRAMES], saved[-VIDEO_FRAMES:])[:: 1 if direction == "forward" else -1]
    assert (kept - old).abs().mean() < 0.05, "the old frames are not where the direction puts them"
    assert (elsewhere - old).abs().mean() > 0.2  # the other alignment, off by the new frames: not the old video


def _sample_and_redo_in_the_core(server, name: str, prompt: dict) -> tuple:
    """Run `prompt` (workflow `name`) and save its sampler's latents and prompts. Returns the latents, the
    sampler's number of steps, `redo(guidance, sigmas, stochastic)` (ltx_core.sample on the same checkpoint,
    prompts, seed and shape) and the release's (Guidance, sigmas, stochastic) at that shape."""
    tag = f"{name}_{prompt['10']['inputs']['seed']}"
    prompt = {
        **prompt,
        "save_latent": {"class_type": "LTXTestSaveTensor", "inputs": {"value": ["10", 0], "name": f"{tag}_latent"}},
        "save_positive": {"class_type": "LTXTestSaveTensor", "inputs": {"value": ["3", 0], "name": f"{tag}_pos"}},
        "save_negative": {"class_type": "LTXTestSaveTensor", "inputs": {"value": ["3", 1], "name": f"{tag}_neg"}},
    }
    run = server.run(prompt, load(name)[0])
    assert run.status == "success", json.dumps(run.history["status"], indent=1)[-4000:]
    progress = [d for n, d in run.events if n == "progress" and d["node"] == "10"]
    sampled = _load_tensor(server, f"{tag}_latent")["samples"]
    positive, negative = (_load_tensor(server, f"{tag}_{part}")[0] for part in ("pos", "neg"))
    loader = prompt["1"]["inputs"]
    path = server.base / "models" / "checkpoints" / loader["model_name"]
    release = detect_release(path, release=loader["release"])
    transformer, _ = load_transformer(path, causal_temporal_positioning=release.causal_positions)
    defaults, seed = release.defaults, prompt["10"]["inputs"]["seed"]

    def redo(guidance: Guidance, sigmas: torch.Tensor, stochastic: bool) -> torch.Tensor:
        negative_text = Conditioning(negative[0], negative[1]["attention_mask"]) if guidance.uses_negative else None
        text = Conditioning(positive[0], positive[1]["attention_mask"], negative_text)
        generator = seeded_generator(seed)
        noise = draw_noise(tuple(sampled.shape), generator)
        with torch.inference_mode():
            return sample(
                transformer, noise, sigmas, text, guidance=guidance, stochastic_sampling=stochastic, generator=generator
            )

    sigmas = make_schedule(defaults.schedule, defaults.steps, sampled[0, 0].numel())
    official = (Guidance.from_config(defaults.guidance_config()), sigmas, defaults.stochastic_sampling)
    return sampled, progress[-1]["max"], redo, official


@pytest.mark.parametrize(("name", "steps"), [("text_to_video_distilled", 8), ("text_to_video_13b_dev", 30)])
def test_release_workflows_sample_with_the_releases_settings(comfy_server, name, steps):
    """Steps 0 and guidance 0 (the 13B workflow: LTX Guidance on preset release) in a real ComfyUI: the
    release's steps (the 2B 0.9.8 distilled: its 8 noise levels, one model call each), and the latents of
    ltx_core.sample given the release's Guidance, sigmas and sampling."""
    _, api = load(name)
    assert (api["10"]["inputs"]["steps"], api["10"]["inputs"]["guidance"]) == (0, 0.0)
    prompt = _set(shrink(api), "10", steps=0, seed=400 + steps)  # the release's steps, at the small size
    sampled, done, redo, (guidance, sigmas, stochastic) = _sample_and_redo_in_the_core(comfy_server, name, prompt)
    assert done == steps == len(sigmas) - 1
    expected = redo(guidance, sigmas, stochastic)
    assert torch.equal(sampled, expected), (sampled - expected).abs().max()
    constant = redo(Guidance(guidance_scale=3.0), sigmas, stochastic)  # negative control: the old constant CFG
    assert (constant - sampled).abs().max() > 1e-3


def test_multiscale_workflow_equals_the_core_pipeline(comfy_server):
    """The multiscale workflow in a real ComfyUI (both samplers at their passes' own settings, LTX Latent
    Upscale, core's Upscale Image) gives the frames of `text_to_video(…, Settings(multiscale=True))` on the
    same files, to the last bit: 2B 0.9.8 distilled, 128×160 (first pass 64×96, second 128×192, resized)."""
    ui, api = load("text_to_video_multiscale")
    seed, width, height = 500, 128, 160
    prompt = shrink(api)
    prompt = _set(prompt, "1", model_name=CHECKPOINT_DISTILLED, release="0.9.8-distilled")
    prompt = _set(_set(prompt, "3", max_tokens=256), "4", width=64, height=96, length=9)  # 2/3 of the size
    prompt = _set(_set(prompt, "8", width=width, height=height), "7", steps=0)
    prompt = _set(_set(prompt, "10", steps=0, seed=seed), "11", seed=seed)
    prompt["save"] = {"class_type": "LTXTestSaveTensor", "inputs": {"value": ["8", 0], "name": "multiscale"}}
    run = comfy_server.run(prompt, ui)
    assert run.status == "success", json.dumps(run.history["status"], indent=1)[-4000:]
    progress = {d["node"]: d["max"] for name, d in run.events if name == "progress"}
    assert (progress["10"], progress["7"]) == (7, 3)  # the release's first and second pass
    frames = _load_tensor(comfy_server, "multiscale")

    models = comfy_server.base / "models"
    path = models / "checkpoints" / CHECKPOINT_DISTILLED
    release = detect_release(path, release="0.9.8-distilled")
    transformer, _ = load_transformer(path, causal_temporal_positioning=release.causal_positions)
    vae, _ = load_vae(path)
    tokenizer = Path(COMFYUI) / "comfy" / "text_encoders" / "t5_tokenizer" / "tokenizer.json"
    t5, _ = load_text_encoder(models / "text_encoders" / T5, tokenizer_path=tokenizer)
    upsampler, _ = load_latent_upsampler(models / "latent_upscale_models" / SPATIAL_UPSCALER)
    settings = Settings(width=width, height=height, frames=9, seed=seed, device="cpu", multiscale=True)
    text = prompt["3"]["inputs"]
    expected = text_to_video(
        Models(transformer, vae, t5, release, upsampler), text["prompt"], text["negative_prompt"], settings
    )
    assert frames.shape == expected[0].shape == (9, height, width, 3)
    assert torch.equal(frames, expected[0]), (frames - expected[0]).abs().max()


def test_lora_branches_and_removal_in_one_comfyui(comfy_server):
    """The LoRA workflow's loader feeding two LTX LoRA Loaders (two LoRAs) and a third sampler without
    one, in one graph: each sampler's latents equal `ltx_core.sample` on the checkpoint with `apply_loras`
    of its own LoRA (none for the third). The next prompt, without the LoRA nodes, samples the base model
    with the loader served from ComfyUI's cache: the LoRAs are off without a reload."""
    seed = 510
    prompt = _set(shrink(load("text_to_video_lora")[1]), "10", seed=seed)
    del prompt["11"], prompt["12"]  # decode and save: the latents are compared
    prompt["6"] = {
        "class_type": "LTXPackLoraLoader",
        "inputs": {"model": ["1", 0], "lora_name": LORA_2, "strength": 0.7},
    }
    prompt["20"], prompt["30"] = _set(prompt, "10", model=["6", 0])["10"], _set(prompt, "10", model=["1", 0])["10"]
    saved = {"lora_first": ["10", 0], "lora_second": ["20", 0], "lora_none": ["30", 0]}
    saved |= {"lora_positive": ["3", 0], "lora_negative": ["3", 1]}
    for name, value in saved.items():
        prompt[f"save_{name}"] = {"class_type": "LTXTestSaveTensor", "inputs": {"value": value, "name": name}}
    run = comfy_server.run(prompt)
    assert run.status == "success", json.dumps(run.history["status"], indent=1)[-4000:]
    assert {"6", "10", "20", "30"} <= run.executed()  # the loaders may come from earlier prompts
    first, second, none = (_load_tensor(comfy_server, f"lora_{n}")["samples"] for n in ("first", "second", "none"))

    (positive, extra), (negative, negative_extra) = (
        _load_tensor(comfy_server, f"lora_{n}")[0] for n in ("positive", "negative")
    )
    text = Conditioning(positive, extra["attention_mask"], Conditioning(negative, negative_extra["attention_mask"]))
    path = comfy_server.base / "models" / "checkpoints" / CHECKPOINT_095
    transformer, _ = load_transformer(path, causal_temporal_positioning=True)  # 0.9.5: the causal fix
    sigmas = make_schedule("linear_quadratic", SMALL["steps"], none[0, 0].numel())

    def redo(loras: list[tuple[str, float]]) -> torch.Tensor:
        apply_loras(transformer, [(comfy_server.base / "models" / "loras" / name, s) for name, s in loras])
        generator = seeded_generator(seed)
        noise = draw_noise(tuple(none.shape), generator)
        with torch.inference_mode():
            return sample(transformer, noise, sigmas, text, guidance_scale=3.0, generator=generator)

    assert torch.equal(first, redo([(LORA, 1.0)])) and torch.equal(second, redo([(LORA_2, 0.7)]))
    assert torch.equal(none, redo([])) and not torch.equal(first, none) and not torch.equal(second, none)

    base = {k: v for k, v in prompt.items() if k in ("1", "2", "3", "4", "10")}
    base = _set(base, "10", model=["1", 0], memory="default")  # the loader's memory mode: the same numbers
    base["save"] = {"class_type": "LTXTestSaveTensor", "inputs": {"value": ["10", 0], "name": "lora_removed"}}
    again = comfy_server.run(base)
    assert again.status == "success" and "1" in again.cached() and "10" in again.executed()
    assert torch.equal(_load_tensor(comfy_server, "lora_removed")["samples"], none)


def test_guidance_node_custom_preset_reaches_the_sampler(comfy_server):
    values = {"preset": "custom", "cfg": 4.0, "stg_scale": 2.0, "stg_mode": "attention_skip", "skip_blocks": "3, 7"}
    prompt = _set(_dev_13b(**values, rescaling_scale=0.5, cfg_star_rescale=True), "10", seed=450)
    sampled, done, redo, (official, _, _) = _sample_and_redo_in_the_core(comfy_server, "text_to_video_13b_dev", prompt)
    custom = Guidance(4.0, 2.0, 0.5, (3, 7), "attention_skip", cfg_star_rescale=True)
    sigmas = make_schedule("linear_quadratic", SMALL["steps"], sampled[0, 0].numel())
    assert done == SMALL["steps"] and torch.equal(sampled, redo(custom, sigmas, False))
    assert (redo(official, sigmas, False) - sampled).abs().max() > 1e-3  # negative control: preset release


def test_default_setup_t5_alone_uses_comfyuis_tokenizer(comfy_server):
    """A T5 file alone in models/text_encoders (nothing beside it) loads with ComfyUI's bundled tokenizer."""
    import tokenizers

    folder = comfy_server.base / "models" / "text_encoders"
    assert not [p for p in folder.iterdir() if p.is_file() and not p.name.startswith("t5xxl")]
    words = "a red fox runs through fresh snow at dawn"
    prompt = {
        "2": {"class_type": "LTXPackTextEncoderLoader", "inputs": _t5_loader_inputs("t5xxl_fp16.safetensors")},
        "3": {
            "class_type": "LTXPackTextEncode",
            "inputs": {"text_encoder": ["2", 0], "prompt": words, "negative_prompt": "", "max_tokens": 64},
        },
        "9": {"class_type": "LTXTestSaveTensor", "inputs": {"value": ["3", 0], "name": "default_setup"}},
    }
    run = comfy_server.run(prompt)
    assert run.status == "success", run.history["status"]
    conditioning = _load_tensor(comfy_server, "default_setup")
    bundled = Path(COMFYUI) / "comfy" / "text_encoders" / "t5_tokenizer" / "tokenizer.json"
    expected = len(tokenizers.Tokenizer.from_file(str(bundled)).encode(words, add_special_tokens=False).ids) + 1
    assert conditioning[0][0].shape == (1, 64, 32)
    assert int(conditioning[0][1]["attention_mask"].sum()) == expected  # its ids, ending with </s>


def _t5_loader_inputs(name: str) -> dict:
    return {"text_encoder_name": name, "dtype": "default", "device": "default", "memory": "default"}


def _load_tensor(server, name: str):
    return torch.load(server.base / "output" / f"{name}.pt", weights_only=False)


# --- cancel, /free, cache ----------------------------------------------------------------------------


def _slow_t2v(seed: int, steps: int) -> dict:
    """Sampling and decoding that take long enough on a CPU to be interrupted part-way."""
    prompt = small_t2v(seed)
    prompt["4"]["inputs"].update(width=512, height=512, length=121)
    prompt["10"]["inputs"]["steps"] = steps
    return prompt


def _interrupt_when(server, prompt: dict, kind: str, predicate) -> object:
    status, answer = server.queue(prompt)
    assert status == 200, answer
    server.wait_for_event(kind, lambda d: d.get("prompt_id") == answer["prompt_id"] and predicate(d))
    assert server.post("/interrupt", {})[0] == 200
    return server.wait(answer["prompt_id"])


def test_cancel_during_sampling_and_decoding_then_a_good_run(comfy_server):
    during_sampling = _interrupt_when(
        comfy_server, _slow_t2v(seed=7, steps=200), "progress", lambda d: d["node"] == "10" and d["value"] >= 2
    )
    assert during_sampling.status == "error"
    (stopped,) = during_sampling.messages("execution_interrupted")
    assert stopped["node_type"] == "LTXPackSampler"
    steps_done = max(d["value"] for n, d in during_sampling.events if n == "progress" and d["node"] == "10")
    assert steps_done < 200

    during_decoding = _interrupt_when(
        comfy_server, _slow_t2v(seed=8, steps=1), "executing", lambda d: d.get("node") == "11"
    )
    (stopped,) = during_decoding.messages("execution_interrupted")
    assert stopped["node_type"] == "LTXPackVAEDecode"

    good = comfy_server.run(small_t2v(seed=9))
    assert good.status == "success"
    assert_playable(saved_video(comfy_server, good), None, SMALL["length"], SMALL["height"], SMALL["width"], 25.0)


def _loaded_models(server, prompt: dict) -> list[str]:
    """What ComfyUI's memory manager holds, asked inside `prompt` (fully cached: its loaders' outputs stay
    alive, as they do between a user's prompts)."""
    run = server.run({**prompt, "99": {"class_type": "LTXTestLoadedModels", "inputs": {}}})
    assert run.status == "success" and run.executed() == {"99"}, run.history["status"]
    return [name for name in run.outputs["99"]["models"] if name.startswith("LTXPack")]


def test_free_releases_our_models(comfy_server):
    prompt = small_t2v(seed=11)
    assert comfy_server.run(prompt).status == "success"
    loaded = _loaded_models(comfy_server, prompt)
    assert {"LTXPackLTXVideoTransformer", "LTXPackVideoVAE", "LTXPackT5TextEncoder"} <= set(loaded), loaded
    # unload_models alone: free_memory would also empty the cache, and the query prompt would load them again
    assert comfy_server.post("/free", {"unload_models": True})[0] == 200
    for _ in range(20):  # the server acts on /free between prompts
        time.sleep(0.5)
        if not _loaded_models(comfy_server, prompt):
            break
    else:
        pytest.fail("our models are still loaded after POST /free")
    prompt["11"]["inputs"]["seed"] = 12  # a new decode loads the VAE again
    assert comfy_server.run(prompt).status == "success"
    assert _loaded_models(comfy_server, prompt) == ["LTXPackVideoVAE"]


def test_repeated_prompt_is_cached_and_a_changed_widget_reruns_only_what_depends_on_it(comfy_server):
    prompt = small_t2v(seed=21)
    first = comfy_server.run(prompt)
    assert first.status == "success" and {"10", "11", "12"} <= first.executed()
    again = comfy_server.run(prompt)
    assert again.status == "success" and again.executed() == set()
    assert again.cached() == set(prompt)
    prompt["11"]["inputs"]["seed"] = 22  # the decode noise: decode and save re-run, nothing upstream
    changed = comfy_server.run(prompt)
    assert changed.executed() == {"11", "12"}
    assert saved_video(comfy_server, changed) != saved_video(comfy_server, first)


# --- bad input ---------------------------------------------------------------------------------------


def _refused(server, prompt: dict) -> str:
    """Validation refuses the prompt: all node error messages and details, joined."""
    status, answer = server.queue(prompt)
    assert status == 400, answer
    texts = [answer["error"]["message"], answer["error"].get("details", "")]
    for node in answer.get("node_errors", {}).values():
        texts += [f"{e['message']}: {e['details']}" for e in node["errors"]]
    return " | ".join(texts)


def _failed(server, prompt: dict) -> tuple[str, str]:
    """The prompt runs and a node fails: (node type, exception message)."""
    run = server.run(prompt)
    assert run.status == "error", run.history["status"]
    error = run.error()
    assert not error["exception_message"].startswith("Traceback")
    return error["node_type"], error["exception_message"]


@pytest.fixture(scope="module")
def stray_files(comfy_server):
    """Files of the wrong kind in the loaders' folders, as users put them there."""
    models = comfy_server.base / "models"
    shutil.copy(
        models / "vae" / "ltx-video-2b-v0.9.1-vae.safetensors", models / "diffusion_models" / "a_vae.safetensors"
    )
    shutil.copy(
        models / "checkpoints" / "ltx-video-2b-v0.9.1.safetensors", models / "text_encoders" / "ltx.safetensors"
    )
    shutil.copy(models / "text_encoders" / "t5xxl_fp16.safetensors", models / "checkpoints" / "t5.safetensors")
    (models / "upscale_models").mkdir(exist_ok=True)  # core's image upscalers' folder, also listed for upsamplers
    shutil.copy(models / "vae" / "ltx-video-2b-v0.9.1-vae.safetensors", models / "upscale_models" / "a_vae.safetensors")
    shutil.copy(models / "latent_upscale_models" / SPATIAL_UPSCALER, models / "checkpoints" / "upscaler.safetensors")
    (models / "checkpoints" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    _write_t5(models / "text_encoders" / "t5_wide.safetensors", width=48)
    data = (models / "checkpoints" / "ltx-video-2b-v0.9.1.safetensors").read_bytes()
    (models / "checkpoints" / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    shutil.copy(models / "checkpoints" / "ltx-video-2b-v0.9.1.safetensors", models / "loras" / "ltx.safetensors")
    deeper = dataclasses.replace(_transformer_tensors()[0], num_layers=48)  # the tiny 13B's blocks
    save_file(tiny_lora(deeper, 3), models / "loras" / "lora_13b.safetensors")
    yield
    for path in ("loras/ltx.safetensors", "loras/lora_13b.safetensors"):
        (models / path).unlink()
    for path in ("diffusion_models/a_vae.safetensors", "text_encoders/ltx.safetensors", "checkpoints/t5.safetensors"):
        (models / path).unlink()
    for path in ("upscale_models/a_vae.safetensors", "checkpoints/upscaler.safetensors"):
        (models / path).unlink()
    for path in ("text_encoders/t5_wide.safetensors",):
        (models / path).unlink()
    (models / "checkpoints" / "broken.safetensors").unlink()
    (models / "checkpoints" / "truncated.safetensors").unlink()


def _write_t5(path: Path, width: int) -> None:
    """A T5 encoder of another width than the test model's text input (32)."""
    import torch
    import transformers
    from safetensors.torch import save_file

    from tiny import tiny_t5_config
    from tiny_comfy import T5_VOCAB

    torch.manual_seed(5)
    config = tiny_t5_config(T5_VOCAB)
    config = transformers.T5Config(**{**config.to_dict(), "d_model": width})
    weights = transformers.T5EncoderModel(config).state_dict()
    save_file({k: v.contiguous() for k, v in weights.items() if k != "encoder.embed_tokens.weight"}, path)


def _set(prompt: dict, node: str, **values) -> dict:
    prompt = copy.deepcopy(prompt)
    prompt[node]["inputs"].update(values)
    return prompt


def _i2v(**condition) -> dict:
    prompt = shrink(load("image_to_video")[1])
    prompt["6"]["inputs"].update(condition)
    return prompt


# (what the user did, how to build the prompt, words the answer must hold)
REFUSED = [
    ("strength above 1", lambda: _i2v(strength=1.5), ["1.5", "strength", "max of 1.0"]),
    ("negative steps", lambda: _set(small_t2v(), "10", steps=-1), ["steps", "smaller than min of 0"]),
    ("negative guidance", lambda: _set(small_t2v(), "10", guidance=-0.5), ["guidance", "-0.5", "min of 0.0"]),
    ("unknown sampling", lambda: _set(small_t2v(), "10", sampling="ddim"), ["sampling", "ddim"]),
    ("unknown stg_mode", lambda: _set(_dev_13b(), "5", stg_mode="stg_x"), ["stg_mode", "stg_x"]),
    ("rescaling_scale above 1", lambda: _set(_dev_13b(), "5", rescaling_scale=1.5), ["rescaling_scale", "max of 1.0"]),
    ("negative seed", lambda: _set(small_t2v(), "10", seed=-1), ["seed", "-1", "min of 0"]),
    ("unknown schedule", lambda: _set(small_t2v(), "10", schedule="karras"), ["schedule", "karras"]),
    ("model file not there", lambda: _set(small_t2v(), "1", model_name="gone.safetensors"), ["gone.safetensors"]),
    ("T5 file not there", lambda: _set(small_t2v(), "2", text_encoder_name="t5.bin"), ["t5.bin"]),
    ("max_tokens below 8", lambda: _set(small_t2v(), "3", max_tokens=4), ["max_tokens", "min of 8"]),
    ("frame_rate 0", lambda: _set(small_t2v(), "12", frame_rate=0.0), ["frame_rate", "min of 1.0"]),
    ("crf above 51", lambda: _set(small_t2v(), "12", crf=60), ["crf", "max of 51"]),
    ("denoise 0", lambda: _set(small_t2v(), "10", denoise=0.0), ["denoise", "min of 0.01"]),
    ("width below 64", lambda: _set(small_t2v(), "4", width=32), ["width", "min of 64"]),
    ("sampler input missing", lambda: _drop(small_t2v(), "10", "positive"), ["positive", "Required input is missing"]),
    ("an IMAGE into latent", lambda: _set(_i2v(), "10", latent=["5", 0]), ["latent", "IMAGE", "LATENT"]),
    ("our model into core's KSampler", lambda: _core_ksampler(), ["model", "LTXPACK_MODEL", "MODEL"]),
    ("overlap below 1", lambda: _set(_extension(), "7", overlap=0), ["overlap", "smaller than min of 1"]),
    ("unknown node", lambda: {**small_t2v(), "99": {"class_type": "LTXPackNope", "inputs": {}}}, ["LTXPackNope"]),
    ("unknown multiscale pass", lambda: _set(small_t2v(), "10", multiscale="third"), ["multiscale", "third"]),
    ("adain_factor above 1", lambda: _set(_multiscale(), "6", adain_factor=2.0), ["adain_factor", "max of 1.0"]),
]


def _multiscale() -> dict:
    return shrink(load("text_to_video_multiscale")[1])


def _dev_13b(**guidance) -> dict:
    """The 13B dev workflow at the tests' small size; `guidance`: values for its LTX Guidance node."""
    prompt = shrink(load("text_to_video_13b_dev")[1])
    prompt["5"]["inputs"].update(guidance)
    return prompt


def _drop(prompt: dict, node: str, name: str) -> dict:
    prompt = copy.deepcopy(prompt)
    del prompt[node]["inputs"][name]
    return prompt


def _core_ksampler() -> dict:
    prompt = small_t2v()
    prompt["20"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": ["1", 0],
            "positive": ["3", 0],
            "negative": ["3", 1],
            "latent_image": ["4", 0],
            "seed": 0,
            "steps": 1,
            "cfg": 3.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
        },
    }
    prompt["11"]["inputs"]["samples"] = ["20", 0]  # so that the sampler is on the way to an output
    return prompt


@pytest.mark.parametrize(("case", "build", "words"), REFUSED, ids=[c[0] for c in REFUSED])
def test_bad_values_are_refused_before_running(comfy_server, case, build, words):
    answer = _refused(comfy_server, build())
    for word in words:
        assert word in answer, f"{case}: {word!r} not in {answer!r}"
    assert comfy_server.alive()


def _latent_of_other_model() -> dict:
    prompt = small_t2v()
    prompt["4"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    return prompt


def _frames(count: int) -> dict:
    """Image condition fed `count` frames (core's RepeatImageBatch)."""
    prompt = _i2v()
    prompt["7"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["5", 0], "amount": count}}
    prompt["6"]["inputs"]["image"] = ["7", 0]
    return prompt


def _encode_frames(count: int) -> dict:
    prompt = _frames(count)
    prompt["8"] = {"class_type": "LTXPackVAEEncode", "inputs": {"pixels": ["7", 0], "vae": ["1", 1], "tiling": "auto"}}
    prompt["10"]["inputs"]["latent"] = ["8", 0]
    return prompt


# (what the user did, how to build the prompt, node that must fail, words the message must hold)
FAILED = [
    (
        "extension overlap not 1 + 8k",
        lambda: _set(_extension(), "7", overlap=12),
        "LTXPackExtendVideo",
        ["overlap 12", "1 + 8·k", "9 or 17"],
    ),
    (
        "extension no longer than the overlap",
        lambda: _set(_extension(), "4", length=9),
        "LTXPackExtendVideo",
        ["9 frames", "overlap of 9", "length to 17 or more"],
    ),
    (
        "video shorter than the overlap",
        lambda: _set(_set(_extension(), "4", length=41), "7", overlap=33),
        "LTXPackExtendVideo",
        [f"the video has {VIDEO_FRAMES} frames", "overlap of 33", "lower overlap to 25"],
    ),
    (
        "a batch of extensions joined as one video",
        lambda: _set(_extension(), "4", batch_size=2),
        "LTXPackJoinVideo",
        ["34 frames", "batch_size", "2 of 17"],
    ),
    (
        "width not a multiple of 32",
        lambda: _set(small_t2v(), "4", width=100),
        "LTXPackEmptyLatentVideo",
        ["width 100", "multiple of 32", "96 or 128"],
    ),
    (
        "length not 1 + 8k",
        lambda: _set(small_t2v(), "4", length=20),
        "LTXPackEmptyLatentVideo",
        ["20 frames", "1 + 8·k", "17 or 25"],
    ),
    (
        "keyframe off the 8-grid on a 0.9.1 model",
        lambda: _i2v(frame=3),
        "LTXPackSampler",
        ["frame 3", "0.9.1 model writes conditions in place", "multiple of 8", "0 or 8"],
    ),
    (
        "clip off the 8-grid",
        lambda: _set(_frames(9), "6", frame=3),
        "LTXPackImageCondition",
        ["a clip", "multiple of 8", "got 3", "0 or 8"],
    ),
    ("keyframe past the end", lambda: _i2v(frame=4000), "LTXPackImageCondition", ["4000"]),
    ("4 frames as a condition", lambda: _frames(4), "LTXPackImageCondition", ["4 frames", "1 + 8·k", "1 or 9"]),
    ("10 frames to VAE Encode", lambda: _encode_frames(10), "LTXPackVAEEncode", ["10 frames", "1 + 8·k", "9 or 17"]),
    (
        "GGUF without a VAE",
        lambda: _set(small_t2v(), "1", model_name="ltx-video-2b-v0.9.1-Q8_0.gguf"),
        "LTXPackModelLoader",
        ["ltx-video-2b-v0.9.1-Q8_0.gguf", "only the transformer", "vae_name"],
    ),
    (
        "a VAE file as the model",
        lambda: _set(small_t2v(), "1", model_name="a_vae.safetensors", vae_name="ltx-video-2b-v0.9.1-vae.safetensors"),
        "LTXPackModelLoader",
        ["a_vae.safetensors", "VAE", "vae_name"],
    ),
    (
        "a T5 file as the model",
        lambda: _set(small_t2v(), "1", model_name="t5.safetensors"),
        "LTXPackModelLoader",
        ["t5.safetensors", "T5", "text_encoder_name"],
    ),
    (
        "a checkpoint as T5",
        lambda: _set(small_t2v(), "2", text_encoder_name="ltx.safetensors"),
        "LTXPackTextEncoderLoader",
        ["ltx.safetensors", "T5", "model_name"],
    ),
    (
        "a broken file",
        lambda: _set(small_t2v(), "1", model_name="broken.safetensors"),
        "LTXPackModelLoader",
        ["broken.safetensors", "safetensors header"],
    ),
    (
        "a half-downloaded file",
        lambda: _set(small_t2v(), "1", model_name="truncated.safetensors"),
        "LTXPackModelLoader",
        ["truncated.safetensors", "is truncated", "download it again"],
    ),
    (
        "an image model's latent",
        _latent_of_other_model,
        "LTXPackSampler",
        ["4 channels", "128", "LTX Empty Latent Video"],
    ),
    (
        "guidance between 0 and 1",
        lambda: _set(small_t2v(), "10", guidance=0.5),
        "LTXPackSampler",
        ["guidance 0.5", "neither 0 (the release's guidance) nor 1 or more", "set 0, or a value from 1"],
    ),
    (
        "STG on a block the model lacks",
        lambda: _dev_13b(preset="custom", skip_blocks="28, 48"),
        "LTXPackGuidance",
        ["skip_blocks '28, 48'", "skips blocks 28, 48", "13B model has 48 blocks (0 to 47)", "below 48"],
    ),
    (
        "skip_blocks not a list of blocks",
        lambda: _dev_13b(preset="custom", skip_blocks="19;20"),
        "LTXPackGuidance",
        ["skip_blocks '19;20'", "not a list of block numbers", "19, 20"],
    ),
    (
        "STG without blocks",
        lambda: _dev_13b(preset="custom", skip_blocks=""),
        "LTXPackGuidance",
        ["stg_scale 1", "no block to perturb", "skip_blocks", "stg_scale 0"],
    ),
    (
        "the release of a 2B distilled file not named",
        lambda: _set(shrink(load("text_to_video_distilled")[1]), "1", release="auto"),
        "LTXPackModelLoader",
        ["ltxv-2b-0.9.8-distilled.safetensors", "0.9.6-distilled or 0.9.8-distilled", "Choose the release in release"],
    ),
    (
        "a VAE file as the upsampler",
        lambda: _set(_multiscale(), "5", upsampler_name="a_vae.safetensors"),
        "LTXPackUpsamplerLoader",
        ["a_vae.safetensors", "an LTX-Video VAE", "expected an LTX-Video latent upsampler", "vae_name"],
    ),
    (
        "an upsampler as the model",
        lambda: _set(small_t2v(), "1", model_name="upscaler.safetensors"),
        "LTXPackModelLoader",
        ["upscaler.safetensors", "latent upsampler", "upsampler_name of the LTX Upsampler Loader (pack)"],
    ),
    (
        "a checkpoint as a LoRA",
        lambda: _set(shrink(load("text_to_video_lora")[1]), "5", lora_name="ltx.safetensors"),
        "LTXPackLoraLoader",
        ["ltx.safetensors", "is not a LoRA (its keys: ", "Choose a LoRA file from models/loras in lora_name"],
    ),
    (
        "a LoRA for a deeper model",
        lambda: _set(shrink(load("text_to_video_lora")[1]), "5", lora_name="lora_13b.safetensors"),
        "LTXPackLoraLoader",
        ["lora_13b.safetensors", "names blocks up to 47", "made for this model, LTX-Video 0.9.5 2B"],
    ),
    (
        "a multiscale pass of a 0.9.1 model",
        lambda: _set(small_t2v(), "10", multiscale="second pass"),
        "LTXPackSampler",
        ["multiscale second pass", "0.9.1 2B release has no multiscale recipe", "set multiscale to off"],
    ),
    (
        "saving outside the output folder",
        lambda: _set(small_t2v(), "12", filename_prefix="../../escape"),
        "LTXPackSaveVideo",
        ["output"],
    ),
]


@pytest.mark.parametrize(("case", "build", "node_type", "words"), FAILED, ids=[c[0] for c in FAILED])
def test_bad_input_fails_with_a_clear_message_and_the_server_keeps_going(
    comfy_server, stray_files, case, build, node_type, words
):
    failed_node, message = _failed(comfy_server, build())
    assert failed_node == node_type, message
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    assert ".." not in message.replace("../", "").replace("…", ""), message
    assert comfy_server.alive()


def test_after_bad_input_a_good_prompt_succeeds(comfy_server, stray_files):
    _failed(comfy_server, _set(small_t2v(), "1", model_name="broken.safetensors"))
    run = comfy_server.run(small_t2v(seed=31))
    assert run.status == "success"
    assert_playable(saved_video(comfy_server, run), None, SMALL["length"], SMALL["height"], SMALL["width"], 25.0)
