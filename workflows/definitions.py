"""The shared workflows, described once; `build.py` writes them in ComfyUI's UI and API formats."""

from __future__ import annotations

CHECKPOINT = "ltx-video-2b-v0.9.1.safetensors"
# Keyframes after frame 0 and clips (video extension) are appended as extra tokens from 0.9.5 on.
CHECKPOINT_095 = "ltx-video-2b-v0.9.5.safetensors"
CHECKPOINT_DISTILLED = "ltxv-2b-0.9.8-distilled.safetensors"
CHECKPOINT_13B_DEV = "ltxv-13b-0.9.8-dev.safetensors"
GGUF = "ltx-video-2b-v0.9.1-Q8_0.gguf"
SPATIAL_UPSCALER = "ltxv-spatial-upscaler-0.9.8.safetensors"
VAE = "ltx-video-2b-v0.9.1-vae.safetensors"
T5 = "t5xxl_fp16.safetensors"
T5_FP8 = "t5xxl_fp8_e4m3fn.safetensors"
LORA = "ltxv_095_cakeify_lora.safetensors"  # Lightricks' Cakeify effect LoRA, trained on 2B 0.9.5
FROM_MODEL = "(from the model file)"
PROMPT = (
    "A red fox trots across a misty forest clearing at dawn, golden light falling through the trees and soft "
    "shadows moving over the wet grass. The camera pans slowly to follow the fox, which stops and looks back."
)
NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"
VIDEO = "example.mp4"


SAMPLER_FIXED = (
    "Sampler: 30 steps with guidance 3 (classifier-free only), as set here; steps 0 and guidance 0 run the\n"
    "release's own settings instead (2B dev: 40 steps, CFG 3 + STG on block 19)."
)
SAMPLER_RELEASE = "Sampler: steps 0 and guidance 0 run the release's own settings; other values override them."


def files(checkpoint: str = CHECKPOINT, releases: str = "", sampler: str = SAMPLER_FIXED, more: str = "") -> str:
    """The note's list of files, for a workflow that loads `checkpoint` (`releases`: which others do;
    `more`: lines of further files)."""
    return f"""Files (put them in ComfyUI's models folders, then press R in the editor to refresh the lists):
- models/checkpoints/{checkpoint}  – from huggingface.co/Lightricks/LTX-Video (transformer + VAE in one file){releases}
- models/text_encoders/{T5}  – from huggingface.co/comfyanonymous/flux_text_encoders (T5-XXL; ComfyUI's bundled
  T5 tokenizer is used when no spiece.model / tokenizer.json lies beside it){more}
Sizes: width and height multiples of 32, length 1 + 8·k frames. {sampler}"""


FILES = files()
FILES_095 = files(
    CHECKPOINT_095,
    "\n  or a later release (e.g. ltxv-13b-0.9.7-dev.safetensors): a 0.9.5+ model, see above",
)

LOW_VRAM_FILES = f"""Files for low VRAM (under 8 GB at 768×512×121):
- models/diffusion_models/{GGUF}  – a GGUF transformer, e.g. from huggingface.co/city96/LTX-Video-gguf
  (Q8_0 is close to bf16; Q4/Q5 files are smaller)
- models/vae/{VAE}  – the LTX-Video VAE alone (or pick the full checkpoint from models/checkpoints here:
  only its VAE part is read)
- models/text_encoders/{T5_FP8}  – T5-XXL in fp8, from huggingface.co/comfyanonymous/flux_text_encoders
Both loaders use memory = low_vram: the transformer's and T5's blocks stay in CPU memory and visit the GPU
one at a time (copied while the previous block computes), and the VAE decodes in exact temporal chunks."""


def _common(node, t5: str, prompt: str, model: dict, width: int, height: int, length: int, max_tokens: int = 128):
    return [
        node(1, "LTXPackModelLoader", model),
        node(
            2,
            "LTXPackTextEncoderLoader",
            {"text_encoder_name": t5, "dtype": "default", "device": "default", "memory": model["memory"]},
        ),
        node(
            3,
            "LTXPackTextEncode",
            {"text_encoder": (2, 0), "prompt": prompt, "negative_prompt": NEGATIVE, "max_tokens": max_tokens},
        ),
        node(4, "LTXPackEmptyLatentVideo", {"width": width, "height": height, "length": length, "batch_size": 1}),
    ]


def _sampler(latent: tuple, steps: int = 30, guidance: float = 3.0, **optional) -> dict:
    """The values of an LTX Sampler (pack) over the loader (1) and the text encode node (3)."""
    return {
        "model": (1, 0),
        "positive": (3, 0),
        "negative": (3, 1),
        "latent": latent,
        "seed": 42,
        "steps": steps,
        "guidance": guidance,
        "schedule": "auto",
        "frame_rate": 25.0,
        "denoise": 1.0,
        "memory": "from loader",
        "sampling": "auto",
        "multiscale": "off",
        **optional,
    }


def _tail(
    node,
    latent: tuple,
    prefix: str,
    steps: int = 30,
    guidance: float = 3.0,
    images: tuple = (11, 0),
    samples: tuple = (10, 0),
    **sampler,
) -> list:
    """Sampler (node 10), decode (11) of `samples` and save (12) of `images`; `sampler`: the sampler's
    optional inputs (e.g. guidance_settings)."""
    return [
        node(10, "LTXPackSampler", _sampler(latent, steps, guidance, **sampler)),
        node(
            11,
            "LTXPackVAEDecode",
            {
                "samples": samples,
                "vae": (1, 1),
                "decode_timestep": 0.05,
                "decode_noise_scale": 0.025,
                "seed": 42,
                "tiling": "auto",
            },
        ),
        node(12, "LTXPackSaveVideo", {"images": images, "frame_rate": 25.0, "filename_prefix": prefix, "crf": 19}),
    ]


def make(node, workflow) -> list:
    """The workflows: `node(id, type, values)` and `workflow(name, note, nodes)` build them."""
    full = {
        "model_name": CHECKPOINT,
        "vae_name": FROM_MODEL,
        "weight_dtype": "default",
        "device": "default",
        "memory": "default",
        "release": "auto",
    }
    low = {**full, "model_name": GGUF, "vae_name": VAE, "memory": "low_vram"}
    full_095 = {**full, "model_name": CHECKPOINT_095}
    # content cannot tell the 2B distilled files of 0.9.6 and 0.9.8 apart: the loader is told
    distilled_files = {**full, "model_name": CHECKPOINT_DISTILLED, "release": "0.9.8-distilled"}

    def condition(id_: int, latent: tuple, image: int, frame: int) -> object:
        return node(
            id_,
            "LTXPackImageCondition",
            {"latent": latent, "vae": (1, 1), "image": (image, 0), "frame": frame, "strength": 1.0, "compression": 29},
        )

    t2v = workflow(
        "text_to_video",
        f"LTX-Video text to video (LTX pack nodes).\n\n{FILES}",
        [*_common(node, T5, PROMPT, full, 768, 512, 97), *_tail(node, (4, 0), "ltx/text_to_video")],
    )
    i2v = workflow(
        "image_to_video",
        f"LTX-Video image to video: the loaded image becomes the first frame (strength 1 keeps it exactly).\n"
        f"Put the image in ComfyUI's input folder or upload it in the Load Image node.\n\n{FILES}",
        [
            *_common(
                node, T5, "The fox in the picture turns its head and walks away into the forest.", full, 768, 512, 97
            ),
            node(5, "LoadImage", {"image": "example.png"}),
            condition(6, (4, 0), 5, 0),
            *_tail(node, (6, 0), "ltx/image_to_video"),
        ],
    )
    keyframes = workflow(
        "keyframe_interpolation",
        "LTX-Video keyframe interpolation: the first image is pinned to frame 0, the second to the last frame\n"
        "(frame −1); the model fills the motion between them. Chain more LTX Image Condition nodes for more\n"
        "keyframes: 0.9.5+ models (as named here) take them at any frame as extra tokens, as released;\n"
        "0.9.0 / 0.9.1 models write them in place, at multiples of 8 only.\n\n"
        f"{FILES_095}",
        [
            *_common(node, T5, "A smooth camera move from the first view to the second.", full_095, 768, 512, 97, 256),
            node(5, "LoadImage", {"image": "first_frame.png"}),
            node(7, "LoadImage", {"image": "last_frame.png"}),
            condition(6, (4, 0), 5, 0),
            condition(8, (6, 0), 7, -1),
            *_tail(node, (8, 0), "ltx/keyframes"),
        ],
    )
    shared = {"direction": "forward", "overlap": 17}  # the same on both nodes
    extension = workflow(
        "video_extension",
        "LTX-Video video extension: a new video of `length` frames continues the loaded one after its end\n"
        "(direction forward; backward: leads up to its start). LTX Extend Video keeps the old video's last\n"
        "`overlap` frames as the new one's first (backward: its first as the new one's last), and LTX Join Video\n"
        "puts the two together: old + length − overlap frames, at the empty latent's size (the old video is\n"
        "resized and centre-cropped to it). Keep direction and overlap equal on both nodes. It needs a 0.9.5+\n"
        "model: the shared frames are a clip condition, which 0.9.5 brought.\n"
        "Put the video in ComfyUI's input folder or upload it in the Load Video node.\n\n"
        f"{FILES_095}",
        [
            *_common(node, T5, "The fox keeps walking through the forest.", full_095, 768, 512, 97, 256),
            node(5, "LoadVideo", {"file": VIDEO}),
            node(6, "GetVideoComponents", {"video": (5, 0)}),
            node(
                7,
                "LTXPackExtendVideo",
                {"latent": (4, 0), "vae": (1, 1), "video": (6, 0), **shared, "strength": 1.0},
            ),
            *_tail(node, (7, 0), "ltx/video_extension", images=(13, 0)),
            node(13, "LTXPackJoinVideo", {"video": (6, 0), "new_frames": (11, 0), **shared, "batch_size": 1}),
        ],
    )
    distilled = workflow(
        "text_to_video_distilled",
        "LTX-Video text to video with a distilled model: 8 steps at the release's fixed noise levels, one model\n"
        "call per step (no negative prompt, no STG), several times faster than a dev model. The loader names the\n"
        "release: the 2B distilled files of 0.9.6 and 0.9.8 hold the same kind of weights and cannot be told apart\n"
        "(for ltxv-2b-0.9.6-distilled-04-25.safetensors choose release 0.9.6-distilled: 8 steps, stochastic).\n\n"
        + files(
            CHECKPOINT_DISTILLED,
            "\n  or ltxv-13b-0.9.8-distilled.safetensors (13B, the same release name)",
            SAMPLER_RELEASE,
        ),
        [
            *_common(node, T5, PROMPT, distilled_files, 768, 512, 97, 256),
            *_tail(node, (4, 0), "ltx/text_to_video_distilled", steps=0, guidance=0.0),
        ],
    )
    dev_13b = workflow(
        "text_to_video_13b_dev",
        "LTX-Video text to video with the 13B dev model and its official guidance: LTX Guidance on preset release\n"
        "gives the sampler classifier-free guidance (CFG) and spatio-temporal guidance (STG: a pass with blocks\n"
        "perturbed, pushed away from) that change with the noise level, with CFG-zero*, over the release's 30\n"
        "steps. Preset custom uses the node's widgets at every step instead. The 13B weights take 26 GB in bf16:\n"
        "with less GPU memory choose the -fp8 file or set memory = low_vram on the loader.\n\n"
        + files(
            CHECKPOINT_13B_DEV,
            "\n  or ltxv-13b-0.9.7-dev.safetensors, or their -fp8 files (the same settings)",
            SAMPLER_RELEASE,
        ),
        [
            *_common(node, T5, PROMPT, {**full, "model_name": CHECKPOINT_13B_DEV}, 768, 512, 97, 256),
            node(
                5,
                "LTXPackGuidance",
                {
                    "model": (1, 0),
                    "preset": "release",
                    "cfg": 5.0,
                    "stg_scale": 1.0,
                    "stg_mode": "attention_values",
                    "skip_blocks": "28",
                    "rescaling_scale": 1.0,
                    "cfg_star_rescale": True,
                },
            ),
            *_tail(node, (4, 0), "ltx/text_to_video_13b_dev", steps=0, guidance=0.0, guidance_settings=(5, 0)),
        ],
    )
    multiscale = workflow(
        "text_to_video_multiscale",
        "LTX-Video multiscale text to video, Lightricks' recipe for large videos with 0.9.7+ models: the first\n"
        "pass samples at 2/3 of the size (1216×704 → 800×448: each side × 2/3, rounded down to a multiple of 32),\n"
        "LTX Latent Upscale doubles the latents (1600×896), the second pass refines them from part-way down the\n"
        "noise levels, and the decoded frames are resized to the size asked for (Upscale Image, bilinear), as the\n"
        "official pipeline does. Each sampler's multiscale input picks its pass of the release (with steps 0 and\n"
        "guidance 0 its noise levels and guidance; 13B dev: 27 steps with CFG + STG, then 13 with STG only); the\n"
        "second pass goes on with the first pass's random numbers, so its seed is not used. For another size set\n"
        "the empty latent to 2/3 of it and Upscale Image to it. To condition on an image, chain LTX Image Condition\n"
        "after the empty latent and again, with the same image, after LTX Latent Upscale: each pass encodes it at\n"
        "its own size.\n\n"
        + files(
            CHECKPOINT_13B_DEV,
            "\n  (the loader's release names it: 13B 0.9.7 and 0.9.8 files look alike but have their own upscaler);\n"
            "  or ltxv-13b-0.9.8-distilled.safetensors (release 0.9.8-distilled: 7 + 3 steps), or\n"
            "  ltxv-2b-0.9.8-distilled.safetensors (the same), or the 0.9.7 13B files (release 0.9.7-dev / -distilled)",
            SAMPLER_RELEASE,
        )
        + f"\n- models/latent_upscale_models/{SPATIAL_UPSCALER}  – from huggingface.co/Lightricks/LTX-Video (the\n"
        "  spatial upscaler; the 0.9.7 one for 0.9.7 models; models/upscale_models works too)",
        [
            *_common(
                node, T5, PROMPT, {**full, "model_name": CHECKPOINT_13B_DEV, "release": "0.9.8-dev"}, 800, 448, 121, 256
            ),
            node(
                5,
                "LTXPackUpsamplerLoader",
                {"upsampler_name": SPATIAL_UPSCALER, "dtype": "default", "device": "default"},
            ),
            node(
                6,
                "LTXPackLatentUpscale",
                {
                    "samples": (10, 0),
                    "upsampler": (5, 0),
                    "vae": (1, 1),
                    "adain_factor": 1.0,
                    "tone_map_compression": 0.0,
                },
            ),
            node(7, "LTXPackSampler", _sampler((6, 0), 0, 0.0, multiscale="second pass")),
            node(
                8,
                "ImageScale",
                {"image": (11, 0), "upscale_method": "bilinear", "width": 1216, "height": 704, "crop": "disabled"},
            ),
            *_tail(
                node,
                (4, 0),
                "ltx/text_to_video_multiscale",
                0,
                0.0,
                images=(8, 0),
                samples=(7, 0),
                multiscale="first pass",
            ),
        ],
    )
    lora = workflow(
        "text_to_video_lora",
        "LTX-Video text to video with a LoRA: LTX LoRA Loader (pack) between the model loader and the sampler adds\n"
        "the LoRA at a strength (1 as trained, 0 none, negative the opposite way); chain more LoRA loaders for a\n"
        "stack. The sampler applies the stack to the loaded model as it samples: changing or removing LoRAs never\n"
        "reloads the model, and the model loader's own output (or another branch) stays without them. A LoRA must\n"
        "be made for the model's size and release (here 2B 0.9.5), with diffusers/PEFT (lora_A, lora_B) or ComfyUI\n"
        "(lora_down, lora_up, alpha) keys. The one named here is Lightricks' Cakeify effect LoRA for 2B 0.9.5; its\n"
        "prompts start with its trigger word, CAKEIFY.\n\n"
        + files(
            CHECKPOINT_095,
            more=f"\n- models/loras/{LORA}  – from huggingface.co/Lightricks/LTX-Video-Cakeify-LoRA (or any LoRA\n"
            "  for the loaded model: choose it in lora_name)",
        ),
        [
            *_common(
                node,
                T5,
                "CAKEIFY a person using a knife to cut a cake shaped like a red fox, on a wooden table in warm light.",
                full_095,
                768,
                512,
                97,
                256,
            ),
            node(5, "LTXPackLoraLoader", {"model": (1, 0), "lora_name": LORA, "strength": 1.0}),
            *_tail(node, (4, 0), "ltx/text_to_video_lora", model=(5, 0)),
        ],
    )
    low_vram = workflow(
        "low_vram",
        f"LTX-Video text to video on small GPUs: GGUF transformer and fp8 T5 streamed block by block, chunked VAE "
        f"decode.\n\n"
        f"{LOW_VRAM_FILES}",
        [*_common(node, T5_FP8, PROMPT, low, 768, 512, 97), *_tail(node, (4, 0), "ltx/low_vram")],
    )
    return [t2v, i2v, keyframes, low_vram, extension, distilled, dev_13b, multiscale, lora]
