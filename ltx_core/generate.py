"""Command-line generator: `python -m ltx_core.generate --prompt "…" --checkpoint … --text-encoder …`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from .loading.errors import CheckpointError

WHAT_TO_DOWNLOAD = """\
LTX-Video needs two files (or folders) that this command cannot download for you:

  --checkpoint    the LTX-Video model, e.g. ltx-video-2b-v0.9.1.safetensors
                  (huggingface.co/Lightricks/LTX-Video). Also accepted: a ComfyUI diffusion_models
                  file or a GGUF transformer together with --vae, or a diffusers LTX-Video folder.
  --text-encoder  the T5 v1.1 XXL encoder: ComfyUI's t5xxl_fp16.safetensors (or fp8 / GGUF variants)
                  with --tokenizer pointing at a folder holding spiece.model or tokenizer.json, or
                  a transformers / diffusers folder that contains its tokenizer.

In ComfyUI these live in models/checkpoints (or models/diffusion_models), models/vae and
models/text_encoders.
"""

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from .pipeline import DEFAULT_NEGATIVE_PROMPT

    p = argparse.ArgumentParser(prog="python -m ltx_core.generate", description="Generate a video with LTX-Video.")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default=DEFAULT_NEGATIVE_PROMPT)
    p.add_argument("--checkpoint", type=Path, help="LTX-Video checkpoint file or diffusers folder")
    p.add_argument("--text-encoder", type=Path, help="T5 v1.1 XXL encoder file or folder")
    p.add_argument("--vae", type=Path, help="VAE file, when the checkpoint holds only the transformer")
    p.add_argument("--tokenizer", type=Path, help="folder or file with spiece.model or tokenizer.json")
    p.add_argument("--image", type=Path, help="animate this image (image-to-video)")
    p.add_argument("--image-strength", type=float, default=1.0)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--frames", type=int, default=121, help="1 + 8·k frames")
    p.add_argument("--fps", type=float, help="frame rate (default: the release's, 25)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the release's)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the release's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--dtype",
        choices=[*DTYPES, "fp8_matmul"],
        default="bf16",
        help="transformer weights: fp8 stores them in fp8 and computes in bf16; fp8_matmul also multiplies in fp8 "
        "on Ada / Hopper GPUs (fastest, output ~4%% from bf16)",
    )
    p.add_argument("--device", help="cuda, cpu, … (default: cuda if available)")
    p.add_argument(
        "--memory",
        choices=("default", "low_vram"),
        default="default",
        help="default: each model on the GPU whole while used; low_vram: T5 and transformer blocks streamed "
        "from CPU memory, tiled VAE decode (768×512×121 in under 8 GB of GPU memory)",
    )
    p.add_argument("--crf", type=int, default=19, help="H.264 quality of the output (lower is better)")
    p.add_argument("--output", type=Path, default=Path("ltx-video.mp4"))
    return p.parse_args(argv)


class ProgressBar:
    """One updating line on stderr: step, bar, seconds per step."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self, step: int, total: int, denoised: torch.Tensor) -> None:
        done = step + 1
        per_step = (time.perf_counter() - self.start) / done
        bar = "#" * (30 * done // total)
        print(f"\rsampling {done}/{total} [{bar:<30}] {per_step:.2f} s/step", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)


# The core's advice (ltx_core.loading.errors.API_ADVICE) in this command's words: its flags.
CLI_ADVICE = {
    "transformer": "pass it as --checkpoint",
    "vae": "pass it as --vae",
    "text_encoder": "pass it as --text-encoder",
    "missing_tokenizer": "put T5's spiece.model or tokenizer.json (from google/t5-v1_1-xxl) next to it, "
    "or pass the file or its folder as --tokenizer",
    "bad_tokenizer": "pass T5's own spiece.model or tokenizer.json (from google/t5-v1_1-xxl) as --tokenizer",
}


def _in_flags(error: CheckpointError, args: argparse.Namespace) -> str:
    """The error's message with its advice naming this command's flags."""
    if args.vae is None and error.advice == "transformer" and error.path == args.checkpoint:
        return f"{args.checkpoint.name} holds only the transformer, no VAE; pass a VAE file as --vae."
    return str(error.reworded(CLI_ADVICE))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    required = {"--checkpoint": args.checkpoint, "--text-encoder": args.text_encoder}
    missing = [flag for flag, path in required.items() if path is None]
    missing += [str(p) for p in (args.checkpoint, args.text_encoder) if p is not None and not p.exists()]
    if missing:
        print(f"missing: {', '.join(missing)}\n\n{WHAT_TO_DOWNLOAD}", file=sys.stderr)
        return 2

    from .defaults import defaults_for
    from .media import read_image, write_mp4
    from .pipeline import Models, Settings, image_to_video, text_to_video

    try:
        models = Models.load(
            args.checkpoint,
            args.text_encoder,
            vae=args.vae,
            tokenizer=args.tokenizer,
            dtype=DTYPES.get(args.dtype, torch.bfloat16),
            fp8_matmul=args.dtype == "fp8_matmul",
        )
        settings = Settings(
            width=args.width,
            height=args.height,
            frames=args.frames,
            frame_rate=args.fps,
            steps=args.steps,
            guidance_scale=args.guidance,
            seed=args.seed,
            device=args.device,
            memory=args.memory,
        )
        if args.image is not None:
            image = read_image(args.image)
            frames = image_to_video(
                models,
                image,
                args.prompt,
                args.negative_prompt,
                settings,
                strength=args.image_strength,
                on_step=ProgressBar(),
            )
        else:
            frames = text_to_video(models, args.prompt, args.negative_prompt, settings, on_step=ProgressBar())
    except CheckpointError as error:  # a file that cannot be used: its advice in flags
        print(f"error: {_in_flags(error, args)}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as error:  # bad settings come with their explanation
        print(f"error: {error}", file=sys.stderr)
        return 1
    fps = args.fps or defaults_for(models.release).frame_rate
    path = write_mp4(args.output, frames[0], fps, crf=args.crf, metadata={"comment": args.prompt})
    print(f"wrote {path} ({frames.shape[1]} frames, {frames.shape[3]}×{frames.shape[2]}, {fps:g} fps)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
