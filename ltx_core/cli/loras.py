"""--lora FILE[:STRENGTH] (repeatable): LoRA files for the transformer, each a local path or a Hub reference
like the model options, checked as early as each check can be made. Before any download: the strength,
that a local file exists and is a LoRA by its header, and that a Hub reference names something there (its
download is planned with the model files'). Once the checkpoint's header is read, and before its weights
load: each LoRA's modules against the layers of a model of the checkpoint's config built on the `meta`
device, so that a LoRA for another model size is refused in seconds. After loading, `apply_loras` puts the
LoRAs read here on the transformer."""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..hub import HubError, HubRef, Plan, describe, fetch, parse_ref, plan
from ..loading.errors import CheckpointError
from ..loading.lora import LoRA, check_lora_file, load_lora
from ..loading.release import Release
from ..loading.transformer import inspect_transformer
from ..lora import check_lora
from ..model.transformer import LTXVideoTransformer
from .checks import check_exists
from .flags import UsageError

log = logging.getLogger("ltx_core.generate")  # one name for the command's messages

LORA_FORM = "FILE[:STRENGTH], e.g. --lora style.safetensors:0.8"
WHAT = "a LoRA file for the LTX-Video transformer (.safetensors) as a local path or a Hub reference"
FOLDER_FILE = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes into a folder
NOT_A_LORA = (
    "give a LoRA file for the LTX-Video transformer (.safetensors) as --lora FILE[:STRENGTH]; model files go to "
    "--checkpoint, --vae and --text-encoder"
)
OTHER_MODEL = "give a LoRA made for --checkpoint's model, LTX-Video {release} {size}, or the checkpoint it was made for"


@dataclass
class LoraOption:
    """One --lora as given (`text`): its file (`ref`, then `path` once local) and strength."""

    text: str
    ref: HubRef | Path
    strength: float
    plan: Plan | None = None  # the download of a Hub reference
    path: Path | None = None


def parse_lora(text: str) -> tuple[str, float]:
    """`FILE[:STRENGTH]` → (file, strength 1 when left out). A file that exists as written is taken whole
    (its name may hold ":"); otherwise STRENGTH is what follows the last ":" where that holds no "/" or "\\"
    (so a URL's or a Windows path's colon stays the file's)."""
    head, colon, tail = text.rpartition(":")
    if Path(text).exists() or not colon or "/" in tail or "\\" in tail:
        return text, 1.0
    try:
        strength = float(tail)
    except ValueError:
        raise UsageError(f"--lora {text}: STRENGTH {tail!r} is not a number; --lora {LORA_FORM}") from None
    if not math.isfinite(strength):
        raise UsageError(f"--lora {text}: STRENGTH {tail} is not a finite number: 1 as trained, 0 none, e.g. 0.8")
    return head, strength


@contextmanager
def about(text: str, advice: str = NOT_A_LORA) -> Iterator[None]:
    """The loaders' and the Hub's errors in the block as UsageErrors that start with `--lora text`."""
    try:
        yield
    except HubError as error:
        raise UsageError(f"--lora {text}: {error}") from error
    except CheckpointError as error:
        worded = CheckpointError(error.path, error.found, error.expected, "cli", {"cli": advice})
        raise UsageError(f"--lora {text}: {worded}") from error


def lora_options(args: argparse.Namespace) -> list[LoraOption]:
    """Every --lora parsed, its local file checked (it exists, and is a LoRA by its header) or its Hub
    reference looked up (`plan`: nothing is downloaded yet)."""
    options = []
    for text in args.lora or ():
        file, strength = parse_lora(text)
        with about(text):
            option = LoraOption(text, parse_ref(file), strength)
            if isinstance(option.ref, Path):
                check_exists("--lora", option.ref, f"{WHAT}, as --lora {LORA_FORM}")
                option.path = _in_folder(text, option.ref)
                check_lora_file(option.path)
            else:
                option.plan = plan(option.ref, "lora")
        options.append(option)
    return options


def fetch_loras(options: list[LoraOption]) -> None:
    """Download (or find in the cache) each planned LoRA and check its header."""
    for option in options:
        if option.plan is not None:
            log.info(describe(option.plan))
            with about(option.text):
                option.path = _in_folder(option.text, fetch(option.plan))
                check_lora_file(option.path)


def read_loras(options: list[LoraOption], checkpoint: Path, release: Release) -> list[tuple[LoRA, float]]:
    """Each LoRA read and checked against the layers of --checkpoint's model (built on the meta device
    from its header: no weight is read), before the model loads."""
    if not options:
        return []
    with torch.device("meta"):
        model = LTXVideoTransformer(inspect_transformer(checkpoint).config)
    loras = []
    for option in options:
        assert option.path is not None  # local, or fetched
        with about(option.text):
            lora = load_lora(option.path)
        with about(option.text, OTHER_MODEL.format(release=release, size=release.size)):
            loras.append((check_lora(model, lora), option.strength))
    return loras


def _in_folder(text: str, path: Path) -> Path:
    """A LoRA folder as diffusers saves one → the LoRA file in it; a file → itself."""
    if not path.is_dir():
        return path
    if (path / FOLDER_FILE).is_file():
        return path / FOLDER_FILE
    raise UsageError(f"--lora {text}: {path} is a folder without {FOLDER_FILE}; give the LoRA's .safetensors file")
