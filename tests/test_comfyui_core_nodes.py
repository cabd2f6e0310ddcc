"""Our nodes next to ComfyUI's own LTX-Video nodes, both ways, in a real server: core's latents,
conditioning, sigmas and VAE into our sampler; our latents and frames into core's decode and video nodes.
The model files are the ones written with ComfyUI's own classes (comfy_written.py).

Runs when COMFYUI_PATH names a ComfyUI checkout (see comfy_server.py); CI always runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfy_server import COMFYUI
from comfy_written import CHECKPOINT, CHECKPOINT_4096, GGUF, SUBFOLDER, T5, T5_FP8, T5_FP8_SCALED, T5_FULL, VAE
from ltx_core import apply_loras, load_text_encoder, load_transformer, load_vae, make_schedule, video_positions
from ltx_core.media import read_video
from ltx_core.model.storage import linear_layers
from tiny_comfy import CHECKPOINT_095, LORA, LORA_2

pytestmark = pytest.mark.comfyui

MODEL = f"{SUBFOLDER}/{CHECKPOINT}"  # captions 32 wide (the tiny T5); VAE config without spatial_padding_mode
MODEL_095 = CHECKPOINT_095  # pack-written (tiny_comfy.py): 0.9.5 VAE and causal RoPE, appended conditions
MODEL_4096 = f"{SUBFOLDER}/{CHECKPOINT_4096}"  # captions 4096 wide (T5-XXL); VAE config with "zeros"
WIDTH, HEIGHT, LENGTH, STEPS = 64, 96, 9, 3
LATENT_SHAPE = (1, 128, 1 + (LENGTH - 1) // 8, HEIGHT // 32, WIDTH // 32)
DECODE_TOLERANCE = 1e-5  # IMAGE values in [0, 1]; the same float32 arithmetic in another order differs by ~1e-6


def node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def ours(model: str = MODEL, vae: str = "(from the model file)") -> dict:
    """Our loaders and text encoder (tiny T5, alone in its folder: ComfyUI's bundled tokenizer)."""
    placement = {"device": "default", "memory": "default"}
    return {
        "pack_model": node("LTXPackModelLoader", model_name=model, vae_name=vae, weight_dtype="default", **placement),
        "pack_t5": node(
            "LTXPackTextEncoderLoader", text_encoder_name=f"{SUBFOLDER}/{T5}", dtype="default", **placement
        ),
        "pack_text": node(
            "LTXPackTextEncode",
            text_encoder=["pack_t5", 0],
            prompt="a red fox jumps over the lazy dog",
            negative_prompt="blurry",
            max_tokens=16,
        ),
    }


def sampler(latent: list, positive: tuple = ("pack_text", 0), negative: tuple = ("pack_text", 1), **extra) -> dict:
    return node(
        "LTXPackSampler",
        model=["pack_model", 0],
        positive=list(positive),
        negative=list(negative),
        latent=latent,
        seed=5,
        steps=STEPS,
        guidance=3.0,
        schedule="auto",
        frame_rate=25.0,
        denoise=1.0,
        **extra,
    )


def save(value: list, name: str) -> dict:
    return node("LTXTestSaveTensor", value=value, name=name)


def run(server, prompt: dict):
    result = server.run(prompt)
    assert result.status == "success", json.dumps(result.history["status"], indent=1)[-4000:]
    return result


def saved(server, name: str):
    return torch.load(server.base / "output" / f"{name}.pt", weights_only=True)


def core_scheduler(latent: list) -> dict:
    """Core's LTXVScheduler with its defaults (the released shift and terminal) for `latent`."""
    return node(
        "LTXVScheduler", steps=STEPS, max_shift=2.05, base_shift=0.95, stretch=True, terminal=0.1, latent=latent
    )


def decode_to_core_video(tiling: str, fps: float, prefix: str) -> dict:
    """Our decode of node "sample", then core's CreateVideo and SaveVideo (mp4, h264)."""
    return {
        "decode": node(
            "LTXPackVAEDecode",
            samples=["sample", 0],
            vae=["pack_model", 1],
            decode_timestep=0.05,
            decode_noise_scale=0.025,
            seed=0,
            tiling=tiling,
        ),
        "video": node("CreateVideo", images=["decode", 0], fps=fps),
        "save_video": node("SaveVideo", video=["video", 0], filename_prefix=prefix, format="mp4", codec="h264"),
    }


def core_empty_latent() -> dict:
    return node("EmptyLTXVLatentVideo", width=WIDTH, height=HEIGHT, length=LENGTH, batch_size=1)


# --- the files ComfyUI's classes wrote, in the pack's loaders ---------------------------------------------


def test_pack_loads_every_comfy_written_file(comfy_server, tmp_path):
    """Checkpoint, VAE file, GGUF and the three tiny T5 files load in the pack (the full-size T5 is left to
    the server test: it takes ~1 min here); the copies of the same weights agree."""
    models = comfy_server.base / "models"
    transformer, found = load_transformer(models / "checkpoints" / MODEL)
    quantized, found_gguf = load_transformer(models / "diffusion_models" / SUBFOLDER / GGUF)
    assert found.config == found_gguf.config and found.config.caption_channels == 32
    x, context = torch.randn(1, 6, 128), torch.randn(1, 4, 32)
    inputs = (
        x,
        torch.tensor([0.5]),
        context,
        torch.ones(1, 4),
        video_positions(1, 2, 3, frame_rate=25.0, causal_fix=False),
    )
    with torch.inference_mode():
        reference = transformer(*inputs)
        torch.testing.assert_close(quantized(*inputs), reference, atol=0.05 * reference.abs().max(), rtol=0)

    vae, found_vae = load_vae(models / "checkpoints" / MODEL)
    vae_alone, found_alone = load_vae(models / "vae" / SUBFOLDER / VAE)
    assert found_vae.config == found_alone.config and found_vae.release == "0.9.1"
    alone = vae_alone.state_dict()
    assert all(torch.equal(value, alone[key]) for key, value in vae.state_dict().items())

    tokenizer = Path(COMFYUI) / "comfy" / "text_encoders" / "t5_tokenizer"
    folder = models / "text_encoders" / SUBFOLDER

    def encode(path: Path) -> torch.Tensor:
        encoder, found_t5 = load_text_encoder(path, tokenizer_path=tokenizer, dtype=torch.float32)
        assert found_t5.config.vocab_size == 32128 and found_t5.config.d_model == 32
        with torch.inference_mode():
            return encoder.encode("a red fox jumps over the lazy dog", None, 16).context

    assert encode(folder / T5).abs().mean() > 0.1
    for name in (T5_FP8, T5_FP8_SCALED):  # against the same weights dequantized by hand, stored as float32
        stored = load_file(folder / name)
        scales = {k.removesuffix("scale_weight"): v for k, v in stored.items() if k.endswith(".scale_weight")}
        dequantized = {
            k: v.float() * scales.get(k.removesuffix("weight"), 1.0)
            for k, v in stored.items()
            if k != "scaled_fp8" and not k.endswith(".scale_weight")
        }
        save_file(dequantized, tmp_path / name)
        torch.testing.assert_close(encode(folder / name), encode(tmp_path / name), atol=1e-5, rtol=0)


def test_core_lora_loader_patches_as_our_loras_merge(comfy_server):
    """The tiny LoRA files (ComfyUI's key format) through core's LoraLoaderModelOnly onto core's model of
    the ComfyUI-written checkpoint: core finds every key, and its patched weights equal our merged
    W + ΔW (the same file through `apply_loras`) on every layer, the layers without LoRA untouched."""
    strengths = {LORA: 0.8, LORA_2: -0.5}
    prompt = {
        "core_ckpt": node("CheckpointLoaderSimple", ckpt_name=MODEL),
        "core_lora": node("LoraLoaderModelOnly", model=["core_ckpt", 0], lora_name=LORA, strength_model=0.8),
        "core_lora_2": node("LoraLoaderModelOnly", model=["core_lora", 0], lora_name=LORA_2, strength_model=-0.5),
        "weights": node("LTXTestPatchedWeights", model=["core_lora_2", 0], name="core_lora_weights"),
    }
    run(comfy_server, prompt)
    assert "lora key not loaded" not in comfy_server.log()
    patched = torch.load(comfy_server.base / "output" / "core_lora_weights.pt", weights_only=True)

    models = comfy_server.base / "models"
    transformer, _ = load_transformer(models / "checkpoints" / MODEL, dtype=torch.float32)
    apply_loras(transformer, [(models / "loras" / name, strength) for name, strength in strengths.items()])
    probe = torch.zeros(1)
    ours = {k: v for k, v in transformer.state_dict().items() if not k.endswith(("lora_down", "lora_up"))}
    merged = {f"{name}.weight": layer.weight_like(probe) for name, layer in linear_layers(transformer)}
    assert set(patched) == set(ours)
    changed = [k for k in merged if not torch.equal(merged[k], ours[k])]
    assert len(changed) == 10  # the block's linear layers: attn1 and attn2 q, k, v, out; ff in and out
    for key, value in {**ours, **merged}.items():
        torch.testing.assert_close(patched[key].float(), value, atol=1e-6, rtol=1e-6, msg=key)


# --- core → our sampler ----------------------------------------------------------------------------------


def test_core_empty_latent_and_scheduler_drive_our_sampler(comfy_server):
    """Core's empty latent samples exactly as ours; core's LTXVScheduler sigmas as our own schedule."""
    prompt = {
        **ours(),
        "core_empty": core_empty_latent(),
        "pack_empty": node("LTXPackEmptyLatentVideo", width=WIDTH, height=HEIGHT, length=LENGTH, batch_size=1),
        "core_sigmas": core_scheduler(["core_empty", 0]),
        "on_core": sampler(["core_empty", 0]),
        "on_ours": sampler(["pack_empty", 0]),
        "core_schedule": sampler(["core_empty", 0], sigmas=["core_sigmas", 0]),
        "save_core": save(["on_core", 0], "core_nodes_on_core_latent"),
        "save_ours": save(["on_ours", 0], "core_nodes_on_our_latent"),
        "save_sched": save(["core_schedule", 0], "core_nodes_core_sigmas"),
        "save_sigmas": save(["core_sigmas", 0], "core_nodes_sigmas"),
    }
    run(comfy_server, prompt)
    on_core = saved(comfy_server, "core_nodes_on_core_latent")["samples"]
    assert on_core.shape == LATENT_SHAPE and torch.isfinite(on_core).all() and on_core.std() > 0.1
    assert torch.equal(on_core, saved(comfy_server, "core_nodes_on_our_latent")["samples"])
    # the same shifted, stretched schedule (core computes it in float32, we in float64, so σ differs by
    # ~1e-7, which the random-weight model turns into ~3e-5 in the latents)
    tokens = LATENT_SHAPE[2] * LATENT_SHAPE[3] * LATENT_SHAPE[4]
    sigmas = saved(comfy_server, "core_nodes_sigmas")
    torch.testing.assert_close(sigmas, make_schedule("shifted", STEPS, tokens), atol=1e-6, rtol=0)
    torch.testing.assert_close(saved(comfy_server, "core_nodes_core_sigmas")["samples"], on_core, atol=1e-4, rtol=0)


def test_core_t5_img_to_video_and_scheduler_into_our_sampler_then_core_video_nodes(comfy_server):
    """Core's CLIPLoader (full-size T5-XXL) + CLIPTextEncode as our conditioning, core's LTXVImgToVideo
    (core VAE from CheckpointLoaderSimple) as our latent, core's LTXVScheduler as our sigmas; our frames
    then go through core's CreateVideo + SaveVideo."""
    prompt = {
        **ours(MODEL_4096),
        "core_t5": node("CLIPLoader", clip_name=T5_FULL, type="ltxv", device="default"),
        "core_text": node("CLIPTextEncode", text="a red fox jumps over the lazy dog", clip=["core_t5", 0]),
        "core_ckpt": node("CheckpointLoaderSimple", ckpt_name=MODEL_4096),
        "image": node("LoadImage", image="first_frame.png"),
        "img2vid": node(
            "LTXVImgToVideo",
            positive=["core_text", 0],
            negative=["core_text", 0],
            vae=["core_ckpt", 2],
            image=["image", 0],
            width=WIDTH,
            height=HEIGHT,
            length=LENGTH,
            batch_size=1,
            strength=1.0,
        ),
        "core_sigmas": core_scheduler(["img2vid", 2]),
        "sample": sampler(["img2vid", 2], ["img2vid", 0], ["img2vid", 1], sigmas=["core_sigmas", 0]),
        **decode_to_core_video("off", 24.0, "core_nodes/i2v"),
        "save_text": save(["core_text", 0], "core_nodes_t5"),
        "save_start": save(["img2vid", 2], "core_nodes_i2v_latent"),
        "save_sampled": save(["sample", 0], "core_nodes_i2v_sampled"),
    }
    try:
        result = run(comfy_server, prompt)
        (text,) = saved(comfy_server, "core_nodes_t5")
        assert text[0].shape == (1, 128, 4096) and text[0].abs().mean() > 0.1  # core pads T5 to 128 tokens
        start, sampled = saved(comfy_server, "core_nodes_i2v_latent"), saved(comfy_server, "core_nodes_i2v_sampled")
        assert sampled["samples"].shape == LATENT_SHAPE
        assert torch.equal(sampled["samples"][:, :, :1], start["samples"][:, :, :1])  # strength 1: the image frame kept
        assert (sampled["samples"][:, :, 1:] - start["samples"][:, :, 1:]).abs().mean() > 0.1
        (entry,) = result.outputs["save_video"]["images"]
        frames, fps = read_video(comfy_server.output_file(entry))
        assert entry["filename"].endswith(".mp4") and frames.shape == (LENGTH, HEIGHT, WIDTH, 3) and fps == 24
    finally:  # T5-XXL takes ~10 GB in the server: let it go before the next test
        comfy_server.post("/free", {"unload_models": True, "free_memory": True})


def test_core_add_guide_into_our_sampler_then_crop_guides(comfy_server):
    """Core's LTXVAddGuide (an image at frame 17, encoded by core's VAE) into our sampler samples as our own
    image condition at frame 17 (a 0.9.5 model: appended tokens at the image's position); at frame 18 it
    does not (the negative control). Our sampler leaves the guide frame after the video's, so core's
    LTXVCropGuides cuts it, and our decode leaves it out when nothing cut it. Both sides encode the image
    with the same VAE weights (a file core can load; core builds the 0.9.5 decoder at released widths only)."""
    length, guide_frame = 25, 17
    image = {"image": ["sized", 0], "strength": 1.0}

    def our_condition(frame: int) -> dict:
        return node(
            "LTXPackImageCondition", latent=["empty", 0], vae=["pack_vae", 1], frame=frame, compression=0, **image
        )

    prompt = {
        **ours(MODEL_095),
        "pack_vae": {**ours(MODEL_4096)["pack_model"]},
        "core_ckpt": node("CheckpointLoaderSimple", ckpt_name=MODEL_4096),
        "load": node("LoadImage", image="first_frame.png"),
        "sized": node(
            "ImageScale", image=["load", 0], upscale_method="bilinear", width=WIDTH, height=HEIGHT, crop="disabled"
        ),
        "empty": node("EmptyLTXVLatentVideo", width=WIDTH, height=HEIGHT, length=length, batch_size=1),
        "guide": node(
            "LTXVAddGuide",
            positive=["pack_text", 0],
            negative=["pack_text", 1],
            vae=["core_ckpt", 2],
            latent=["empty", 0],
            frame_idx=guide_frame,
            **image,
        ),
        "on_guide": sampler(["guide", 2], ["guide", 0], ["guide", 1]),
        "crop": node("LTXVCropGuides", positive=["guide", 0], negative=["guide", 1], latent=["on_guide", 0]),
        "ours": our_condition(guide_frame),
        "on_ours": sampler(["ours", 0]),
        "control": our_condition(guide_frame + 1),
        "on_control": sampler(["control", 0]),
        "sample": sampler(["guide", 2], ["guide", 0], ["guide", 1]),  # decoded without LTXVCropGuides
        **decode_to_core_video("off", 25.0, "core_nodes/guide"),
        **{
            f"save_{name}": save([name, 0], f"core_nodes_guide_{name}")
            for name in ("on_guide", "crop", "on_ours", "on_control")
        },
        "save_crop": save(["crop", 2], "core_nodes_guide_crop"),
    }
    result = run(comfy_server, prompt)
    video_shape = (1, 128, 1 + (length - 1) // 8, HEIGHT // 32, WIDTH // 32)
    on_guide = saved(comfy_server, "core_nodes_guide_on_guide")["samples"]
    cropped = saved(comfy_server, "core_nodes_guide_crop")["samples"]
    on_ours = saved(comfy_server, "core_nodes_guide_on_ours")["samples"]
    on_control = saved(comfy_server, "core_nodes_guide_on_control")["samples"]
    assert (
        on_guide.shape == (1, 128, video_shape[2] + 1, *video_shape[3:])
        and cropped.shape == on_ours.shape == video_shape
    )
    assert torch.equal(cropped, on_guide[:, :, :-1])
    # the two VAEs encode the image in a different order of float32 operations (~1e-6), then 3 steps
    difference = (cropped - on_ours).abs().max()
    assert difference < 1e-4, f"max |core guide − our condition| = {difference:.3g}"
    assert (on_control - on_ours).abs().max() > 100 * max(difference, 1e-6)
    (entry,) = result.outputs["save_video"]["images"]
    frames, _ = read_video(comfy_server.output_file(entry))
    assert frames.shape == (length, HEIGHT, WIDTH, 3)


# --- our latent / frames → core ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vae", "equal"),
    [(MODEL_4096, True), (MODEL, False)],
    ids=["padding-key-present", "padding-key-absent"],
)
def test_core_vae_decode_of_our_latent_matches_ours(comfy_server, vae, equal):
    """Our sampler's LATENT decoded by core's VAEDecode and by ours, with the same noise: core draws
    `randn_like` (then the decoder's noise maps) from the global CPU generator, we from a CPU
    torch.Generator seeded with the node's seed, which gives the same numbers as torch.manual_seed(seed):
    so LTXTestSeedTorch(seed) just before VAEDecode makes the draws equal.

    Core pads the decoder "reflect" when the VAE config has no `spatial_padding_mode`; we (and the
    official code) pad "zeros". With the key present (zeros) the images are equal; with the key absent
    (the 0.9.1 release's config) they differ: the negative control."""
    name = "present" if equal else "absent"
    prompt = {
        **ours(vae=vae),
        "empty": core_empty_latent(),
        "sample": sampler(["empty", 0]),
        "core_ckpt": node("CheckpointLoaderSimple", ckpt_name=vae),
        "core_decode": node("VAEDecode", samples=["sample", 0], vae=["core_ckpt", 2]),
        "pack_decode": node(
            "LTXPackVAEDecode",
            samples=["sample", 0],
            vae=["pack_model", 1],
            decode_timestep=0.05,
            decode_noise_scale=0.025,
            seed=11,
            tiling="off",
        ),
        "save_core": save(["core_decode", 0], f"core_nodes_unseeded_{name}"),
        "save_pack": save(["pack_decode", 0], f"core_nodes_pack_decode_{name}"),
    }
    run(comfy_server, prompt)
    # Core's VAE draws random numbers when it is built (its adaLN tables), so the loader must not run between
    # the seeding and the decode: it ran above, and is taken from the cache below.
    prompt["seed"] = node("LTXTestSeedTorch", samples=["sample", 0], seed=11)
    prompt["core_decode"]["inputs"]["samples"] = ["seed", 0]
    prompt["save_core"] = save(["core_decode", 0], f"core_nodes_core_decode_{name}")
    seeded = run(comfy_server, prompt)
    assert seeded.executed() == {"seed", "core_decode", "save_core"}

    pack = saved(comfy_server, f"core_nodes_pack_decode_{name}")
    core = saved(comfy_server, f"core_nodes_core_decode_{name}")
    unseeded = saved(comfy_server, f"core_nodes_unseeded_{name}")
    assert pack.shape == core.shape == (LENGTH, HEIGHT, WIDTH, 3) and pack.std() > 0.05
    difference = (core - pack).abs()
    if equal:
        assert difference.max() <= DECODE_TOLERANCE, f"max |core − ours| = {difference.max():.3g}"
        assert (unseeded - pack).abs().max() > 100 * DECODE_TOLERANCE  # the seeding is what made the noise equal
    else:
        assert difference.max() > 0.1 and difference.mean() > 1e-3, f"max {difference.max():.3g}"


def test_our_frames_into_core_create_video_and_save_video(comfy_server):
    prompt = {
        **ours(),
        "empty": core_empty_latent(),
        "sample": sampler(["empty", 0]),
        **decode_to_core_video("auto", 25.0, "core_nodes/t2v"),
        "save_frames": save(["decode", 0], "core_nodes_t2v_frames"),
    }
    result = run(comfy_server, prompt)
    (entry,) = result.outputs["save_video"]["images"]
    assert entry["type"] == "output" and entry["filename"].endswith(".mp4")
    frames, fps = read_video(comfy_server.output_file(entry))
    assert frames.shape == (LENGTH, HEIGHT, WIDTH, 3) and fps == 25
    ours_frames = saved(comfy_server, "core_nodes_t2v_frames")
    # the random-weight decoder paints pixel noise, which h264 smooths: compare colours and correlation
    assert (frames.mean(dim=(1, 2)) - ours_frames.mean(dim=(1, 2))).abs().max() < 0.03
    assert torch.corrcoef(torch.stack([frames.flatten(), ours_frames.flatten()]))[0, 1] > 0.4
