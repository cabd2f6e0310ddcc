"""Memory in a real ComfyUI: what the pack holds is given back, and core's memory manager knows its size.

A server of its own (its resident memory is measured, so no other test may run prompts in it) over two
transformer checkpoints of ~135 MB each, large enough that keeping a dropped one shows plainly in the
process's resident memory. The test node LTXTestMemoryReport (comfy_test_nodes.py) reports that memory,
what the pack's block streaming holds, and the sizes core's patcher reports. ComfyUI runs on the CPU
here, where low_vram mode has nothing to stream to; the report node switches on streaming to the CPU,
so that the streamers' bookkeeping (the same as on a GPU; only page locking is CUDA's) runs in the server.

Measured before the fix (the streamer registry kept every streamed model): resident memory rose from
761 to 2515 MiB over the 20 prompts, with 15 streamers alive at the end; after it, 762 to 773 MiB.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time

import pytest
import torch

from comfy_server import COMFYUI, SKIP_REASON, Server, prepare_base
from test_workflows import load, shrink
from tiny import random_state_dict, tiny_transformer_config

pytestmark = pytest.mark.comfyui

MODELS = ("big-a.safetensors", "big-b.safetensors")
MODES = ("default", "low_vram")
PROMPTS = 20
ROUND = len(MODELS) * len(MODES)  # every model in every mode once: all that a process ever holds
MODEL_BYTES = 135 * 2**20  # each checkpoint's transformer, float32 (see _write_checkpoint)


def _write_checkpoint(path, seed: int) -> None:
    """A transformer of 2 blocks of width 1024 (67 MB each in float32) with the tiny VAE, 128 latent
    channels and the tiny T5's 32-wide text features."""
    from safetensors.torch import save_file

    from ltx_core import LTXVideoTransformer
    from tiny_comfy import _vae_tensors

    cfg = dataclasses.replace(
        tiny_transformer_config(heads=32, head_dim=32, layers=2), in_channels=128, out_channels=128, caption_channels=32
    )
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LTXVideoTransformer(cfg).state_dict().items()}
    vae_metadata, vae = _vae_tensors()
    tensors = {f"model.diffusion_model.{k}": v for k, v in random_state_dict(shapes, seed).items()}
    tensors.update({f"vae.{k}": v for k, v in vae.items()})
    save_file(tensors, path, metadata={"config": json.dumps({"transformer": cfg.to_metadata(), "vae": vae_metadata})})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not COMFYUI:
        pytest.skip(SKIP_REASON)
    from tiny_comfy import write_comfy_models

    base = prepare_base(tmp_path_factory.mktemp("comfy_memory"))
    write_comfy_models(base / "models")
    for seed, name in enumerate(MODELS):
        _write_checkpoint(base / "models" / "checkpoints" / name, seed=50 + seed)
    server = Server(base)
    yield server
    server.stop()


def _report(server, prompt: dict | None = None, stream_on_cpu: bool = True) -> dict:
    """Run `prompt` (or nothing) followed by the memory report; returns the report."""
    prompt = copy.deepcopy(prompt or {})
    after = {"after": ["12", 0]} if "12" in prompt else {}
    prompt["99"] = {"class_type": "LTXTestMemoryReport", "inputs": {"stream_on_cpu": stream_on_cpu, **after}}
    run = server.run(prompt)
    assert run.status == "success", json.dumps(run.history["status"], indent=1)[-4000:]
    (report,) = run.outputs["99"]["memory"]
    return report


def _t2v(model_name: str, memory: str, seed: int, **loader) -> dict:
    prompt = shrink(load("text_to_video")[1])
    prompt["1"]["inputs"].update(model_name=model_name, memory=memory, **loader)
    prompt["2"]["inputs"]["memory"] = memory
    prompt["10"]["inputs"]["seed"] = seed  # never a cached result
    return prompt


def test_resident_memory_stays_flat_over_20_prompts_switching_models_and_modes(server):
    """Every prompt loads another model or mode (a loader input changes, so ComfyUI drops the old model):
    after the first round, in which the process meets all it will hold, its resident memory stays flat."""
    _report(server)  # switches on streaming to the CPU
    reports = []
    for i in range(PROMPTS):
        model, memory = MODELS[i % 2], MODES[(i // 2) % 2]
        reports.append(_report(server, _t2v(model, memory, seed=i)))
        streamers = reports[-1]["streaming"]["streamers"]
        assert streamers == (2 if memory == "low_vram" else 0), (i, memory, reports[-1])  # transformer and T5
    rss = [r["rss"] for r in reports]
    first_round = max(rss[:ROUND])
    growth = max(rss[ROUND:]) - first_round
    print("resident MiB per prompt:", [round(r / 2**20) for r in rss])
    assert growth < 0.75 * MODEL_BYTES, f"resident memory grew by {growth / 2**20:.0f} MiB after the first round"


def test_free_releases_what_streaming_holds(server):
    report = _report(server, _t2v(MODELS[0], "low_vram", seed=100))
    assert report["streaming"]["streamers"] == 2
    assert {m["name"] for m in report["models"]} >= {"LTXPackLTXVideoTransformer", "LTXPackT5TextEncoder"}
    assert server.post("/free", {"unload_models": True})[0] == 200  # *Unload models* in the menu
    for _ in range(20):  # the server acts on /free between prompts
        time.sleep(0.5)
        report = _report(server)
        if report["streaming"]["streamers"] == 0:
            break
    assert report["streaming"] == {"streamers": 0, "host_bytes": 0, "pinned_bytes": 0}
    assert not report["models"]
    again = _report(server, _t2v(MODELS[0], "low_vram", seed=101))  # the cached loaders' models stream again
    assert again["streaming"]["streamers"] == 2


# (what is loaded, loader inputs, what core measured before: the state dict's share of the bytes)
SIZED = [
    ("GGUF Q8_0", {"model_name": "ltx-video-2b-v0.9.1-Q8_0.gguf", "vae_name": "ltx-video-2b-v0.9.1-vae.safetensors"}),
    ("fp8", {"model_name": MODELS[0], "weight_dtype": "fp8_e4m3fn"}),
    ("fp8_matmul", {"model_name": MODELS[0], "weight_dtype": "fp8_matmul"}),
    ("fp8_matmul GGUF", {"model_name": "ltx-video-2b-v0.9.1-Q8_0.gguf", "weight_dtype": "fp8_matmul",
                         "vae_name": "ltx-video-2b-v0.9.1-vae.safetensors"}),
]  # fmt: skip


@pytest.mark.parametrize("memory", MODES)
@pytest.mark.parametrize(("case", "loader"), SIZED, ids=[c for c, _ in SIZED])
def test_core_knows_the_true_size_of_every_model(server, case, loader, memory):
    prompt = _t2v(memory=memory, seed=200 + SIZED.index((case, loader)), **loader)
    prompt["2"]["inputs"]["text_encoder_name"] = "t5xxl_fp8_e4m3fn.safetensors"  # fp8 T5, kept in fp8
    report = _report(server, prompt)
    models = {m["name"]: m for m in report["models"]}
    assert {"LTXPackLTXVideoTransformer", "LTXPackVideoVAE", "LTXPackT5TextEncoder"} <= set(models)
    for model in models.values():
        assert model["patcher_size"] == model["held_bytes"], model
    transformer = models["LTXPackLTXVideoTransformer"]
    if case == "GGUF Q8_0":  # core's own measure misses the quantized weights (non-persistent buffers)
        assert transformer["core_module_size"] < transformer["held_bytes"] / 2, transformer
    print(case, memory, {name: (m["core_module_size"], m["patcher_size"]) for name, m in models.items()})


def test_loader_lists_come_from_comfyuis_cached_file_lists(server):
    """The lists are folder_paths' cached ones (re-read only when a directory's modification time
    changes), which include GGUF files and model folders, and notice files added while running."""

    def listed() -> tuple[list[str], list[str]]:
        model = server.get("/object_info/LTXPackModelLoader")["LTXPackModelLoader"]["input"]["required"]
        text = server.get("/object_info/LTXPackTextEncoderLoader")["LTXPackTextEncoderLoader"]["input"]["required"]
        return model["model_name"][0], text["text_encoder_name"][0]

    models, encoders = listed()
    assert "ltx-video-2b-v0.9.1-Q8_0.gguf" in models and "t5xxl_fp8_e4m3fn.safetensors" in encoders
    cached = _report(server, stream_on_cpu=False)["cached_lists"]
    assert cached == ["ltx_pack_checkpoints_diffusion_models", "ltx_pack_text_encoders", "ltx_pack_vae_checkpoints"]
    root = server.base / "models"
    (root / "diffusion_models" / "more").mkdir()
    (root / "diffusion_models" / "more" / "copy.gguf").write_bytes(
        (root / "diffusion_models" / "ltx-video-2b-v0.9.1-Q8_0.gguf").read_bytes()
    )
    folder = root / "text_encoders" / "t5_folder"
    folder.mkdir()
    for name in ("config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        (folder / name).write_text("{}")
    models, encoders = listed()
    assert "more/copy.gguf" in models
    assert "t5_folder" in encoders and not any(name.startswith("t5_folder/") for name in encoders)
