"""The only file that knows ComfyUI's internals. Every ComfyUI import happens inside a function, so
the nodes import (and tests replace these functions) without ComfyUI.

Memory: each loaded module is wrapped in core's `ModelPatcher` and loaded with `load_models_gpu`
before use, so core's memory manager sees our weights, evicts other models to make room for them,
evicts ours when it needs room, and `/free` releases them. Checked against ComfyUI 0.3.64: a plain
nn.Module works there. The patcher writes `model.device` and bookkeeping attributes onto the module
(T5TextEncoder's read-only `device` property would refuse them), so the module goes inside a small
holder. Loads are full (`force_full_load`): our modules have no per-layer cast hooks, so a partial
load would leave layers on the wrong device; a partial *unload* by core between prompts is undone by
the next full load. In the low_vram memory mode a module with blocks to stream (the transformer, T5) is
not loaded at all: it stays in pinned CPU memory, core only frees room for the visiting blocks and the
activations, and the node streams the blocks (ltx_core.memory.placed).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

MODEL_EXTENSIONS = (".safetensors", ".sft", ".gguf")  # plus folders holding a config.json (diffusers/transformers)
LATENT_RGB_CHANNELS = 128  # core's LTXV preview factors are for the released 128-channel latents
LOW_VRAM_RESERVE = 3 * 2**30  # bytes core frees on the GPU for streamed blocks and activations
BUNDLED_TOKENIZER = "comfy/text_encoders/t5_tokenizer/tokenizer.json"  # ships with ComfyUI, for its T5 encoders


class _Holder(nn.Module):
    """Carries the attributes ModelPatcher writes, so the held module keeps its own."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.held = module


class Managed:
    """A module under core's memory manager. `load()` puts it on its device and returns that device."""

    def __init__(self, module: nn.Module, device: str, role: str, memory: str = "default") -> None:
        import comfy.model_management as mm
        import comfy.model_patcher

        roles = {
            "diffusion": (mm.get_torch_device, mm.unet_offload_device),
            "vae": (mm.vae_device, mm.vae_offload_device),
            "text_encoder": (mm.text_encoder_device, mm.text_encoder_offload_device),
        }
        load, offload = roles[role]
        load_device = torch.device("cpu") if device == "cpu" else load()
        self.module = module.to(offload())
        self.memory = memory  # the loader's memory mode
        holder = type(f"LTXPack{type(module).__name__}", (_Holder,), {})(module)  # named so in core's log
        self.patcher = comfy.model_patcher.ModelPatcher(holder, load_device, offload())

    def load(self, memory: str | None = None) -> torch.device:
        """Ready the module on its device in `memory` mode (default: the loader's); returns the device."""
        import comfy.model_management as mm

        device = self.patcher.load_device
        if (memory or self.memory) == "low_vram" and device.type != "cpu" and hasattr(self.module, "streamed_blocks"):
            self._unload()
            mm.free_memory(LOW_VRAM_RESERVE, device)
            return device
        mm.load_models_gpu([self.patcher], force_full_load=True)
        return device

    def _unload(self) -> None:
        """Take the module off the GPU if core holds it there (loaded earlier in default mode)."""
        import comfy.model_management as mm

        for i, loaded in enumerate(mm.current_loaded_models):
            if loaded.model is self.patcher:
                mm.current_loaded_models.pop(i).model_unload()
                return


def manage(module: nn.Module, device: str, role: str, memory: str = "default") -> Managed:
    return Managed(module, device, role, memory)


def _folder_paths() -> Any:
    import folder_paths

    return folder_paths


def list_models(folders: Sequence[str]) -> list[str]:
    """Model files (and model folders) under ComfyUI's `folders`, as paths relative to their folder."""
    names: list[str] = []
    for folder in folders:
        for root in _folder_paths().get_folder_paths(folder):
            for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
                base = Path(dirpath)
                if "config.json" in filenames and base != Path(root):
                    names.append(base.relative_to(root).as_posix())
                    dirnames.clear()  # a model folder: list it, not its shards
                    continue
                names += [(base / f).relative_to(root).as_posix() for f in filenames if f.endswith(MODEL_EXTENSIONS)]
    return sorted(dict.fromkeys(names))


def model_path(folders: Sequence[str], name: str) -> Path:
    """The file or folder `name` under the first of ComfyUI's `folders` that has it."""
    roots = [Path(root) for folder in folders for root in _folder_paths().get_folder_paths(folder)]
    for root in roots:
        if (root / name).exists():
            return root / name
    raise ValueError(
        f"{name} was not found in {' or '.join(f'models/{f}' for f in folders)} (looked in "
        f"{', '.join(map(str, roots))}); put the file there, or choose another (press r to refresh the lists)."
    )


def default_tokenizer() -> Path | None:
    """ComfyUI's bundled T5 tokenizer (the one core's own T5 encoders use), for T5 files that come
    without one; None if this ComfyUI lacks it. `comfy` and `comfy.text_encoders` have no __init__.py:
    namespace packages, whose __file__ is None; their __path__ lists the folder either way."""
    import comfy.text_encoders

    for folder in comfy.text_encoders.__path__:
        file = Path(folder, "t5_tokenizer", "tokenizer.json")  # BUNDLED_TOKENIZER
        if file.is_file():
            return file
    return None


def check_interrupt() -> None:
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def step_callback(total: int, channels: int) -> Callable[[int, int, torch.Tensor], None]:
    """on_step for the sampler: ComfyUI's progress bar with a latent preview, and cancellation."""
    import comfy.latent_formats
    import comfy.model_management
    import comfy.utils
    import latent_preview

    device = comfy.model_management.get_torch_device()
    fmt = comfy.latent_formats.LTXV()
    previewer = latent_preview.get_previewer(device, fmt) if channels == LATENT_RGB_CHANNELS else None
    bar = comfy.utils.ProgressBar(total)

    def on_step(step: int, steps: int, denoised: torch.Tensor) -> None:
        check_interrupt()
        preview = previewer.decode_latent_to_preview_image("JPEG", denoised) if previewer else None
        bar.update_absolute(step + 1, steps, preview)

    return on_step


@contextlib.contextmanager
def interruptible(module: nn.Module) -> Iterator[None]:
    """Check for cancellation before every submodule call of `module` (e.g. inside long VAE decodes)."""
    hooks = [m.register_forward_pre_hook(lambda *_: check_interrupt()) for m in module.modules()]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def save_path(prefix: str, width: int, height: int, extension: str) -> tuple[Path, str, str]:
    """The next free `<output>/<subfolder>/<name>_00001_.<ext>` → (path, file name, subfolder)."""
    paths = _folder_paths()
    folder, name, counter, subfolder, _ = paths.get_save_image_path(prefix, paths.get_output_directory(), width, height)
    file = f"{name}_{counter:05}_.{extension}"
    return Path(folder) / file, file, subfolder


def video_metadata(prompt: dict | None, extra_pnginfo: dict | None) -> dict[str, str]:
    """Container tags as core's SaveVideo writes them (the frontend reads the workflow back from them)."""
    from comfy.cli_args import args

    if args.disable_metadata:
        return {}
    tags = {key: json.dumps(value) for key, value in (extra_pnginfo or {}).items()}
    if prompt is not None:
        tags["prompt"] = json.dumps(prompt)
    return tags


def video_from_file(path: Path) -> Any:
    """Core's VIDEO object for an mp4, for core's video nodes downstream."""
    from comfy_api.latest import InputImpl

    return InputImpl.VideoFromFile(str(path))
