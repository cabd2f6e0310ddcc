"""The command line's checks, made before anything is downloaded or loaded: every setting's range, the
device, the output path and what each model file holds (read from its header, no weights).

With real weights loading takes minutes, so a mistake found only at load (or after generating, when
the video is written) costs the user that long. Every error here is a UsageError whose message names
the option and what to do.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .loading.detect import Component, diffusers_component_dir, find_components, is_gguf, require_component
from .loading.errors import CheckpointError
from .loading.gguf import read_gguf
from .loading.safetensors import read_header
from .types import check_frames, check_spatial

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
    "--seed": ("seed", lambda v: 0 <= v < 2**64, "is a number from 0 to 2^64 − 1"),
    "--width": ("width", lambda v: v >= 32, "needs at least 32 pixels, in multiples of 32 (default 768)"),
    "--height": ("height", lambda v: v >= 32, "needs at least 32 pixels, in multiples of 32 (default 512)"),
    "--frames": ("frames", lambda v: v >= 1, "needs at least 1 frame, in the form 1 + 8·k (default 121)"),
}
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
