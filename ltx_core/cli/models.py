"""Model options → local files: each option's file or folder checked by its header (no weights), the
release read off the headers, Hub references looked up and downloaded, then the models loaded; every
mistake a UsageError that names the option, in the loaders' words with this command's flags.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..hub import DEFAULT_REPO, TOKENIZER_FILES, HubError, HubRef, Plan, check_space, describe, fetch, parse_ref, plan
from ..loading.detect import Component, diffusers_component_dir, find_components, is_gguf, require_component
from ..loading.errors import CheckpointError
from ..loading.gguf import read_gguf
from ..loading.release import RELEASE_CHOICES, Release, detect_release
from ..loading.safetensors import read_header
from ..loading.transformer import inspect_transformer
from ..loading.upsampler import inspect_latent_upsampler, require_spatial
from ..loading.vae import inspect_vae
from .checks import check_exists
from .flags import DEFAULT_CHECKPOINT, DEFAULT_TEXT_ENCODER, DEFAULT_TOKENIZER, DTYPES, UsageError

if TYPE_CHECKING:
    from ..pipeline import Models

log = logging.getLogger("ltx_core.generate")  # one name for the command's messages

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
    "upsampler": (
        "--upsampler",
        "a spatial latent upsampler (e.g. ltxv-spatial-upscaler-0.9.8.safetensors) or a diffusers folder of one, "
        f"as a local path or a Hub reference such as {DEFAULT_REPO}/ltxv-spatial-upscaler-0.9.8.safetensors; or "
        "leave --upsampler out to use the release's",
    ),
}
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
    "latent_upsampler": "pass it as --upsampler, with --multiscale",
}


DIFFUSERS_CLASSES = {"transformer": "LTXVideoTransformer3DModel", "vae": "AutoencoderKLLTXVideo"}


def fetch_models(args: argparse.Namespace, more: Sequence[Plan] = ()) -> dict[str, Path]:
    """Every model option as a local path. Local files are checked (headers only) first, then every
    Hub reference is looked up, and only then is anything downloaded (and checked the same way).
    `more`: other planned downloads (--lora's), counted with these in the check for disk space."""
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
        check_space([*plans.values(), *more])
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
    from ..loading.text_encoder import tokenizer_beside

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


def check_upsampler(path: Path) -> None:
    """A spatial latent upsampler, by its header or config (no weights)."""
    require_spatial(inspect_latent_upsampler(path))


def check_tokenizer(path: Path) -> None:
    """Opens spiece.model / tokenizer.json (small), which proves it is a tokenizer T5 can use."""
    from ..text.tokenizer import load_tokenizer

    load_tokenizer(path)


# model option → its check (CheckpointError for the wrong kind of file); the checkpoint's returns what it holds
MODEL_CHECKS: dict[str, Callable[[Path], object]] = {
    "checkpoint": lambda path: components(path, "transformer"),
    "vae": lambda path: components(path, "vae"),
    "text_encoder": check_text_encoder,
    "tokenizer": check_tokenizer,
    "upsampler": check_upsampler,
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


def fetch_upsampler(paths: dict[str, Path], args: argparse.Namespace, release: Release) -> None:
    """For --multiscale: the release's spatial upsampler from the Hub unless --upsampler gave one (checked
    like the other model files), into `paths`; then whether it fits the VAE's latent channels."""
    if "upsampler" not in paths:
        default = parse_ref(f"{DEFAULT_REPO}/{release.defaults.spatial_upscaler}")
        log.info("the spatial upsampler of LTX-Video %s: %s", release, default)
        with about("upsampler"):
            planned = plan(default, "upsampler")
            check_space([planned])
            log.info(describe(planned))
            paths["upsampler"] = fetch(planned)
        check_model_file("upsampler", paths["upsampler"], args)
    takes = inspect_latent_upsampler(paths["upsampler"]).config.in_channels
    vae = paths.get("vae", paths["checkpoint"])
    has = inspect_vae(vae).config.latent_channels
    if takes != has:
        flag = f"--vae {args.vae}" if "vae" in paths else f"--checkpoint {args.checkpoint}"
        raise UsageError(
            f"--upsampler {paths['upsampler']}: takes {takes} latent channels, but the VAE of {flag} has {has}; use "
            "the spatial upsampler of the model's release (leave --upsampler out for the release's own)"
        )


def model_blocks(checkpoint: Path) -> int:
    """The number of transformer blocks of --checkpoint, from its header."""
    return inspect_transformer(checkpoint).config.num_layers


def load_models(paths: dict[str, Path], args: argparse.Namespace, release: Release) -> Models:
    from ..pipeline import Models

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
            upsampler=paths.get("upsampler"),
        )
    except CheckpointError as error:  # found only while reading the weights: a damaged or partial file
        raise UsageError(in_flags(error, paths)) from error
