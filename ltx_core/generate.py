"""Command-line generator: `python -m ltx_core.generate --prompt "…"` → an mp4.

With no model options it downloads the default release from the Hugging Face Hub (cli/flags.py:
DEFAULT_CHECKPOINT, DEFAULT_TEXT_ENCODER, DEFAULT_TOKENIZER); each model option takes a local file or
folder or a Hub reference (see hub.py). The order is chosen so that a mistake costs seconds, not a
download or a load: every option is checked (cli/checks.py), the conditioning media are read
(cli/inputs.py), local model files are checked by their headers and every Hub reference is looked up
(cli/models.py), the release and the sampling settings are decided from the headers (with --multiscale,
the release's spatial upsampler is fetched once the release is known, unless --upsampler names one), then
downloads, loading, sampling and writing follow, each announced (cli/console.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .cli.checks import check_device, check_multiscale, check_output, check_sampling, check_settings, or_default
from .cli.console import ProgressBar, console
from .cli.flags import UsageError, given_as, parse_args, sampling_overrides
from .cli.inputs import Inputs, read_inputs
from .cli.loras import fetch_loras, lora_options, read_loras
from .cli.models import CLI_ADVICE, check_release, fetch_models, fetch_upsampler, load_models, model_blocks
from .lora import apply_loras
from .parallel.launch import first_on_rank0

if TYPE_CHECKING:
    from .parallel import Parallel
    from .pipeline import Keyframe, Models
    from .settings import Settings

log = logging.getLogger("ltx_core.generate")  # not __name__: that is "__main__" under `python -m`
HEADS = 32  # attention heads of both released sizes (2B: 32 × 64, 13B: 32 × 128), which Ulysses shares out


def main(argv: list[str] | None = None) -> int:
    from .parallel.launch import launched_rank, stop

    args = parse_args(argv)
    with console(args.quiet or launched_rank() != 0):  # under torchrun the first process speaks for all
        try:
            return generate(args)
        except UsageError as error:
            log.error("error: %s", error)
            return 2
        except KeyboardInterrupt:
            log.error("interrupted")
            return 130
        finally:
            stop()


def generate(args: argparse.Namespace) -> int:
    """Check, fetch, load, generate and write, announcing each stage."""
    check_settings(args)
    device = check_device(args.device)
    if device.type == "cpu" and args.device is None:
        log.warning("no GPU found: generating on the CPU, which is slow at full size (try --width 512 --height 320)")
    parallel, device = join_processes(args, device)
    check_output(args.output)
    inputs = read_inputs(args)
    with first_on_rank0(parallel):  # downloads once, the other processes read the cache after
        loras = lora_options(args)  # checked by their headers, or looked up on the Hub
        paths = fetch_models(args, [lora.plan for lora in loras if lora.plan is not None])
        fetch_loras(loras)
        release = check_release(paths["checkpoint"], paths.get("vae"), args.release, CLI_ADVICE)
        log.info("%s", release.describe())
        if args.multiscale:
            check_multiscale(args, release)
            fetch_upsampler(paths, args, release)
    settings = replace(make_settings(args, inputs, device), parallel=parallel)
    run = check_sampling(settings, args, release, model_blocks(paths["checkpoint"]))
    log.info("settings: %s", run.describe(given_as(args) | _frame_rate_from(args, inputs)))
    lora_stack = read_loras(loras, paths["checkpoint"], release)  # checked against the model's layers
    models = load_models(paths, args, release)
    if lora_stack:
        apply_loras(models.transformer, lora_stack)
    try:
        frames = sample_video(models, settings, args, inputs)
    except torch.OutOfMemoryError as error:
        advice = "Try --memory low_vram, or a smaller --width, --height or --frames"
        log.error("error: out of memory on %s (%s). %s", device, str(error).splitlines()[0], advice)
        return 1
    if parallel is not None and parallel.rank != 0:
        return 0  # the first process writes the video
    return write(frames[0], run.frame_rate, args)


def join_processes(args: argparse.Namespace, device: torch.device) -> tuple[Parallel | None, torch.device]:
    """Under torchrun: this process joins the others (on the GPU of its LOCAL_RANK unless --device names
    one) and they share the work as --cfg-parallel × --ulysses say (ltx_core/parallel). Without torchrun:
    no sharing, and sizes above 1 are a mistake."""
    from .parallel.launch import launched_world, start

    if args.cfg_parallel is not None and args.cfg_parallel < 1:
        raise UsageError(f"--cfg-parallel {args.cfg_parallel}: give a number of processes, 1 or more")
    if args.ulysses is not None and (args.ulysses < 1 or HEADS % args.ulysses):
        raise UsageError(f"--ulysses {args.ulysses}: give a number of processes that divides {HEADS} (1, 2, 4, 8, …)")
    world = launched_world()
    asked = (args.cfg_parallel or 1) * (args.ulysses or 1)
    if world == 1:
        if asked > 1:
            raise UsageError(
                f"--cfg-parallel {args.cfg_parallel or 1} × --ulysses {args.ulysses or 1} need {asked} processes, one "
                f"per GPU: start the generator as torchrun --nproc-per-node {asked} -m ltx_core.generate …"
            )
        return None, device
    try:
        parallel, device = start(args.cfg_parallel, args.ulysses, device if args.device is not None else None)
    except ValueError as error:
        raise UsageError(f"--cfg-parallel / --ulysses: {error}") from error
    log.info("%s, on %s", parallel.describe(), device)
    return parallel, device


def make_settings(args: argparse.Namespace, inputs: Inputs, device: torch.device) -> Settings:
    """The core's Settings from the options: the sampling options left out, and the frame rate when neither
    --fps nor an input video gives one, stay None (the release's)."""
    from .settings import Settings

    return Settings(
        width=args.width,
        height=args.height,
        frames=args.frames,
        frame_rate=args.fps or inputs.fps,
        seed=args.seed,
        device=device,
        memory=args.memory,
        multiscale=args.multiscale,
        **sampling_overrides(args),
    )


def _frame_rate_from(args: argparse.Namespace, inputs: Inputs) -> dict[str, str]:
    """Where the frame rate comes from when not from the release: --fps, or the input video's own."""
    if args.fps:
        return {"frame_rate": f"--fps {args.fps:g}"}
    if inputs.fps:
        return {"frame_rate": f"that of {'--video' if args.video is not None else '--extend'}"}
    return {}


def sample_video(models: Models, settings: Settings, args: argparse.Namespace, inputs: Inputs) -> torch.Tensor:
    """Frames (1, T, H, W, 3) in [0, 1]."""
    from .pipeline import extend_video, text_to_video, video_to_video

    size = f"{args.width}×{args.height}, {args.frames} frames"
    log.info("LTX-Video %s on %s: %s", models.release, settings.device, size)
    log.info("encoding the prompt%s …", f" and {inputs.what}" if inputs.what else "")
    bar = ProgressBar(args.frames)
    hook = models.transformer.register_forward_pre_hook(bar.start)  # sampling starts at its first call
    prompts = (args.prompt, args.negative_prompt)
    try:
        if inputs.extend is not None:
            direction, strength = args.extend_direction or "forward", or_default(args.extend_strength, 1.0)
            return extend_video(
                models,
                inputs.extend,
                *prompts,
                settings,
                direction=direction,
                overlap=inputs.overlap,
                strength=strength,
                on_step=bar,
            )
        if inputs.video is not None:
            denoise = or_default(args.strength, 0.6)
            return video_to_video(models, inputs.video, *prompts, settings, denoise=denoise, on_step=bar)
        if inputs.keyframes:
            return _keyframes(models, inputs.keyframes, prompts, settings, bar)
        return text_to_video(models, *prompts, settings, on_step=bar)
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


if __name__ == "__main__":
    sys.exit(main())
