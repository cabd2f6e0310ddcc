"""Mistakes a user makes with `python -m ltx_core.generate`, and what each must be told.

Every entry must end with a non-zero exit within seconds, with a message that names the option
(`says[0]`) and the fix (the rest of `says`), without a traceback, and — where the mistake can be known
then (`before_loading`) — before any weights are loaded. Entries are appended to BASE (argparse keeps
the last value of a repeated option), which is a valid run on tiny local files; `{name}` fields are
the files of `write_fixtures`.

tests/test_generate.py runs the list in-process. `.ci/check-runtime-install` runs it in a fresh
environment, `python tests/bad_invocations.py HUB_URL REPO_FOLDER`: every entry in-process, and those marked `real`
(one or more of each kind) as real commands, timed (each start costs ~2 s of importing torch, so the
whole list as commands would take minutes). Exit status 1 if any entry fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BASE = ("--prompt", "a red fox", "--checkpoint", "{checkpoint}", "--text-encoder", "{t5}", "--width", "64")
BASE += ("--height", "64", "--frames", "9", "--steps", "2", "--device", "cpu", "--output", "{tmp}/out.mp4")
SECONDS = 20  # "within seconds": a slow CI machine still stays far below this (each takes ~2 s)
# --multiscale takes no --steps (each pass runs the release's): its entries start from BASE without it,
# most on a transformer and VAE named 0.9.8-distilled (a release with the multi-scale pipeline)
_STEPS = BASE.index("--steps")
NO_STEPS = (*BASE[:_STEPS], *BASE[_STEPS + 2 :])
MULTISCALE = (
    *NO_STEPS,
    "--checkpoint",
    "{gguf32}",
    "--vae",
    "{vae_095}",
    "--release",
    "0.9.8-distilled",
    "--multiscale",
)


@dataclass(frozen=True)
class Bad:
    args: tuple[str, ...]
    says: tuple[str, ...]  # the option first, then the words of the fix
    before_loading: bool = True
    base: bool = True  # appended to BASE
    unless: str = ""  # "cuda" / "mps": not a mistake where that device exists
    hub: str = "up"  # "dead": nothing listens at HF_ENDPOINT; "offline": HF_HUB_OFFLINE=1
    real: bool = False  # also run as a real command by the CI step


BAD: list[Bad] = [
    # numbers out of range
    Bad(("--steps", "0"), ("--steps 0", "at least 1 step"), real=True),
    Bad(("--steps", "-5"), ("--steps -5", "at least 1 step")),
    Bad(("--fps", "0"), ("--fps 0", "above 0")),
    Bad(("--fps", "-24"), ("--fps -24", "above 0")),
    Bad(("--fps", "nan"), ("--fps nan", "above 0")),
    Bad(("--guidance", "-1"), ("--guidance -1", "cannot be negative", "1 turns classifier-free guidance off")),
    Bad(("--guidance", "inf"), ("--guidance inf", "cannot be negative")),
    Bad(("--crf", "99"), ("--crf 99", "0 (lossless) to 51")),
    Bad(("--crf", "-1"), ("--crf -1", "0 (lossless) to 51")),
    Bad(("--seed", "-1"), ("--seed -1", "from 0 to")),
    Bad(("--width", "100"), ("--width", "use 96 or 128")),
    Bad(("--width", "-64"), ("--width -64", "at least 32 pixels")),
    Bad(("--height", "0"), ("--height 0", "at least 32 pixels")),
    Bad(("--frames", "12"), ("--frames", "use 9 or 17")),
    Bad(("--frames", "0"), ("--frames 0", "at least 1 frame")),
    Bad(("--image", "{image}", "--image-strength", "1.5"), ("--image-strength 1.5", "from 0", "to 1")),
    Bad(("--image-strength", "0.5"), ("--image-strength", "add --image")),
    Bad(("--prompt", ""), ("--prompt", "describe the video")),
    Bad(("--prompt", "   "), ("--prompt", "describe the video")),
    # sampling options over the release's settings
    Bad(("--stg-scale", "-1"), ("--stg-scale -1", "cannot be negative", "0 turns spatio-temporal guidance off")),
    Bad(("--stg-scale", "nan"), ("--stg-scale nan", "cannot be negative")),
    Bad(("--rescaling", "1.5"), ("--rescaling 1.5", "runs from 0 to 1", "1 turns STG's rescaling off"), real=True),
    Bad(("--rescaling", "-0.1"), ("--rescaling -0.1", "runs from 0 to 1")),
    Bad(("--stg-mode", "sideways"), ("--stg-mode", "invalid choice", "attention_values", "stg_av")),
    Bad(("--stg-blocks", "19,x"), ("--stg-blocks 19,x", "'x' is not a block number", "e.g. --stg-blocks 19")),
    Bad(("--stg-blocks", "19,,20"), ("--stg-blocks 19,,20", "an empty entry is not a block number", "19,20")),
    Bad(("--stg-blocks", "-1"), ("--stg-blocks -1", "'-1' is not a block number", "block numbers from 0")),
    Bad(("--stg-blocks", "28"), ("--stg-blocks 28", "has 28 blocks (0 … 27)", "e.g. --stg-blocks 19"), real=True),
    Bad(("--cfg-star=yes",), ("--cfg-star", "ignored explicit argument 'yes'")),
    Bad(("--no-stochastic=1",), ("--no-stochastic", "ignored explicit argument '1'")),
    Bad(  # the release runs without STG and names no block
        ("--checkpoint", "{gguf32}", "--vae", "{vae_095}", "--release", "0.9.6-distilled", "--stg-scale", "1"),
        ("--stg-scale 1", "0.9.6-distilled's config names no block for STG", "add --stg-blocks"),
    ),
    Bad(  # the release's STG block 19 on a 1-block model
        ("--checkpoint", "{gguf32}", "--vae", "{vae_095}", "--release", "0.9.5"),
        ("--checkpoint", "has 1 block (0)", "perturb block 19", "--stg-blocks", "--stg-scale 0"),
    ),
    Bad(  # STG switched on where the config's block list (42) is beyond the model
        ("--checkpoint", "{gguf32}", "--vae", "{vae_095}", "--release", "0.9.8-distilled", "--stg-scale", "2"),
        ("--checkpoint", "perturb block 42", "give --stg-blocks"),
    ),
    # the multi-scale pipeline and its upsampler
    Bad(
        (*NO_STEPS, "--multiscale"),
        ("--multiscale", "0.9.1 2B has no multi-scale pipeline", "0.9.8-distilled (13B, 2B)", "leave --multiscale out"),
        base=False,
        real=True,
    ),
    Bad(
        ("--multiscale",),
        ("--steps 2", "with --multiscale each pass runs the release's own steps", "leave --steps out"),
    ),
    Bad(("--upsampler", "{upsampler}"), ("--upsampler", "without --multiscale", "add --multiscale")),
    Bad(
        (*NO_STEPS, "--multiscale", "--video", "{clip}"),
        ("--multiscale and --video", "runs in one pass", "leave --multiscale out"),
        base=False,
    ),
    Bad(
        (*MULTISCALE, "--upsampler", "{temporal_upsampler}"),
        ("--upsampler", "is a temporal ×2 latent upsampler", "expected a spatial latent upsampler"),
        base=False,
    ),
    Bad(
        (*MULTISCALE, "--upsampler", "{checkpoint}"),
        (
            "--upsampler",
            "contains an LTX-Video transformer",
            "expected an LTX-Video latent upsampler",
            "as --checkpoint",
        ),
        base=False,
    ),
    Bad(
        (*MULTISCALE, "--upsampler", "{upsampler_128}"),
        ("--upsampler", "takes 128 latent channels", "the VAE of --vae", "has 16", "leave --upsampler out"),
        base=False,
    ),
    Bad(
        (*MULTISCALE, "--upsampler", "{upsampler}", "--width", "32"),
        ("--width 32 --height 64", "gives 0×32", "at least 64 pixels"),
        base=False,
    ),
    Bad(
        (*MULTISCALE, "--upsampler", "{tmp}/no-upsampler.safetensors"),
        ("--upsampler", "no such file", "spatial latent upsampler"),
        base=False,
    ),
    Bad(MULTISCALE, ("--upsampler", "HF_HUB_OFFLINE is set", "not in the cache"), base=False, hub="offline"),
    Bad(
        ("--checkpoint", "{upsampler}"),
        ("--checkpoint", "contains an LTX-Video latent upsampler", "as --upsampler, with --multiscale"),
        real=True,
    ),
    Bad(("--vae", "{upsampler}"), ("--vae", "contains an LTX-Video latent upsampler", "as --upsampler")),
    # what argparse refuses
    Bad(("--checkpoint", "{checkpoint}"), ("--prompt", "required"), base=False, real=True),
    Bad(("--width", "wide"), ("--width", "invalid int value")),
    Bad(("--dtype", "fp4"), ("--dtype", "invalid choice", "fp8")),
    Bad(("--memory", "tiny"), ("--memory", "invalid choice", "low_vram")),
    Bad(("--sampler", "euler"), ("--sampler", "unrecognized")),
    # devices
    Bad(("--device", "gpu"), ("--device gpu", "use cuda", "cpu")),
    Bad(("--device", "meta"), ("--device meta", "cannot generate on", "cuda")),
    Bad(("--device", "cuda"), ("--device cuda", "--device cpu"), unless="cuda", real=True),
    Bad(("--device", "cuda:3"), ("--device cuda:3", "--device cpu"), unless="cuda"),
    Bad(("--device", "mps"), ("--device mps", "--device cpu"), unless="mps"),
    # the output
    Bad(("--output", "{tmp}/fox.gif"), ("--output", "name the file .mp4", "fox.mp4"), real=True),
    Bad(("--output", "{tmp}/fox"), ("--output", "name the file .mp4")),
    Bad(("--output", "{tmp}/no/such/folder/fox.mp4"), ("--output", "does not exist", "create the folder")),
    Bad(("--output", "{tmp}"), ("--output", "is a folder", "give a file name")),
    Bad(("--output", "{checkpoint}/fox.mp4"), ("--output", "is not a folder")),
    Bad(("--output", "/proc/fox.mp4"), ("--output", "cannot write in /proc", "choose a folder"), real=True),
    # local model files and images
    Bad(("--checkpoint", "{tmp}/missing.safetensors"), ("--checkpoint", "no such file", "Hub reference")),
    Bad(("--checkpoint", "missing.safetensors"), ("--checkpoint", "no such file", "Hub reference")),
    Bad(("--text-encoder", "{tmp}/no-t5"), ("--text-encoder", "no such file", "T5")),
    Bad(("--vae", "{tmp}/no-vae.safetensors"), ("--vae", "no such file", "VAE")),
    Bad(("--tokenizer", "{tmp}/no-tokenizer"), ("--tokenizer", "no such file", "spiece.model")),
    Bad(("--image", "{tmp}/no.png"), ("--image", "no such file", "PNG")),
    Bad(("--image", "{garbage}"), ("--image", "cannot be decoded as an image", "PNG")),
    # conditioning: --keyframe, --video, --extend
    Bad(("--keyframe", "{tmp}/no.png@-1"), ("--keyframe", "no such file", "PNG", "PATH[@FRAME][:STRENGTH]"), real=True),
    Bad(("--keyframe", "{garbage}"), ("--keyframe", "cannot be read as an image or a video", "PNG", "mp4")),
    Bad(("--keyframe", "{image}@9"), ("--keyframe", "frame 9 is outside the video's 9 frames", "use 0 to 8", "-1")),
    Bad(("--keyframe", "{image}@-10"), ("--keyframe", "frame -10 is outside", "-1 (the last frame) to -9")),
    Bad(("--keyframe", "{image}@last"), ("--keyframe", "FRAME 'last' is not a whole number", "@FRAME")),
    Bad(("--keyframe", "{image}:1.5"), ("--keyframe", "strength 1.5", "0 (only a hint) to 1")),
    Bad(("--keyframe", "{image}@0:high"), ("--keyframe", "STRENGTH 'high' is not a number", ":STRENGTH")),
    Bad(("--keyframe", "{image}@3"), ("--keyframe", "multiple of 8", "use 0 or 8"), before_loading=False),
    Bad(("--keyframe", "{clip}@4"), ("--keyframe", "run past the video's 9 frames", "start it at 0")),
    Bad(("--keyframe", "{image}", "--extend", "{clip}"), ("--image/--keyframe and --extend", "give one of them")),
    Bad(("--video", "{clip}", "--frames", "17"), ("--video", "has 9 frames", "set --frames 9")),
    Bad(("--video", "{clip}", "--strength", "0"), ("--strength 0", "above 0 to 1")),
    Bad(("--strength", "0.5"), ("--strength", "add --video VIDEO")),
    Bad(("--video", "{garbage}"), ("--video", "cannot be decoded as video")),
    Bad(("--extend", "{tmp}/no.mp4"), ("--extend", "no such file", "mp4")),
    Bad(("--extend", "{garbage}"), ("--extend", "cannot be decoded as video"), real=True),
    Bad(("--extend", "{image}"), ("--extend", "is a picture, not a video", "--image")),
    Bad(("--extend", "{clip}", "--extend-direction", "sideways"), ("--extend-direction", "invalid choice", "backward")),
    Bad(("--extend", "{clip}", "--extend-overlap", "8"), ("--extend-overlap 8", "1 + 8·k", "use 1")),
    Bad(("--extend", "{clip}", "--extend-overlap", "17"), ("--extend-overlap 17", "at most --frames (9)", "use 9")),
    Bad(
        ("--extend", "{clip}", "--frames", "25", "--extend-overlap", "17"),
        ("--extend-overlap 17", "has only 9 frames", "use 9"),
    ),
    Bad(("--extend", "{clip}", "--extend-strength", "2"), ("--extend-strength 2", "from 0")),
    Bad(("--extend-overlap", "9"), ("--extend-overlap", "add --extend VIDEO")),
    Bad(("--checkpoint", "{t5_file}"), ("--checkpoint", "contains a T5 text encoder", "as --text-encoder"), real=True),
    Bad(("--text-encoder", "{checkpoint}"), ("--text-encoder", "an LTX-Video transformer", "as --checkpoint")),
    Bad(("--vae", "{t5_file}"), ("--vae", "contains a T5 text encoder", "as --text-encoder")),
    Bad(("--checkpoint", "{transformer_only}"), ("--checkpoint", "no VAE", "pass a VAE as --vae")),
    Bad(("--checkpoint", "{gguf}"), ("--checkpoint", "no VAE", "pass a VAE as --vae"), real=True),
    Bad(("--checkpoint", "{garbage}"), ("--checkpoint", "safetensors")),
    # the release: named, or read off the files
    Bad(("--release", "0.9.9"), ("--release", "invalid choice", "0.9.8-distilled")),
    Bad(("--release", "0.9.7-dev"), ("--release 0.9.7-dev", "released as 13B", "a 2B release", "--release 0.9.0")),
    Bad(
        ("--release", "0.9.5"),
        ("--release 0.9.5", "0.9.0 / 0.9.1 positions", "a release that fits: 0.9.0 or 0.9.1", "--release 0.9.0"),
    ),
    Bad(
        ("--checkpoint", "{gguf32}", "--vae", "{vae_095}"),
        ("--release auto", "0.9.5, 0.9.6-dev, 0.9.6-distilled or 0.9.8-distilled", "e.g. --release 0.9.5"),
        real=True,
    ),
    Bad(
        ("--checkpoint", "{gguf32}", "--vae", "{vae_095}", "--release", "0.9.1"),
        ("--vae", "holds a 0.9.5+ VAE", "VAE of the transformer's release as --vae"),
    ),
    Bad(("--checkpoint", "{truncated}"), ("--checkpoint", "truncated", "download it again"), real=True),
    Bad(("--text-encoder", "{empty}"), ("--text-encoder", "without config.json", "T5")),
    Bad(("--tokenizer", "{empty}"), ("--tokenizer", "spiece.model", "as --tokenizer")),
    Bad(("--tokenizer", "{garbage}"), ("--tokenizer", "as --tokenizer")),
    # --lora FILE[:STRENGTH]
    Bad(("--lora", "{lora}:strong"), ("--lora", "STRENGTH 'strong' is not a number", "FILE[:STRENGTH]")),
    Bad(("--lora", "{lora}:inf"), ("--lora", "not a finite number", "e.g. 0.8")),
    Bad(("--lora", "{tmp}/no-lora.safetensors:0.8"), ("--lora", "no such file", "a LoRA file"), real=True),
    Bad(
        ("--lora", "{checkpoint}"),
        ("--lora", "is not a LoRA (its keys: ", "Give a LoRA file", "model files go to --checkpoint"),
        real=True,
    ),
    Bad(("--lora", "{garbage}"), ("--lora", "no valid safetensors header", "Give a LoRA file")),
    Bad(("--lora", "{empty}"), ("--lora", "is a folder without pytorch_lora_weights.safetensors")),
    Bad(
        ("--lora", "{lora}", "--lora", "{lora_wide}:0.5"),
        ("--lora", "is a LoRA for another model size", "64→64 in the LoRA, 32→32 here", "LTX-Video 0.9.1 2B"),
        real=True,
    ),
    Bad(("--lora", "{lora_attn3}"), ("--lora", "match no linear layer of this model", "made for --checkpoint's")),
    Bad(("--lora", "Nobody/no-such-repo/style.safetensors"), ("--lora", "no repository Nobody/no-such-repo")),
    Bad(("--lora", "Lightricks/LTX-Video"), ("--lora", "holds none of the files", "pytorch_lora_weights")),
    Bad(
        ("--lora", "Lightricks/LTX-Video/ltx-video-2b-v0.9.1.safetensors:0.5"),
        ("--lora", "is not a LoRA", "model files go to --checkpoint"),
    ),
    # Hub references
    Bad(
        ("--checkpoint", "Nobody/no-such-repo/x.safetensors"),
        ("--checkpoint", "no repository Nobody/no-such-repo"),
        real=True,
    ),
    Bad(("--checkpoint", "models/ltx-video.safetensors"), ("--checkpoint", "no such local file", "no repository")),
    Bad(
        ("--checkpoint", "Lightricks/LTX-Video/ltx-video-2b-v0.9.1.safetensor"),
        ("--checkpoint", "has no file or folder", "Did you mean Lightricks/LTX-Video/ltx-video-2b-v0.9.1.safetensors"),
    ),
    Bad(
        ("--checkpoint", "hf://Lightricks/LTX-Video@v9.9/ltx-video-2b-v0.9.1.safetensors"),
        ("--checkpoint", "no revision 'v9.9'", "branch, tag or commit"),
    ),
    Bad(("--checkpoint", "hf://nonsense"), ("--checkpoint", "not a Hub reference", "hf://owner/name/file")),
    Bad(("--checkpoint", "Lightricks/LTX-Video/tokenizer"), ("--checkpoint", "holds none of the files")),
    Bad(
        ("--text-encoder", "Lightricks/LTX-Video/ltx-video-2b-v0.9.1.safetensors"),
        ("--text-encoder", "an LTX-Video transformer", "as --checkpoint"),
    ),
    Bad(("--vae", "{hub}/Lightricks/LTX-Video/blob/main/nope.safetensors"), ("--vae", "has no file or folder")),
    Bad(
        ("--checkpoint", "Lightricks/LTX-Video/ltx-video-2b-v0.9.1.safetensors"),
        ("--checkpoint", "cannot reach the Hub", "not in the cache", "Connect to the internet"),
        hub="dead",
        real=True,
    ),
    Bad(
        ("--text-encoder", "{t5_file}"),
        ("--tokenizer", "HF_HUB_OFFLINE is set", "not in the cache"),
        hub="offline",
    ),
]


def write_fixtures(folder: Path, tiny: dict[str, Path]) -> dict[str, str]:
    """The files the entries name, derived from write_tiny_checkpoints' output `tiny`."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file

    from ltx_core.loading.transformer import inspect_transformer
    from ltx_core.media import write_mp4
    from tiny import tiny_lora, write_tiny_upsampler
    from tiny_comfy import _transformer_tensors

    folder.mkdir(parents=True, exist_ok=True)
    tensors = load_file(tiny["checkpoint"])
    transformer = {k: v for k, v in tensors.items() if k.startswith("model.diffusion_model.")}
    save_file(transformer, folder / "transformer-only.safetensors")
    _write_gguf(
        folder / "transformer.gguf", {k.removeprefix("model.diffusion_model."): v for k, v in transformer.items()}
    )
    (folder / "t5-alone").mkdir(exist_ok=True)  # one T5 file without a tokenizer, from the (sharded) folder
    t5 = {k: v for shard in sorted(tiny["text_encoder"].glob("*.safetensors")) for k, v in load_file(shard).items()}
    save_file(t5, folder / "t5-alone" / "t5.safetensors")
    data = tiny["checkpoint"].read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "garbage.png").write_text("hello, I am not a model")
    _write_vae_095(folder / "vae-095.safetensors")
    _write_gguf(folder / "transformer-32-heads.gguf", _transformer_tensors()[1])
    (folder / "empty").mkdir(exist_ok=True)
    write_tiny_upsampler(folder / "spatial-upscaler.safetensors")  # for the VAE's 16 latent channels
    write_tiny_upsampler(folder / "temporal-upscaler.safetensors", spatial=False, temporal=True)
    write_tiny_upsampler(folder / "spatial-upscaler-128.safetensors", channels=128)
    pixels = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "start.png")
    write_mp4(folder / "clip.mp4", torch.rand(9, 64, 64, 3, generator=torch.Generator().manual_seed(0)), 25)
    lora = tiny_lora(inspect_transformer(tiny["checkpoint"]).config, 1)  # for the checkpoint: 28 blocks, 32 wide
    save_file(lora, folder / "lora.safetensors")
    save_file({k.replace(".attn1.", ".attn3."): v for k, v in lora.items()}, folder / "lora-attn3.safetensors")
    save_file(tiny_lora(_transformer_tensors()[0], 2), folder / "lora-wide.safetensors")  # 64 wide
    return {
        "checkpoint": str(tiny["checkpoint"]),
        "t5": str(tiny["text_encoder"]),
        "t5_file": str(folder / "t5-alone" / "t5.safetensors"),
        "transformer_only": str(folder / "transformer-only.safetensors"),
        "gguf": str(folder / "transformer.gguf"),
        "truncated": str(folder / "truncated.safetensors"),
        "garbage": str(folder / "garbage.png"),
        "vae_095": str(folder / "vae-095.safetensors"),
        # a GGUF whose heads can be read off its shapes (32, as in every release), unlike {gguf}
        "gguf32": str(folder / "transformer-32-heads.gguf"),
        "empty": str(folder / "empty"),
        "image": str(folder / "start.png"),
        "clip": str(folder / "clip.mp4"),
        "upsampler": str(folder / "spatial-upscaler.safetensors"),
        "temporal_upsampler": str(folder / "temporal-upscaler.safetensors"),
        "upsampler_128": str(folder / "spatial-upscaler-128.safetensors"),
        "lora": str(folder / "lora.safetensors"),
        "lora_attn3": str(folder / "lora-attn3.safetensors"),
        "lora_wide": str(folder / "lora-wide.safetensors"),
        "tmp": str(folder),
    }


def _write_vae_095(path: Path) -> None:
    """A tiny VAE of the 0.9.5 layout (for the checkpoint's 16 latent channels), with its config."""
    import json

    import torch
    from safetensors.torch import save_file

    from ltx_core import VAEConfig, VideoVAE
    from tiny import TINY_VAE_LAYOUTS, random_vae_state_dict

    metadata = TINY_VAE_LAYOUTS["0.9.5"][0]
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VideoVAE(VAEConfig.from_metadata(metadata)).state_dict().items()}
    save_file(random_vae_state_dict(shapes, 41), path, metadata={"config": json.dumps({"vae": metadata})})


def _write_gguf(path: Path, tensors: dict) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "ltxv")
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def argv(bad: Bad, fields: dict[str, str]) -> list[str]:
    return [a.format(**fields) for a in ((*BASE, *bad.args) if bad.base else bad.args)]


def applies(bad: Bad) -> bool:
    """False for a device mistake on a machine that has the device."""
    import torch

    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    return not bad.unless or not available[bad.unless]()


def problems(bad: Bad, status: int, err: str, seconds: float) -> list[str]:
    """What is wrong with one run's outcome (empty when it is as required)."""
    found = []
    if status == 0:
        found.append("exited 0")
    if "Traceback" in err:
        found.append("printed a traceback")
    found += [f"does not say {s!r}" for s in bad.says if s not in err]
    if bad.before_loading and "loading the models" in err:
        found.append("loaded the models first")
    if seconds > SECONDS:
        found.append(f"took {seconds:.1f} s")
    return found


def run_in_process(bad: Bad, fields: dict[str, str], cache: Path) -> tuple[int, str, float]:
    """Call the generator's main() with the entry's arguments: (exit status, stderr, seconds). Loading
    the models raises (and so fails the entry) when the mistake should have been found before."""
    import contextlib
    import io

    from hub_server import pointed_at
    from ltx_core import generate, pipeline

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the models were loaded before the mistake was reported")

    url = "http://127.0.0.1:9" if bad.hub == "dead" else fields["hub"]  # the discard port: nothing listens
    err = io.StringIO()
    load = pipeline.Models.load
    start = time.perf_counter()
    try:
        if bad.before_loading:
            pipeline.Models.load = refuse  # type: ignore[method-assign]
        with pointed_at(url, cache, offline=bad.hub == "offline"), contextlib.redirect_stderr(err):
            try:
                status = generate.main(argv(bad, fields))
            except SystemExit as exit:  # argparse's own errors
                status = exit.code if isinstance(exit.code, int) else 1
    finally:
        pipeline.Models.load = load  # type: ignore[method-assign]
    return status, err.getvalue(), time.perf_counter() - start


def run_command(bad: Bad, fields: dict[str, str], python: str = sys.executable) -> tuple[int, str, float]:
    """Run the entry as `python -m ltx_core.generate …` with an empty Hugging Face cache."""
    env = {**os.environ, "HF_ENDPOINT": fields["hub"], "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    if bad.hub == "dead":
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    if bad.hub == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory() as home:
        env["HF_HOME"] = home
        start = time.perf_counter()
        command = [python, "-m", "ltx_core.generate", *argv(bad, fields)]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
    return done.returncode, done.stderr, time.perf_counter() - start


def main() -> int:
    """Every entry in-process, then the `real` ones as commands, against the Hub at sys.argv[1] that
    serves the tiny default release from the folder sys.argv[2] (its files are the entries' models)."""
    from hub_server import CHECKPOINT

    hub, repo = sys.argv[1], Path(sys.argv[2])
    tiny = {"checkpoint": repo / CHECKPOINT, "text_encoder": repo / "text_encoder"}  # tokenizer/ lies beside
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        fields = {**write_fixtures(Path(tmp), tiny), "hub": hub}
        entries = [b for b in BAD if applies(b)]
        results = [(b, "in-process", run_in_process(b, fields, Path(tmp, "hf", str(i)))) for i, b in enumerate(entries)]
        real = [b for b in entries if b.real]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            ran = pool.map(lambda b: run_command(b, fields), real)
            results += [(b, "command", r) for b, r in zip(real, ran, strict=True)]
    for bad, how, (status, err, seconds) in results:
        found = problems(bad, status, err, seconds)
        failed += bool(found)
        last = err.strip().splitlines()[-1] if err.strip() else "(nothing on stderr)"
        print(f"{'FAIL' if found else 'ok  '} {how:10} {seconds:4.1f} s  exit {status}  {' '.join(bad.args)}")
        print(f"        {last}" + (f"\n        problems: {'; '.join(found)}\n{err}" if found else ""))
    print(f"bad invocations: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
