"""The generator's options: their definitions (`parse_args`), and the sampling options as core Settings
fields (`sampling_overrides`), each left out meaning the release's official value."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..hub import DEFAULT_REPO
from ..loading.release import AUTO, RELEASE_CHOICES
from ..sampling.guidance import STG_MODE_ALIASES, STG_MODES

DEFAULT_CHECKPOINT = f"{DEFAULT_REPO}/ltx-video-2b-v0.9.1.safetensors"
DEFAULT_TEXT_ENCODER = f"{DEFAULT_REPO}/text_encoder"  # T5 v1.1 XXL as diffusers saves it; tokenizer/ beside
DEFAULT_TOKENIZER = f"{DEFAULT_REPO}/tokenizer"
DEFAULT_OVERLAP = 17  # extend_video's default: two latent frames shared with the old video
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}
HUB_FORMS = "owner/name/path, hf://owner/name@revision/path or a huggingface.co address"
BLOCKS_FORM = "block numbers from 0, separated by commas, e.g. --stg-blocks 19 or --stg-blocks 19,20"

# Settings field → (the option that sets it, its attribute in the parsed arguments); left out, the
# release's value is used
SAMPLING_FLAGS: dict[str, tuple[str, str]] = {
    "steps": ("--steps", "steps"),
    "guidance_scale": ("--guidance", "guidance"),
    "stg_scale": ("--stg-scale", "stg_scale"),
    "stg_mode": ("--stg-mode", "stg_mode"),
    "stg_blocks": ("--stg-blocks", "stg_blocks"),
    "rescaling_scale": ("--rescaling", "rescaling"),
    "cfg_star_rescale": ("--cfg-star", "cfg_star"),
    "stochastic_sampling": ("--stochastic", "stochastic"),
}


class UsageError(ValueError):
    """A mistake on the command line; the message names the option and what to do."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ltx_core.generate",
        description="Generate a video with LTX-Video. Run from the pack's folder. With no model options the "
        f"default release is downloaded from the Hugging Face Hub ({DEFAULT_REPO}: 2B 0.9.1 and T5 v1.1 XXL). "
        "Sampling runs with the settings of the release's official config unless an option says otherwise; the "
        "generator prints the settings it uses and where each comes from.",
        epilog=f"Model options take a local file or folder, or a Hugging Face Hub reference: {HUB_FORMS}. "
        "Exit status: 0 the video was written; 2 a mistake in the options or model files, or a failed download "
        "(said before loading where it can be known then); 1 generating or writing failed.",
    )
    required = p.add_argument_group("required")
    required.add_argument("--prompt", required=True, help="what the video shows")
    _model_options(p.add_argument_group("models (each: a local path or a Hub reference)"))
    _video_options(p.add_argument_group("video"))
    sampling = p.add_argument_group(
        "sampling", "Each setting left out is the release's, from Lightricks' config for it (ltx_core/defaults.py)."
    )
    _guidance_options(sampling)
    _run_options(sampling)
    output = p.add_argument_group("output")
    output.add_argument(
        "--output",
        type=Path,
        default=Path("ltx-video.mp4"),
        help="the .mp4 file to write, in an existing folder (default: %(default)s)",
    )
    output.add_argument(
        "--crf", type=int, default=19, help="H.264 quality 0–51, lower is better (default: %(default)s)"
    )
    output.add_argument("--quiet", action="store_true", help="print only errors (default: show each stage)")
    return p.parse_args(argv)


def _model_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help="LTX-Video checkpoint, transformer-only "
        "file or GGUF (then with --vae), or diffusers folder (default: %(default)s)",
    )
    group.add_argument("--vae", help="VAE, for a checkpoint without one (default: the checkpoint's own)")
    group.add_argument(
        "--text-encoder", default=DEFAULT_TEXT_ENCODER, help="T5 v1.1 XXL encoder file or folder (default: %(default)s)"
    )
    group.add_argument(
        "--release",
        choices=RELEASE_CHOICES,
        default=AUTO,
        metavar="RELEASE",
        help="the LTX-Video release of --checkpoint, which picks its settings (steps, guidance, schedule, prompt "
        "length, …): auto reads it off the files (embedded config, model width, the VAE's layout) and asks when "
        "they cannot tell, as for GGUF and diffusion-model files of 0.9.5 and later; or one of "
        f"{', '.join(RELEASE_CHOICES[1:])} (default: %(default)s)",
    )
    group.add_argument(
        "--tokenizer",
        help="T5 tokenizer: spiece.model, tokenizer.json or a folder (default: "
        f"the one beside the text encoder, else {DEFAULT_TOKENIZER})",
    )
    group.add_argument(
        "--upsampler",
        help="spatial latent upsampler for --multiscale: a released file such as ltxv-spatial-upscaler-0.9.8"
        ".safetensors or a diffusers folder (default: the release's, from "
        f"{DEFAULT_REPO}: ltxv-spatial-upscaler-0.9.7.safetensors for 0.9.7, -0.9.8 for 0.9.8)",
    )
    group.add_argument(
        "--lora",
        action="append",
        metavar="FILE[:STRENGTH]",
        help="a LoRA for the transformer, made for --checkpoint's model (diffusers/PEFT or ComfyUI keys), at "
        "STRENGTH (1 as trained, 0 none, negative the opposite way); repeatable: the LoRAs stack (default: "
        "none; STRENGTH 1)",
    )


def _video_options(group: argparse._ArgumentGroup) -> None:
    from ..pipeline import DEFAULT_NEGATIVE_PROMPT

    group.add_argument(
        "--negative-prompt", default=DEFAULT_NEGATIVE_PROMPT, help="what to avoid (default: %(default)r)"
    )
    group.add_argument("--image", type=Path, help="animate this picture: it becomes the first frame (default: none)")
    group.add_argument(
        "--image-strength", type=float, help="0–1: how exactly the first frame keeps the image (default: 1)"
    )
    group.add_argument(
        "--keyframe",
        action="append",
        metavar="PATH[@FRAME][:STRENGTH]",
        help="keep this image or short clip (1 + 8·k frames) from FRAME on (negative counts from the end: -1 is "
        "the last frame) with STRENGTH 0–1; repeatable, combines with --image (default: none; FRAME 0, STRENGTH 1)",
    )
    group.add_argument("--video", type=Path, help="re-generate this video (its first --frames frames) (default: none)")
    group.add_argument(
        "--strength",
        type=float,
        help="above 0 to 1: how much of --video is re-generated; lower keeps more of it (default: 0.6)",
    )
    group.add_argument(
        "--extend",
        type=Path,
        metavar="VIDEO",
        help="continue this video by --frames new frames minus the overlap; the output is the joined video "
        "(default: none)",
    )
    group.add_argument(
        "--extend-direction",
        choices=("forward", "backward"),
        help="forward: after its last frame; backward: before its first (default: forward)",
    )
    group.add_argument(
        "--extend-overlap",
        type=int,
        help=f"frames shared with the old video, 1 + 8·k (default: {DEFAULT_OVERLAP}, or fewer when --frames or the "
        "video is shorter)",
    )
    group.add_argument(
        "--extend-strength", type=float, help="0–1: how exactly the new video keeps the overlap (default: 1)"
    )
    group.add_argument("--width", type=int, default=768, help="pixels, a multiple of 32 (default: %(default)s)")
    group.add_argument("--height", type=int, default=512, help="pixels, a multiple of 32 (default: %(default)s)")
    group.add_argument("--frames", type=int, default=121, help="1 + 8·k frames (default: %(default)s)")
    group.add_argument(
        "--fps", type=float, help="frame rate, above 0 (default: that of --video or --extend, else the release's, 25)"
    )


def _guidance_options(group: argparse._ArgumentGroup) -> None:
    """Multi-scale, steps and guidance: each left out takes the release's value."""
    group.add_argument(
        "--multiscale",
        action="store_true",
        help="the release's two passes, as Lightricks' multi-scale pipeline (0.9.7 and later): sample at 2/3 of "
        "the size, double the latents with the spatial upsampler (--upsampler), refine them with the release's "
        "second pass, decode and resize to --width × --height (default: one pass at the size)",
    )
    group.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="sampling steps, at least 1 (default: the release's: 40; 30 for 13B dev; 8 fixed noise levels for "
        "0.9.7+ distilled, where other counts follow the linear-quadratic schedule those lie on)",
    )
    group.add_argument(
        "--guidance",
        type=float,
        metavar="SCALE",
        help="classifier-free guidance (CFG) scale, 0 or more; 1 turns CFG off, STG stays as --stg-scale says "
        "(default: the release's: 3; per noise level up to 8 for 13B dev; 1 for distilled)",
    )
    group.add_argument(
        "--stg-scale",
        type=float,
        metavar="SCALE",
        help="spatio-temporal guidance (STG) scale, 0 or more; 0 turns STG off (default: the release's: 1; per "
        "noise level for 13B dev; 0 for distilled)",
    )
    modes = ", ".join(f"{mode} ({short})" for short, mode in STG_MODE_ALIASES.items())
    group.add_argument(
        "--stg-mode",
        choices=(*STG_MODES, *STG_MODE_ALIASES),
        metavar="MODE",
        help=f"what STG does to the blocks of --stg-blocks: {modes} (default: the release's: {STG_MODES[0]})",
    )
    group.add_argument(
        "--stg-blocks",
        metavar="BLOCKS",
        help="the transformer blocks STG perturbs, from 0, comma-separated, e.g. 19,20 (default: the release's: "
        "19 for 2B; per noise level for 13B dev)",
    )
    group.add_argument(
        "--rescaling",
        type=float,
        metavar="SCALE",
        help="STG's rescaling toward the spread of the prompt's own prediction, 0–1; 1 turns it off (default: the "
        "release's: 0.7 for 2B dev, 1 or 0.5 per noise level for 13B dev)",
    )
    group.add_argument(
        "--cfg-star",
        action=argparse.BooleanOptionalAction,
        help="CFG-zero*: scale the negative prompt's prediction by its projection onto the prompt's (default: the "
        "release's: on for 13B dev)",
    )
    group.add_argument(
        "--stochastic",
        action=argparse.BooleanOptionalAction,
        help="stochastic sampling: each step re-noises the clean estimate instead of an Euler step (default: the "
        "release's: on for 0.9.6-distilled)",
    )


def _run_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--seed", type=int, default=0, help="the same seed gives the same video (default: 0)")
    group.add_argument(
        "--dtype",
        choices=[*DTYPES, "fp8_matmul"],
        default="bf16",
        help="transformer weights: fp8 stores them in fp8 and computes in bf16; fp8_matmul also multiplies in fp8 "
        "on Ada / Hopper GPUs (fastest, output ~4%% from bf16) (default: %(default)s)",
    )
    group.add_argument("--device", help="cuda, cuda:N, cpu or mps (default: cuda if available, else cpu)")
    group.add_argument(
        "--memory",
        choices=("default", "low_vram"),
        default="default",
        help="default: each model on the GPU whole while used; low_vram: T5 and transformer blocks streamed "
        "from CPU memory, tiled VAE decode (768×512×121 in under 8 GB of GPU memory) (default: %(default)s)",
    )
    group.add_argument(
        "--cfg-parallel",
        type=int,
        metavar="N",
        help="under torchrun (one process per GPU): each step's guidance branches (negative prompt, prompt, STG) "
        "shared by N groups of processes (default: 2 when the number of processes is even, else 1)",
    )
    group.add_argument(
        "--ulysses",
        type=int,
        metavar="N",
        help="under torchrun: each branch's video tokens split over N processes, which exchange them around "
        "self-attention (Ulysses); N must divide the model's 32 heads (default: processes / --cfg-parallel)",
    )


def parse_blocks(text: str) -> tuple[int, ...]:
    """--stg-blocks "19,20" → (19, 20); a UsageError for anything but block numbers from 0."""
    parts = [part.strip() for part in text.split(",")]
    for part in parts:
        if not part.isdigit():
            what = "an empty entry" if not part else repr(part)
            raise UsageError(f"--stg-blocks {text}: {what} is not a block number; give {BLOCKS_FORM}")
    return tuple(int(part) for part in parts)


def sampling_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields the sampling options set; the options left out are not among them."""
    overrides = {}
    for name, (_, attribute) in SAMPLING_FLAGS.items():
        value = getattr(args, attribute)
        if value is not None:
            overrides[name] = parse_blocks(value) if name == "stg_blocks" else value
    return overrides


def given_as(args: argparse.Namespace) -> dict[str, str]:
    """Settings field → the option that set it, as given ("--guidance 5", "--no-cfg-star")."""
    words = {}
    for name, (flag, attribute) in SAMPLING_FLAGS.items():
        value = getattr(args, attribute)
        if isinstance(value, bool):
            words[name] = flag if value else flag.replace("--", "--no-", 1)
        elif value is not None:
            words[name] = f"{flag} {format(value, 'g') if isinstance(value, float) else value}"
    return words
