"""Command-line generator: `python -m ltx_core.generate --prompt "…"` → an mp4.

With no model options it downloads the default release from the Hugging Face Hub (DEFAULT_CHECKPOINT,
DEFAULT_TEXT_ENCODER, DEFAULT_TOKENIZER); each model option takes a local file or folder or a Hub
reference (see hub.py). The order is chosen so that a mistake costs seconds, not a download or a
load: every option is checked (preflight.py), local model files are checked by their headers, every
Hub reference is looked up, then downloads, loading, sampling and writing follow, each announced.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .hub import DEFAULT_REPO, TOKENIZER_FILES, HubError, HubRef, Plan, check_space, describe, fetch, parse_ref, plan
from .loading.errors import CheckpointError
from .loading.release import AUTO, RELEASE_CHOICES, Release
from .preflight import (
    DEFAULT_OVERLAP,
    MODEL_CHECKS,
    Inputs,
    UsageError,
    check_device,
    check_exists,
    check_output,
    check_release,
    check_settings,
    or_default,
    read_inputs,
)

if TYPE_CHECKING:
    from .pipeline import Keyframe, Models, Settings

log = logging.getLogger("ltx_core.generate")  # not __name__: that is "__main__" under `python -m`

DEFAULT_CHECKPOINT = f"{DEFAULT_REPO}/ltx-video-2b-v0.9.1.safetensors"
DEFAULT_TEXT_ENCODER = f"{DEFAULT_REPO}/text_encoder"  # T5 v1.1 XXL as diffusers saves it; tokenizer/ beside
DEFAULT_TOKENIZER = f"{DEFAULT_REPO}/tokenizer"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}

# model option → (flag, what it takes: a description for errors)
MODEL_OPTIONS: dict[str, tuple[str, str]] = {
    "checkpoint": (
        "--checkpoint",
        "an LTX-Video checkpoint (e.g. ltx-video-2b-v0.9.1.safetensors) as a local path or a Hugging Face Hub "
        f"reference such as {DEFAULT_CHECKPOINT} (the default)",
    ),
    "vae": (
        "--vae",
        "an LTX-Video VAE file, or a full checkpoint of the same release (only its VAE is read), as a local path "
        "or a Hub reference; or leave --vae out to use the checkpoint's own",
    ),
    "text_encoder": (
        "--text-encoder",
        "a T5 v1.1 XXL encoder file (e.g. t5xxl_fp16.safetensors) or folder, as a local path or a Hub reference "
        f"such as {DEFAULT_TEXT_ENCODER} (the default)",
    ),
    "tokenizer": (
        "--tokenizer",
        "T5's spiece.model or tokenizer.json or a folder holding one, as a local path or a Hub reference such "
        f"as {DEFAULT_TOKENIZER}",
    ),
}
HUB_FORMS = "owner/name/path, hf://owner/name@revision/path or a huggingface.co address"

# The core's advice (ltx_core.loading.errors.API_ADVICE) in this command's words: its flags.
CLI_ADVICE = {
    "transformer": "pass it as --checkpoint",
    "vae": "pass it as --vae",
    "text_encoder": "pass it as --text-encoder",
    "missing_tokenizer": f"put T5's spiece.model or tokenizer.json next to it, or pass one as --tokenizer "
    f"(e.g. --tokenizer {DEFAULT_TOKENIZER})",
    "bad_tokenizer": "pass T5's own spiece.model or tokenizer.json as --tokenizer "
    f"(e.g. --tokenizer {DEFAULT_TOKENIZER})",
    "release": "name the release with --release, e.g. --release {example}",
    "matching_vae": "pass the VAE of the transformer's release as --vae (a VAE file, or that release's full "
    "checkpoint)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from .pipeline import DEFAULT_NEGATIVE_PROMPT

    p = argparse.ArgumentParser(
        prog="python -m ltx_core.generate",
        description="Generate a video with LTX-Video. Run from the pack's folder. With no model options the "
        f"default release is downloaded from the Hugging Face Hub ({DEFAULT_REPO}: 2B 0.9.1 and T5 v1.1 XXL).",
        epilog=f"Model options take a local file or folder, or a Hugging Face Hub reference: {HUB_FORMS}. "
        "Exit status: 0 the video was written; 2 a mistake in the options or model files, or a failed download "
        "(said before loading where it can be known then); 1 generating or writing failed.",
    )
    required = p.add_argument_group("required")
    required.add_argument("--prompt", required=True, help="what the video shows")
    models = p.add_argument_group("models (each: a local path or a Hub reference)")
    models.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help="LTX-Video checkpoint, transformer-only "
        "file or GGUF (then with --vae), or diffusers folder (default: %(default)s)",
    )
    models.add_argument("--vae", help="VAE, for a checkpoint without one (default: the checkpoint's own)")
    models.add_argument(
        "--text-encoder", default=DEFAULT_TEXT_ENCODER, help="T5 v1.1 XXL encoder file or folder (default: %(default)s)"
    )
    models.add_argument(
        "--release",
        choices=RELEASE_CHOICES,
        default=AUTO,
        metavar="RELEASE",
        help="the LTX-Video release of --checkpoint, which picks its settings (steps, guidance, schedule, prompt "
        "length, …): auto reads it off the files (embedded config, model width, the VAE's layout) and asks when "
        "they cannot tell, as for GGUF and diffusion-model files of 0.9.5 and later; or one of "
        f"{', '.join(RELEASE_CHOICES[1:])} (default: %(default)s)",
    )
    models.add_argument(
        "--tokenizer",
        help="T5 tokenizer: spiece.model, tokenizer.json or a folder (default: "
        f"the one beside the text encoder, else {DEFAULT_TOKENIZER})",
    )
    video = p.add_argument_group("video")
    video.add_argument(
        "--negative-prompt", default=DEFAULT_NEGATIVE_PROMPT, help="what to avoid (default: %(default)r)"
    )
    video.add_argument("--image", type=Path, help="animate this picture: it becomes the first frame (default: none)")
    video.add_argument(
        "--image-strength", type=float, help="0–1: how exactly the first frame keeps the image (default: 1)"
    )
    video.add_argument(
        "--keyframe",
        action="append",
        metavar="PATH[@FRAME][:STRENGTH]",
        help="keep this image or short clip (1 + 8·k frames) from FRAME on (negative counts from the end: -1 is "
        "the last frame) with STRENGTH 0–1; repeatable, combines with --image (default: none; FRAME 0, STRENGTH 1)",
    )
    video.add_argument("--video", type=Path, help="re-generate this video (its first --frames frames) (default: none)")
    video.add_argument(
        "--strength",
        type=float,
        help="above 0 to 1: how much of --video is re-generated; lower keeps more of it (default: 0.6)",
    )
    video.add_argument(
        "--extend",
        type=Path,
        metavar="VIDEO",
        help="continue this video by --frames new frames minus the overlap; the output is the joined video "
        "(default: none)",
    )
    video.add_argument(
        "--extend-direction",
        choices=("forward", "backward"),
        help="forward: after its last frame; backward: before its first (default: forward)",
    )
    video.add_argument(
        "--extend-overlap",
        type=int,
        help=f"frames shared with the old video, 1 + 8·k (default: {DEFAULT_OVERLAP}, or fewer when --frames or the "
        "video is shorter)",
    )
    video.add_argument(
        "--extend-strength", type=float, help="0–1: how exactly the new video keeps the overlap (default: 1)"
    )
    video.add_argument("--width", type=int, default=768, help="pixels, a multiple of 32 (default: %(default)s)")
    video.add_argument("--height", type=int, default=512, help="pixels, a multiple of 32 (default: %(default)s)")
    video.add_argument("--frames", type=int, default=121, help="1 + 8·k frames (default: %(default)s)")
    video.add_argument(
        "--fps", type=float, help="frame rate, above 0 (default: that of --video or --extend, else the release's, 25)"
    )
    sampling = p.add_argument_group("sampling")
    sampling.add_argument(
        "--steps", type=int, help="sampling steps, at least 1 (default: the release's: 40; 30 for 13B dev, 8 distilled)"
    )
    sampling.add_argument(
        "--guidance",
        type=float,
        help="classifier-free guidance scale, 0 or more; 1 turns it off (default: the release's: 3; 5 for 13B dev, "
        "1 for distilled)",
    )
    sampling.add_argument("--seed", type=int, default=0, help="the same seed gives the same video (default: 0)")
    sampling.add_argument(
        "--dtype",
        choices=[*DTYPES, "fp8_matmul"],
        default="bf16",
        help="transformer weights: fp8 stores them in fp8 and computes in bf16; fp8_matmul also multiplies in fp8 "
        "on Ada / Hopper GPUs (fastest, output ~4%% from bf16) (default: %(default)s)",
    )
    sampling.add_argument("--device", help="cuda, cuda:N, cpu or mps (default: cuda if available, else cpu)")
    sampling.add_argument(
        "--memory",
        choices=("default", "low_vram"),
        default="default",
        help="default: each model on the GPU whole while used; low_vram: T5 and transformer blocks streamed "
        "from CPU memory, tiled VAE decode (768×512×121 in under 8 GB of GPU memory) (default: %(default)s)",
    )
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


@contextmanager
def console(quiet: bool) -> Iterator[None]:
    """Show the core's log on stderr, each line stamped with the seconds since the start, for the
    duration of the block; with `quiet` only errors and warnings (and no download bars)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    start = time.time()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Stamped(start))
    package = logging.getLogger("ltx_core")
    saved = package.level, package.propagate, are_progress_bars_disabled()
    package.addHandler(handler)
    package.setLevel(logging.WARNING if quiet else logging.INFO)
    package.propagate = False
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.level, package.propagate = saved[0], saved[1]
        if quiet and not saved[2]:
            enable_progress_bars()


class _Stamped(logging.Formatter):
    """`[  12.3 s] message`: the time since the command started, so each stage's duration shows."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self.start = start

    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.created - self.start:6.1f} s] {record.getMessage()}"


class ProgressBar:
    """Sampling progress: one updating line on a terminal (a line per step otherwise) with the time per
    step. The clock starts at the transformer's first call (`start`), after the prompt is encoded; the
    rate leaves out the first step, which on a GPU includes compiling the fused kernels."""

    def __init__(self, frames: int) -> None:
        self.started: float | None = None
        self.first_done = 0.0
        self.frames = frames
        self.tty = sys.stderr.isatty()

    def start(self, *_: object) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def __call__(self, step: int, total: int, denoised: torch.Tensor) -> None:
        done, now = step + 1, time.perf_counter()
        if done == 1:
            self.first_done = now
            rate = f"{now - (self.started or now):.2f} s for the first step"
        else:
            rate = f"{(now - self.first_done) / (done - 1):.2f} s/step"
        line = f"sampling {done}/{total} [{'#' * (30 * done // total):<30}] {rate}"
        if self.tty and log.isEnabledFor(logging.INFO):  # one line, rewritten in place
            print(f"\r{line:<80}", end="\n" if done == total else "", file=sys.stderr, flush=True)
        else:
            log.info(line)
        if done == total:
            log.info("decoding %d frames …", self.frames)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with console(args.quiet):
        try:
            return generate(args)
        except UsageError as error:
            log.error("error: %s", error)
            return 2
        except KeyboardInterrupt:
            log.error("interrupted")
            return 130


def generate(args: argparse.Namespace) -> int:
    """Check, fetch, load, generate and write, announcing each stage."""
    check_settings(args)
    device = check_device(args.device)
    if device.type == "cpu" and args.device is None:
        log.warning("no GPU found: generating on the CPU, which is slow at full size (try --width 512 --height 320)")
    check_output(args.output)
    inputs = read_inputs(args)
    paths = fetch_models(args)
    release = check_release(paths["checkpoint"], paths.get("vae"), args.release, CLI_ADVICE)
    log.info("%s", release.describe())
    models = load_models(paths, args, release)
    try:
        frames, fps = sample_video(models, args, device, inputs)
    except torch.OutOfMemoryError as error:
        advice = "Try --memory low_vram, or a smaller --width, --height or --frames"
        log.error("error: out of memory on %s (%s). %s", device, str(error).splitlines()[0], advice)
        return 1
    return write(frames[0], fps, args)


def load_models(paths: dict[str, Path], args: argparse.Namespace, release: Release) -> Models:
    from .pipeline import Models

    log.info("loading the models …")
    try:
        return Models.load(
            paths["checkpoint"],
            paths["text_encoder"],
            vae=paths.get("vae"),
            tokenizer=paths.get("tokenizer"),
            dtype=DTYPES.get(args.dtype, torch.bfloat16),
            fp8_matmul=args.dtype == "fp8_matmul",
            release=release,
        )
    except CheckpointError as error:  # found only while reading the weights: a damaged or partial file
        raise UsageError(in_flags(error, paths)) from error


def sample_video(
    models: Models, args: argparse.Namespace, device: torch.device, inputs: Inputs
) -> tuple[torch.Tensor, float]:
    """Frames (1, T, H, W, 3) in [0, 1] and their frame rate; the release's defaults fill the gaps."""
    from .pipeline import Settings, extend_video, text_to_video, video_to_video

    defaults = models.defaults
    steps, fps = args.steps or defaults.steps, args.fps or inputs.fps or defaults.frame_rate
    settings = Settings(
        width=args.width,
        height=args.height,
        frames=args.frames,
        frame_rate=fps,
        steps=steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        device=device,
        memory=args.memory,
    )
    size = f"{args.width}×{args.height}, {args.frames} frames, {steps} steps"
    log.info("LTX-Video %s on %s: %s", models.release, device, size)
    log.info("encoding the prompt%s …", f" and {inputs.what}" if inputs.what else "")
    bar = ProgressBar(args.frames)
    hook = models.transformer.register_forward_pre_hook(bar.start)  # sampling starts at its first call
    prompts = (args.prompt, args.negative_prompt)
    try:
        if inputs.extend is not None:
            direction, strength = args.extend_direction or "forward", or_default(args.extend_strength, 1.0)
            extended = extend_video(
                models,
                inputs.extend,
                *prompts,
                settings,
                direction=direction,
                overlap=inputs.overlap,
                strength=strength,
                on_step=bar,
            )
            return extended, fps
        if inputs.video is not None:
            return video_to_video(
                models, inputs.video, *prompts, settings, denoise=or_default(args.strength, 0.6), on_step=bar
            ), fps
        if inputs.keyframes:
            return _keyframes(models, inputs.keyframes, prompts, settings, bar), fps
        return text_to_video(models, *prompts, settings, on_step=bar), fps
    finally:
        hook.remove()


def _keyframes(
    models: Models, keyframes: list[Keyframe], prompts: tuple[str, str], settings: Settings, bar: ProgressBar
) -> torch.Tensor:
    """keyframes_to_video, with the release's placement rule (known only once the models are loaded:
    0.9.0 / 0.9.1 keep keyframes at multiples of 8) said in this command's words."""
    from .pipeline import keyframes_to_video

    try:
        return keyframes_to_video(models, keyframes, *prompts, settings, on_step=bar)
    except ValueError as error:
        if "frame 0 or a multiple of" not in str(error):
            raise
        raise UsageError(f"--keyframe: LTX-Video {models.release} {error}; give FRAME as such a number") from error


def write(frames: torch.Tensor, fps: float, args: argparse.Namespace) -> int:
    """Write the video to --output; if that fails, keep the frames in a fallback file and say where."""
    from .media import write_mp4

    log.info("writing %s …", args.output)
    try:
        write_mp4(args.output, frames, fps, crf=args.crf, metadata={"comment": args.prompt})
    except Exception as error:  # whatever failed (disk full, folder gone, codec), the frames must not be lost
        kept = _keep(frames, fps, args)
        log.error("error: could not write --output %s (%s). The video was kept in %s", args.output, error, kept)
        return 1
    log.info("wrote %s (%d frames, %d×%d, %g fps)", args.output, frames.shape[0], frames.shape[2], frames.shape[1], fps)
    return 0


def _keep(frames: torch.Tensor, fps: float, args: argparse.Namespace) -> Path:
    """A fallback copy of the frames in the temporary folder: an mp4, or (if even that fails) a .npy of
    uint8 frames (T, H, W, 3)."""
    import numpy as np

    from .media import write_mp4

    folder = Path(tempfile.gettempdir())
    stem = f"ltx-video-{time.strftime('%Y%m%d-%H%M%S')}-seed{args.seed}"
    try:
        return write_mp4(folder / f"{stem}.mp4", frames, fps, crf=args.crf, metadata={"comment": args.prompt})
    except Exception:  # the encoder itself failed: raw frames always save
        path = folder / f"{stem}.npy"
        np.save(path, (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        return path


def fetch_models(args: argparse.Namespace) -> dict[str, Path]:
    """Every model option as a local path. Local files are checked (headers only) first, then every
    Hub reference is looked up, and only then is anything downloaded (and checked the same way)."""
    refs: dict[str, HubRef | Path] = {}
    for role, (flag, what) in MODEL_OPTIONS.items():
        if (text := getattr(args, role)) is None:
            continue
        with about(role):
            refs[role] = ref = parse_ref(text)
        if isinstance(ref, Path):
            check_exists(flag, ref, what)
            check_model_file(role, ref, args)
    plans: dict[str, Plan] = {}
    for role, ref in refs.items():
        if isinstance(ref, HubRef):
            with about(role):
                plans[role] = plan(ref, role)
    if "tokenizer" not in refs and not _tokenizer_beside(refs["text_encoder"], plans.get("text_encoder")):
        log.info("no T5 tokenizer beside the text encoder: using %s", DEFAULT_TOKENIZER)
        with about("tokenizer"):
            plans["tokenizer"] = plan(parse_ref(DEFAULT_TOKENIZER), "tokenizer")
    with about(None):
        check_space(list(plans.values()))
    paths = {role: ref for role, ref in refs.items() if isinstance(ref, Path)}
    for role, planned in plans.items():
        log.info(describe(planned))
        with about(role):
            paths[role] = fetch(planned)
        check_model_file(role, paths[role], args)
    return paths


@contextmanager
def about(role: str | None) -> Iterator[None]:
    """Turn a HubError in the block into a UsageError that starts with `role`'s flag."""
    try:
        yield
    except HubError as error:
        flag = f"{MODEL_OPTIONS[role][0]} " if role else ""
        raise UsageError(f"{flag}{error}") from error


def _tokenizer_beside(text_encoder: HubRef | Path, planned: Plan | None) -> bool:
    """Whether the text encoder brings its tokenizer: beside the local file or folder, or among the
    files planned for a Hub folder (offline, a cached folder is assumed to have it)."""
    from .loading.text_encoder import tokenizer_beside

    if isinstance(text_encoder, Path):
        return tokenizer_beside(text_encoder) is not None
    assert planned is not None
    if planned.offline:
        return not planned.is_file
    return not planned.is_file and any(Path(f).name in TOKENIZER_FILES for f in planned.files)


def check_model_file(role: str, path: Path, args: argparse.Namespace) -> None:
    """What the file or folder for `role` holds, from its header (the wrong kind is a UsageError with
    the loaders' words); a checkpoint without a VAE needs --vae."""
    try:
        found = MODEL_CHECKS[role](path)
    except CheckpointError as error:
        raise UsageError(f"{MODEL_OPTIONS[role][0]}: {error.reworded(CLI_ADVICE)}") from error
    if role == "checkpoint" and "vae" not in found and args.vae is None:
        raise UsageError(
            f"--checkpoint {args.checkpoint}: holds only the transformer, no VAE; pass a VAE as --vae: an "
            "LTX-Video VAE file or a full checkpoint of the same release (only its VAE is read)"
        )


def in_flags(error: CheckpointError, paths: dict[str, Path]) -> str:
    """The loaders' message with its advice in this command's flags, after the option it concerns."""
    for role, path in paths.items():
        if error.path == path or path in error.path.parents:
            return f"{MODEL_OPTIONS[role][0]}: {error.reworded(CLI_ADVICE)}"
    return str(error.reworded(CLI_ADVICE))


if __name__ == "__main__":
    sys.exit(main())
