"""The options' values checked before anything is downloaded or loaded: every number's range, the video's
size rules, the conditioning options without their files, the device and the output path; and, once the
files' headers are read, the sampling options against the release and the model's depth.

With real weights loading takes minutes, so a mistake found only at load (or after generating, when
the video is written) costs the user that long. Every error here is a UsageError whose message names
the option and what to do.
"""

from __future__ import annotations

import argparse
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..types import VAE_TEMPORAL_SCALE, check_frames, check_spatial
from .flags import SAMPLING_FLAGS, UsageError, parse_blocks, sampling_overrides

if TYPE_CHECKING:
    from ..loading.release import Release
    from ..multiscale import MultiscaleSettings
    from ..settings import ResolvedSettings, Settings

# option → (attribute, valid?, the rule and what to do), checked when the option was given
NUMBER_RULES: dict[str, tuple[str, Callable[[float], bool], str]] = {
    "--steps": ("steps", lambda v: v >= 1, "needs at least 1 step (the releases use 40, 30 for 13B dev, 8 distilled)"),
    "--fps": ("fps", lambda v: math.isfinite(v) and v > 0, "needs a frame rate above 0, e.g. 24, 25 or 30"),
    "--guidance": (
        "guidance",
        lambda v: math.isfinite(v) and v >= 0,
        "cannot be negative: 1 turns classifier-free guidance off (STG is --stg-scale), the 2B releases use 3, "
        "higher follows the prompt more closely",
    ),
    "--stg-scale": (
        "stg_scale",
        lambda v: math.isfinite(v) and v >= 0,
        "cannot be negative: 0 turns spatio-temporal guidance off, 1 is the 2B releases' scale",
    ),
    "--rescaling": (
        "rescaling",
        lambda v: 0 <= v <= 1,
        "runs from 0 to 1: 1 turns STG's rescaling off, 0.7 is the 2B releases' value",
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


def check_settings(args: argparse.Namespace) -> None:
    """Every number's range, the video's size rules (1 + 8·k frames, multiples of 32), the prompt, the STG
    blocks' form and the conditioning options."""
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
    if args.stg_blocks is not None:
        parse_blocks(args.stg_blocks)
    if args.image_strength is not None and args.image is None:
        raise UsageError("--image-strength is given without --image: add --image PICTURE, or leave it out")
    if args.upsampler is not None and not args.multiscale:
        raise UsageError(
            "--upsampler is given without --multiscale: add --multiscale (the upsampler runs between its two "
            "passes), or leave --upsampler out"
        )
    if args.multiscale and args.steps is not None:
        raise UsageError(
            f"--steps {args.steps}: with --multiscale each pass runs the release's own steps or noise levels (13B "
            "dev: 30-step schedules, the first pass's last 3 and the second pass's first 17 skipped; distilled: 7 "
            "and 3 fixed noise levels); leave --steps out, or leave --multiscale out"
        )
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
    if args.multiscale and args.video is not None:
        raise UsageError(
            "--multiscale and --video are given together: re-generating a video runs in one pass (the official "
            "multi-scale pipeline cannot start from an input video); leave --multiscale out"
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


def or_default(value: float | None, default: float) -> float:
    """`value`, or `default` for an option left out."""
    return default if value is None else value


# The STG blocks of the official configs, by model size: what an error suggests.
STG_BLOCK_EXAMPLES = {"2B": 19, "13B": 28}


def check_multiscale(args: argparse.Namespace, release: Release) -> None:
    """--multiscale against the release, before its upsampler is fetched: the release has the pipeline, and
    the video is large enough for its first pass."""
    from ..defaults import multiscale_releases
    from ..multiscale import multiscale_sizes, undecided

    if not release.defaults.multiscale:
        raise UsageError(
            f"--multiscale: LTX-Video {release} {release.size} has no multi-scale pipeline (the releases with one: "
            f"{multiscale_releases()}); leave --multiscale out, or generate with a checkpoint of one of those"
        )
    if doubt := undecided(release):
        raise UsageError(f"--multiscale: {doubt}; name the release with --release, e.g. --release {release.alike[-1]}")
    try:
        multiscale_sizes(args.width, args.height, release.defaults.downscale_factor)
    except ValueError as error:
        raise UsageError(f"--width {args.width} --height {args.height}: {error}") from error


def check_sampling(
    settings: Settings, args: argparse.Namespace, release: Release, blocks: int
) -> ResolvedSettings | MultiscaleSettings:
    """The settings the run will use: the release's (both passes with --multiscale), with the sampling
    options over them, checked against the release (STG switched on where its config names no block) and
    the model's `blocks` (read off the checkpoint's header), each mistake in the options' words."""
    from ..multiscale import MultiscaleSettings, resolve_multiscale
    from ..settings import count_blocks, resolve_settings

    given = sampling_overrides(args)
    example = min(STG_BLOCK_EXAMPLES.get(release.size, 19), blocks - 1)
    defaults = release.defaults
    passes = (defaults.first_pass, defaults.second_pass) if settings.multiscale else (defaults.one_pass,)
    for ranges in (p.guidance for p in passes if p is not None):
        if given.get("stg_scale") and "stg_blocks" not in given and not all(r.stg_skip_blocks for r in ranges):
            empty = [r for r in ranges if not r.stg_skip_blocks]
            where = "" if len(ranges) == 1 else f" from σ = {empty[0].from_sigma:g}"
            raise UsageError(
                f"--stg-scale {args.stg_scale:g}: LTX-Video {release}'s config names no block for STG to perturb"
                f"{where}: add --stg-blocks, e.g. --stg-blocks {example}, or leave --stg-scale out"
            )
    try:
        run = resolve_multiscale(settings, defaults) if settings.multiscale else resolve_settings(settings, defaults)
    except ValueError as error:
        flags = " ".join(SAMPLING_FLAGS[name][0] for name in given) or "the sampling options"
        raise UsageError(f"{flags}: {error}") from error
    runs = (run.first, run.second) if isinstance(run, MultiscaleSettings) else (run,)
    used = sorted({block for one in runs for block in one.perturbed_blocks()})
    if used and used[-1] >= blocks:
        have = count_blocks(blocks)
        if "stg_blocks" in given:
            raise UsageError(
                f"--stg-blocks {args.stg_blocks}: --checkpoint {args.checkpoint} has {have}; choose blocks among "
                f"them, e.g. --stg-blocks {example}"
            )
        raise UsageError(
            f"--checkpoint {args.checkpoint}: has {have}, but LTX-Video {release}'s config has STG perturb block "
            f"{', '.join(map(str, used))}: give --stg-blocks of the model's blocks (e.g. --stg-blocks {example}), or "
            "turn STG off with --stg-scale 0"
        )
    return run
