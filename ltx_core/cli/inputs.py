"""The conditioning media of --image, --keyframe, --video and --extend, read and checked against what
only the files tell (lengths and kinds; the options themselves are checked by checks.py) before any
model is fetched or loaded."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..types import VAE_TEMPORAL_SCALE
from .checks import KEYFRAME_FORM, MEDIA, check_exists, or_default, parse_keyframe
from .flags import DEFAULT_OVERLAP, UsageError

if TYPE_CHECKING:
    from ..pipeline import Keyframe


def read_keyframe(text: str, path: Path, frame: int, frames: int) -> torch.Tensor:
    """The --keyframe file as an image (H, W, 3) or a clip (T, H, W, 3) of 1 + 8·k frames, in [0, 1], that
    fits the video's `frames` from `frame` on (negative: from the end)."""
    from ..media import read_image

    check_exists("--keyframe", path, f"{MEDIA} as {KEYFRAME_FORM}")
    try:
        pixels = read_image(path)
    except (ValueError, OSError):
        pixels, _ = read_video_file("--keyframe", path, MEDIA)
        if pixels.shape[0] == 1:
            pixels = pixels[0]
    if pixels.ndim == 4:
        length = pixels.shape[0]
        if (length - 1) % VAE_TEMPORAL_SCALE:
            usable = 1 + (length - 1) // VAE_TEMPORAL_SCALE * VAE_TEMPORAL_SCALE
            raise UsageError(
                f"--keyframe {text}: the clip has {length} frames; a clip keyframe needs 1 + 8·k frames "
                f"(1, 9, 17, …): trim it to {usable}"
            )
        start = frame if frame >= 0 else frames + frame
        if start < 0 or start + length > frames:
            raise UsageError(
                f"--keyframe {text}: the clip's {length} frames from frame {start} run past the video's {frames} "
                f"frames (--frames): start it at {frames - length} or earlier (-{length} puts it at the end), "
                "or make --frames longer"
            )
    return pixels


def read_video_file(
    flag: str, path: Path, what: str = "a video file (mp4, webm, mov, …)"
) -> tuple[torch.Tensor, float]:
    """Frames (T, H, W, 3) in [0, 1] and the frame rate of the video `flag` names; a UsageError naming
    the flag when it is missing or cannot be decoded as a video."""
    from ..media import read_video

    check_exists(flag, path, what)
    try:
        return read_video(path)
    except (ValueError, OSError) as error:
        if flag == "--keyframe":  # neither an image nor a video: say both
            raise UsageError(f"{flag} {path}: cannot be read as an image or a video. Give {what}") from error
        raise UsageError(f"{flag}: {error}") from error


def _read_image(path: Path | None) -> torch.Tensor | None:
    from ..media import read_image

    if path is None:
        return None
    check_exists("--image", path, "a picture (PNG, JPEG or WebP)")
    try:
        return read_image(path)
    except (ValueError, OSError) as error:
        raise UsageError(f"--image: {error}") from error


@dataclass
class Inputs:
    """What the conditioning options hold, read and checked: keyframes (--image's first), the --video
    to re-generate or the video to --extend (T, H, W, 3) in [0, 1] with its overlap, and its frame rate."""

    keyframes: list[Keyframe] = field(default_factory=list)
    video: torch.Tensor | None = None
    extend: torch.Tensor | None = None
    overlap: int = DEFAULT_OVERLAP
    fps: float | None = None
    what: str = ""  # for the log: "the image", "2 keyframes", …


def read_inputs(args: argparse.Namespace) -> Inputs:
    """Read every file of --image, --keyframe, --video and --extend (the options themselves were
    checked by check_settings) and check what only the files tell: lengths and kinds."""
    from ..pipeline import Keyframe

    inputs = Inputs()
    if (image := _read_image(args.image)) is not None:
        inputs.keyframes.append(Keyframe(image, 0, or_default(args.image_strength, 1.0)))
        inputs.what = "the image"
    for text in args.keyframe or ():
        path, frame, strength = parse_keyframe(text)
        inputs.keyframes.append(Keyframe(read_keyframe(text, path, frame, args.frames), frame, strength))
    if args.keyframe:
        inputs.what = f"{len(inputs.keyframes)} keyframe{'s' * (len(inputs.keyframes) > 1)}"
    if args.video is not None:
        video, inputs.fps = read_video_file("--video", args.video)
        if video.shape[0] < args.frames:
            usable = 1 + (video.shape[0] - 1) // VAE_TEMPORAL_SCALE * VAE_TEMPORAL_SCALE
            raise UsageError(
                f"--video {args.video}: has {video.shape[0]} frames, fewer than --frames {args.frames}: "
                f"set --frames {usable} (or fewer)"
            )
        inputs.video, inputs.what = video[: args.frames], "the video"
    if args.extend is not None:
        inputs.extend, inputs.fps = _read_extend(args)
        inputs.overlap, inputs.what = _overlap(args, inputs.extend.shape[0]), "the video's overlap"
    return inputs


def _read_extend(args: argparse.Namespace) -> tuple[torch.Tensor, float]:
    """The --extend video; a picture is refused (av would read it as a one-frame video)."""
    from ..media import read_image

    check_exists("--extend", args.extend, "a video file (mp4, webm, mov, …)")
    try:
        read_image(args.extend)
    except (ValueError, OSError):
        return read_video_file("--extend", args.extend)
    raise UsageError(
        f"--extend {args.extend}: is a picture, not a video; give a video file (mp4, webm, mov, …), "
        "or start from the picture with --image"
    )


def _overlap(args: argparse.Namespace, length: int) -> int:
    """--extend-overlap, checked against the old video's `length`; by default 17, or the most that
    --frames and the video allow."""
    usable = 1 + (min(length, args.frames) - 1) // VAE_TEMPORAL_SCALE * VAE_TEMPORAL_SCALE
    if args.extend_overlap is None:
        return min(DEFAULT_OVERLAP, usable)
    if args.extend_overlap > length:
        raise UsageError(
            f"--extend-overlap {args.extend_overlap}: --extend {args.extend} has only {length} frames; "
            f"use {usable} or fewer"
        )
    return args.extend_overlap
