"""The command line's checks, made before anything is downloaded or loaded: every setting's range, the
device, the output path, what each model file holds (read from its header, no weights) and the conditioning
inputs (--image, --keyframe, --video, --extend: read and checked against --frames).

With real weights loading takes minutes, so a mistake found only at load (or after generating, when
the video is written) costs the user that long. Every error here is a UsageError whose message names
the option and what to do.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .loading.detect import Component, diffusers_component_dir, find_components, is_gguf, require_component
from .loading.errors import CheckpointError
from .loading.gguf import read_gguf
from .loading.release import RELEASE_CHOICES, Release, detect_release
from .loading.safetensors import read_header
from .types import VAE_TEMPORAL_SCALE, check_frames, check_spatial

if TYPE_CHECKING:
    from .pipeline import Keyframe

# option → (attribute, valid?, the rule and what to do), checked when the option was given
NUMBER_RULES: dict[str, tuple[str, Callable[[float], bool], str]] = {
    "--steps": ("steps", lambda v: v >= 1, "needs at least 1 step (the release's default is 40; 20–50 is usual)"),
    "--fps": ("fps", lambda v: math.isfinite(v) and v > 0, "needs a frame rate above 0, e.g. 24, 25 or 30"),
    "--guidance": (
        "guidance",
        lambda v: math.isfinite(v) and v >= 0,
        "cannot be negative: 1 turns guidance off, 3 is the default, higher follows the prompt more closely",
    ),
    "--crf": ("crf", lambda v: 0 <= v <= 51, "is H.264's quality from 0 (lossless) to 51 (worst); the default is 19"),
    "--image-strength": (
        "image_strength",
        lambda v: 0 <= v <= 1,
        "runs from 0 (the image is only a hint) to 1 (kept exactly as the first frame)",
    ),
    "--strength": (
        "strength",
        lambda v: 0 < v <= 1,
        "runs above 0 to 1: how much of --video is re-generated (0.3 keeps its look, 1 keeps nothing; default 0.6)",
    ),
    "--extend-strength": (
        "extend_strength",
        lambda v: 0 <= v <= 1,
        "runs from 0 (the overlap is only a hint) to 1 (the overlap is kept exactly; the default)",
    ),
    "--seed": ("seed", lambda v: 0 <= v < 2**64, "is a number from 0 to 2^64 − 1"),
    "--width": ("width", lambda v: v >= 32, "needs at least 32 pixels, in multiples of 32 (default 768)"),
    "--height": ("height", lambda v: v >= 32, "needs at least 32 pixels, in multiples of 32 (default 512)"),
    "--frames": ("frames", lambda v: v >= 1, "needs at least 1 frame, in the form 1 + 8·k (default 121)"),
}
DEFAULT_OVERLAP = 17  # extend_video's default: two latent frames shared with the old video
# device type → (is it usable here?, what to do otherwise)
DEVICES: dict[str, tuple[Callable[[], bool], str]] = {
    "cpu": (lambda: True, ""),
    "cuda": (
        lambda: torch.cuda.is_available(),
        "no CUDA GPU is visible to PyTorch (is the NVIDIA driver installed? is CUDA_VISIBLE_DEVICES empty?)",
    ),
    "mps": (lambda: torch.backends.mps.is_available(), "MPS (Apple GPU) is not available here"),
    "xpu": (lambda: hasattr(torch, "xpu") and torch.xpu.is_available(), "no Intel GPU (XPU) is available here"),
}
DIFFUSERS_CLASSES = {"transformer": "LTXVideoTransformer3DModel", "vae": "AutoencoderKLLTXVideo"}


class UsageError(ValueError):
    """A mistake on the command line; the message names the option and what to do."""


def check_settings(args: argparse.Namespace) -> None:
    """Every number's range, the video's size rules (1 + 8·k frames, multiples of 32) and the prompt."""
    if not args.prompt.strip():
        raise UsageError('--prompt is empty: describe the video, e.g. --prompt "a red fox runs through fresh snow"')
    for flag, (name, valid, rule) in NUMBER_RULES.items():
        value = getattr(args, name)
        if value is not None and not valid(value):
            shown = format(value, "g") if isinstance(value, float) else value
            raise UsageError(f"{flag} {shown}: {flag} {rule}")
    for flag, check in (
        ("--width", lambda: check_spatial("width", args.width)),
        ("--height", lambda: check_spatial("height", args.height)),
        ("--frames", lambda: check_frames(args.frames)),
    ):
        try:
            check()
        except ValueError as error:
            raise UsageError(f"{flag}: {error}") from error
    if args.image_strength is not None and args.image is None:
        raise UsageError("--image-strength is given without --image: add --image PICTURE, or leave it out")
    check_conditioning(args)


# option → the option it belongs to, as (attribute, flag) pairs
NEEDS = {
    ("strength", "--strength"): ("video", "--video VIDEO"),
    ("extend_strength", "--extend-strength"): ("extend", "--extend VIDEO"),
    ("extend_overlap", "--extend-overlap"): ("extend", "--extend VIDEO"),
    ("extend_direction", "--extend-direction"): ("extend", "--extend VIDEO"),
}
KEYFRAME_FORM = "PATH[@FRAME][:STRENGTH], e.g. --keyframe end.png@-1:0.8"
MEDIA = "an image (PNG, JPEG or WebP) or a short video (mp4, webm, mov, …)"


def check_conditioning(args: argparse.Namespace) -> None:
    """The conditioning options without reading any file: each tuning option comes with its input,
    one kind of input at a time (keyframes and --image together), keyframes at frames of the video
    with strengths in 0–1, and an --extend-overlap of 1 + 8·k frames that fits --frames."""
    for (name, flag), (needed, needed_flag) in NEEDS.items():
        if getattr(args, name) is not None and getattr(args, needed) is None:
            raise UsageError(f"{flag} is given without {needed_flag.split()[0]}: add {needed_flag}, or leave it out")
    given = [
        flag
        for flag, value in (
            ("--image/--keyframe", args.image or args.keyframe),
            ("--video", args.video),
            ("--extend", args.extend),
        )
        if value
    ]
    if len(given) > 1:
        raise UsageError(
            f"{' and '.join(given)} are given together: each is a different way to start, so give one of them "
            "(--image and --keyframe may be combined)"
        )
    for text in args.keyframe or ():
        _, frame, strength = parse_keyframe(text)
        if not -args.frames <= frame < args.frames:
            raise UsageError(
                f"--keyframe {text}: frame {frame} is outside the video's {args.frames} frames (--frames); use 0 to "
                f"{args.frames - 1}, or count from the end with -1 (the last frame) to -{args.frames}"
            )
        if not 0 <= strength <= 1:
            raise UsageError(
                f"--keyframe {text}: strength {strength:g} runs from 0 (only a hint) to 1 (kept exactly; the default)"
            )
    if args.extend_overlap is not None:
        overlap = args.extend_overlap
        if overlap < 1 or (overlap - 1) % VAE_TEMPORAL_SCALE or overlap > args.frames:
            below = 1 + max(0, min(overlap, args.frames) - 1) // VAE_TEMPORAL_SCALE * VAE_TEMPORAL_SCALE
            raise UsageError(
                f"--extend-overlap {overlap}: the overlap is 1 + 8·k frames (1, 9, 17, …) and at most --frames "
                f"({args.frames}): use {below}"
            )


def parse_keyframe(text: str) -> tuple[Path, int, float]:
    """`PATH[@FRAME][:STRENGTH]` → (path, frame, strength); a path that exists as written is taken whole
    (so a file name may hold "@" or ":"). Frame defaults to 0, strength to 1."""
    if Path(text).exists():
        return Path(text), 0, 1.0
    match = re.fullmatch(r"(?P<path>.+?)(?:@(?P<frame>[^@:]*))?(?::(?P<strength>[^@:]*))?", text)
    assert match is not None  # the path group alone matches any non-empty text

    def field(name: str, parse: type, default: float, kind: str) -> float:
        value = match[name.lower()]
        try:
            return parse(value) if value is not None else default
        except ValueError:
            raise UsageError(f"--keyframe {text}: {name} {value!r} is not {kind}; {KEYFRAME_FORM}") from None

    frame = field("FRAME", int, 0, "a whole number")
    return Path(match["path"]), frame, field("STRENGTH", float, 1.0, "a number")


def check_device(name: str | None) -> torch.device:
    """The compute device: `name` if it exists in this build and machine, else the default."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"--device {name}: not a device name; use cuda (or cuda:1, …), cpu or mps") from error
    if device.type not in DEVICES:
        raise UsageError(f"--device {name}: cannot generate on {device.type!r}; use cuda, cpu or mps")
    available, why_not = DEVICES[device.type]
    if device.type == "cuda" and not torch.backends.cuda.is_built():
        why_not = f"this PyTorch ({torch.__version__}) is built without CUDA: install a CUDA build of PyTorch"
    if not available():
        raise UsageError(f"--device {name}: {why_not}; or use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        have = "one CUDA GPU, cuda:0" if count == 1 else f"{count} CUDA GPUs, cuda:0 … cuda:{count - 1}"
        raise UsageError(f"--device {name}: this machine has {have}; use one of those (or --device cuda)")
    return device


def check_output(path: Path) -> None:
    """An .mp4 file name in an existing folder that can be written to (tried with a temporary file)."""
    if path.is_dir():
        raise UsageError(f"--output {path}: is a folder; give a file name in it, e.g. {path / 'ltx-video.mp4'}")
    if path.suffix.lower() != ".mp4":
        example = path.with_suffix(".mp4").name if path.name else "ltx-video.mp4"
        raise UsageError(f"--output {path}: the generator writes MP4 video; name the file .mp4, e.g. {example}")
    folder = path.parent
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"--output {path}: {folder} {state}; create the folder first or choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ltx-video-write-test-"):
            pass
    except OSError as error:
        raise UsageError(
            f"--output {path}: cannot write in {folder} ({error.strerror}); choose a folder you can write to"
        ) from error


def check_exists(flag: str, path: Path, what: str) -> None:
    """A UsageError unless `path` exists; `what` says what the option takes."""
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such file or folder (looked in {path.resolve().parent}). Give {what}")


def components(path: Path, wanted: str) -> dict[str, Component]:
    """The components `path` holds, from its header or folder layout; a CheckpointError (with the
    loaders' wording) when `wanted` is not among them. Reads no weights."""
    if path.is_dir():
        found = {}
        for name in ("transformer", "vae"):
            try:
                diffusers_component_dir(path, name, DIFFUSERS_CLASSES[name])
                found[name] = Component(name, "", "diffusers")
            except CheckpointError:
                if name == wanted:
                    raise
        return found
    if is_gguf(path):
        tensors, _ = read_gguf(path, architecture=None)  # memory-mapped: nothing is read yet
        keys = tensors.keys()
    else:
        keys = read_header(path).shapes.keys()
    found = find_components(keys)
    require_component(path, found, wanted)
    return found


def check_text_encoder(path: Path) -> None:
    """A T5 file (by its keys), or a folder with a T5 config.json (itself or text_encoder/)."""
    if not path.is_dir():
        components(path, "text_encoder")
        return
    config = next((c for c in (path / "config.json", path / "text_encoder" / "config.json") if c.is_file()), None)
    if config is None:
        raise CheckpointError(path, "is a folder without config.json or text_encoder/config.json", "a T5 model folder")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as error:
        raise CheckpointError(config, f"is not valid JSON ({error})", "a T5 config.json") from error
    if model_type != "t5":
        raise CheckpointError(config, f"describes model_type {model_type!r}", "a T5 config (model_type 't5')")


def check_tokenizer(path: Path) -> None:
    """Opens spiece.model / tokenizer.json (small), which proves it is a tokenizer T5 can use."""
    from .text.tokenizer import load_tokenizer

    load_tokenizer(path)


# model option → its check (CheckpointError for the wrong kind of file); the checkpoint's returns what it holds
MODEL_CHECKS: dict[str, Callable[[Path], object]] = {
    "checkpoint": lambda path: components(path, "transformer"),
    "vae": lambda path: components(path, "vae"),
    "text_encoder": check_text_encoder,
    "tokenizer": check_tokenizer,
}


def check_release(checkpoint: Path, vae: Path | None, choice: str, words: Mapping[str, str]) -> Release:
    """The release of --checkpoint with --vae (or its own VAE), from their headers: the one --release
    names if the files allow it, else (auto) the one they tell. `words`: the loaders' advice in flags;
    its "release" entry may name an `{example}` release."""
    try:
        return detect_release(checkpoint, vae, choice)
    except CheckpointError as error:
        example = next((r for r in RELEASE_CHOICES[1:] if r in error.expected), "0.9.5")
        reworded = error.reworded({**words, "release": words["release"].format(example=example)})
        if error.advice == "matching_vae":
            flag = f"--vae {vae}" if vae is not None else f"--checkpoint {checkpoint}"
            raise UsageError(f"{flag}: {reworded}") from error
        raise UsageError(f"--release {choice}: {reworded}") from error


def read_keyframe(text: str, path: Path, frame: int, frames: int) -> torch.Tensor:
    """The --keyframe file as an image (H, W, 3) or a clip (T, H, W, 3) of 1 + 8·k frames, in [0, 1], that
    fits the video's `frames` from `frame` on (negative: from the end)."""
    from .media import read_image

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
    from .media import read_video

    check_exists(flag, path, what)
    try:
        return read_video(path)
    except (ValueError, OSError) as error:
        if flag == "--keyframe":  # neither an image nor a video: say both
            raise UsageError(f"{flag} {path}: cannot be read as an image or a video. Give {what}") from error
        raise UsageError(f"{flag}: {error}") from error


def _read_image(path: Path | None) -> torch.Tensor | None:
    from .media import read_image

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
    from .pipeline import Keyframe

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
    from .media import read_image

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


def or_default(value: float | None, default: float) -> float:
    """`value`, or `default` for an option left out."""
    return default if value is None else value
