"""The shared workflows, described once; `build.py` writes them in ComfyUI's UI and API formats."""

from __future__ import annotations

CHECKPOINT = "ltx-video-2b-v0.9.1.safetensors"
GGUF = "ltx-video-2b-v0.9.1-Q8_0.gguf"
VAE = "ltx-video-2b-v0.9.1-vae.safetensors"
T5 = "t5xxl_fp16.safetensors"
T5_FP8 = "t5xxl_fp8_e4m3fn.safetensors"
FROM_MODEL = "(from the model file)"
PROMPT = (
    "A red fox trots across a misty forest clearing at dawn, golden light falling through the trees and soft "
    "shadows moving over the wet grass. The camera pans slowly to follow the fox, which stops and looks back."
)
NEGATIVE = "worst quality, inconsistent motion, blurry, jittery, distorted"

FILES = f"""Files (put them in ComfyUI's models folders, then press R in the editor to refresh the lists):
- models/checkpoints/{CHECKPOINT}  – from huggingface.co/Lightricks/LTX-Video (transformer + VAE in one file)
- models/text_encoders/{T5}  – from huggingface.co/comfyanonymous/flux_text_encoders (T5-XXL; ComfyUI's bundled
  T5 tokenizer is used when no spiece.model / tokenizer.json lies beside it)
Sizes: width and height multiples of 32, length 1 + 8·k frames. Guidance 3, 30–40 steps as released."""

LOW_VRAM_FILES = f"""Files for low VRAM (under 8 GB at 768×512×121):
- models/diffusion_models/{GGUF}  – a GGUF transformer, e.g. from huggingface.co/city96/LTX-Video-gguf
  (Q8_0 is close to bf16; Q4/Q5 files are smaller)
- models/vae/{VAE}  – the LTX-Video VAE alone (or pick the full checkpoint from models/checkpoints here:
  only its VAE part is read)
- models/text_encoders/{T5_FP8}  – T5-XXL in fp8, from huggingface.co/comfyanonymous/flux_text_encoders
Both loaders use memory = low_vram: the transformer's and T5's blocks stay in CPU memory and visit the GPU
one at a time (copied while the previous block computes), and the VAE decodes in exact temporal chunks."""


def _common(node, t5: str, prompt: str, model: dict, width: int, height: int, length: int):
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
            {"text_encoder": (2, 0), "prompt": prompt, "negative_prompt": NEGATIVE, "max_tokens": 128},
        ),
        node(4, "LTXPackEmptyLatentVideo", {"width": width, "height": height, "length": length, "batch_size": 1}),
    ]


def _tail(node, latent: tuple, prefix: str, steps: int = 30) -> list:
    return [
        node(
            10,
            "LTXPackSampler",
            {
                "model": (1, 0),
                "positive": (3, 0),
                "negative": (3, 1),
                "latent": latent,
                "seed": 42,
                "steps": steps,
                "guidance": 3.0,
                "schedule": "auto",
                "frame_rate": 25.0,
                "denoise": 1.0,
                "memory": "from loader",
            },
        ),
        node(
            11,
            "LTXPackVAEDecode",
            {
                "samples": (10, 0),
                "vae": (1, 1),
                "decode_timestep": 0.05,
                "decode_noise_scale": 0.025,
                "seed": 42,
                "tiling": "auto",
            },
        ),
        node(12, "LTXPackSaveVideo", {"images": (11, 0), "frame_rate": 25.0, "filename_prefix": prefix, "crf": 19}),
    ]


def make(node, workflow) -> list:
    """The workflows: `node(id, type, values)` and `workflow(name, note, nodes)` build them."""
    full = {
        "model_name": CHECKPOINT,
        "vae_name": FROM_MODEL,
        "weight_dtype": "default",
        "device": "default",
        "memory": "default",
    }
    low = {**full, "model_name": GGUF, "vae_name": VAE, "memory": "low_vram"}

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
        f"keyframes (frames that are multiples of 8).\n\n{FILES}",
        [
            *_common(node, T5, "A smooth camera move from the first view to the second.", full, 768, 512, 97),
            node(5, "LoadImage", {"image": "first_frame.png"}),
            node(7, "LoadImage", {"image": "last_frame.png"}),
            condition(6, (4, 0), 5, 0),
            condition(8, (6, 0), 7, -1),
            *_tail(node, (8, 0), "ltx/keyframes"),
        ],
    )
    low_vram = workflow(
        "low_vram",
        f"LTX-Video text to video on small GPUs: GGUF transformer and fp8 T5 streamed block by block, chunked VAE "
        f"decode.\n\n"
        f"{LOW_VRAM_FILES}",
        [*_common(node, T5_FP8, PROMPT, low, 768, 512, 97), *_tail(node, (4, 0), "ltx/low_vram")],
    )
    return [t2v, i2v, keyframes, low_vram]
