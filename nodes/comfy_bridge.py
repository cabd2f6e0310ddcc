"""The only file that knows ComfyUI's internals. Every ComfyUI import happens inside a function, so
the nodes import (and tests replace these functions) without ComfyUI.

Memory: each loaded module is wrapped in core's `ModelPatcher` and loaded with `load_models_gpu`
before use, so core's memory manager sees our weights, evicts other models to make room for them,
evicts ours when it needs room, and `/free` releases them. Checked against ComfyUI 0.3.64: a plain
nn.Module works there. The patcher writes `model.device` and bookkeeping attributes onto the module
(T5TextEncoder's read-only `device` property would refuse them), so the module goes inside a small
holder.

Sizes: core measures a model by its state dict (`module_size`), which misses non-persistent buffers:
a GGUF model's quantized weights, and would make it look nearly empty. The patcher is given the bytes
the module really holds (`module_bytes`), measured again at each load (a sampler's LoRA stack adds its
factors, non-persistent buffers too). Loads are whole (`force_full_load`) and so are unloads (the
patcher's `partially_unload` unloads all): our modules have no per-layer cast hooks, so a partly
loaded module would have layers on the wrong device, and core would count only the layers it
measures as freed.

low_vram: a module with blocks to stream (the transformer, T5) is not loaded; it stays in CPU memory
(page-locked while ComfyUI keeps it "loaded"), core frees room on the GPU for what streaming puts
there (`streamed_room`), and the node streams the blocks (ltx_core.memory.placed). The module is
entered in core's list of loaded models all the same, holding no GPU memory, so that core's unloads
(`/free`, *Unload models*, making room for another model) release its page-locked copy.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import Any

import torch
from torch import nn

from ..ltx_core.memory import module_bytes, release, streams
from ..ltx_core.streaming import device_weight_bytes

# What the loaders list: model files, and config.json, which marks a model folder (diffusers/transformers)
LISTED_EXTENSIONS = {".safetensors", ".sft", ".gguf", ".json"}
LISTING_PREFIX = "ltx_pack_"  # our entries in folder_paths (core's model browser shows them too)
LATENT_RGB_CHANNELS = 128  # core's LTXV preview factors are for the released 128-channel latents
BUNDLED_TOKENIZER = "comfy/text_encoders/t5_tokenizer/tokenizer.json"  # ships with ComfyUI, for its T5 encoders
# Model folders of later ComfyUI versions that 0.3.64 lacks, registered by us where missing: name → its
# place under models/. Newer core keeps the latent upscalers (its LatentUpscaleModelLoader) in
# models/latent_upscale_models, where Lightricks' ComfyUI-LTXVideo pack now tells users to put them too.
NEWER_FOLDERS = {"latent_upscale_models": "latent_upscale_models"}


class _Holder(nn.Module):
    """Carries the attributes ModelPatcher writes, so the held module keeps its own."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.held = module


@functools.cache
def _patcher_class() -> type:
    """Core's ModelPatcher, unloading our modules whole and releasing what streaming holds."""
    import comfy.model_patcher

    class LTXPackPatcher(comfy.model_patcher.ModelPatcher):
        def partially_unload(self, device_to: torch.device, memory_to_free: int = 0) -> int:
            freed = self.loaded_size()
            self.detach()
            return freed

        def detach(self, unpatch_all: bool = True) -> nn.Module:
            release(self.model.held)
            return super().detach(unpatch_all)

    return LTXPackPatcher


def streamed_room(module: nn.Module, activations: int) -> int:
    """Bytes the GPU needs for `module` with its blocks streamed: its other weights, the device slots
    of the blocks in flight (`device_weight_bytes`), and `activations`."""
    return device_weight_bytes(module, module.streamed_blocks) + activations


class Managed:
    """A module under core's memory manager. `load()` puts it on its device and returns that device."""

    def __init__(self, module: nn.Module, device: str, role: str, memory: str = "default") -> None:
        import comfy.model_management as mm

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
        self.patcher = _patcher_class()(holder, load_device, offload(), size=module_bytes(module))

    def load(self, memory: str | None = None, activations: int = 0) -> torch.device:
        """Ready the module on its device in `memory` mode (default: the loader's), with room for
        `activations` bytes besides its weights; returns the device."""
        import comfy.model_management as mm

        device = self.patcher.load_device
        self.patcher.size = module_bytes(self.module)  # LoRA factors come and go with the sampler's stack
        if streams(self.module, device, memory or self.memory):
            self._load_streamed(activations)
        else:
            release(self.module)  # an earlier streamed use's packed copy must not stay beside the moved one
            mm.load_models_gpu([self.patcher], memory_required=activations, force_full_load=True)
        return device

    def _load_streamed(self, activations: int) -> None:
        """Make room for streaming and enter the module in core's list of loaded models (see above)."""
        import comfy.model_management as mm

        entry = next((m for m in mm.current_loaded_models if m.model is self.patcher), None)
        if entry is not None and self.patcher.loaded_size() > 0:  # loaded whole by an earlier default-mode use
            self.patcher.detach()
        device = self.patcher.load_device
        if device.type != "cpu":
            room = streamed_room(self.module, activations) + mm.extra_reserved_memory()
            mm.free_memory(room, device, keep_loaded=[entry] if entry is not None else [])
        if entry is None:  # what load_models_gpu records, without moving anything
            entry = mm.LoadedModel(self.patcher)
            entry.real_model = weakref.ref(self.patcher.model)
            entry.model_finalizer = weakref.finalize(self.patcher.model, mm.cleanup_models)
            mm.current_loaded_models.insert(0, entry)
        entry.currently_used = True


def manage(module: nn.Module, device: str, role: str, memory: str = "default") -> Managed:
    return Managed(module, device, role, memory)


def _folder_paths() -> Any:
    import folder_paths

    return folder_paths


def _roots(folders: Sequence[str]) -> list[str]:
    """The directories of ComfyUI's `folders`, registering those of NEWER_FOLDERS that it lacks."""
    paths = _folder_paths()
    for folder in folders:
        if folder in NEWER_FOLDERS:
            default = os.path.join(paths.models_dir, NEWER_FOLDERS[folder])
            if folder not in paths.folder_names_and_paths:
                paths.folder_names_and_paths[folder] = ([default], set(paths.supported_pt_extensions))
            elif default not in paths.get_folder_paths(folder):  # made by extra_model_paths.yaml entries only
                paths.add_model_folder_path(folder, default)
    return [root for folder in folders for root in paths.get_folder_paths(folder)]


def list_models(folders: Sequence[str]) -> list[str]:
    """Model files (and model folders) under ComfyUI's `folders`, as paths relative to their folder.

    Read from ComfyUI's cached file lists (`get_filename_list`, which re-reads a folder only when the
    modification time of a directory under it changed), through an entry of our own in folder_paths
    over the same directories with our extensions: core's entries do not list .gguf or config.json."""
    paths = _folder_paths()
    key = LISTING_PREFIX + "_".join(folders)
    roots = _roots(folders)
    paths.folder_names_and_paths[key] = (roots, LISTED_EXTENSIONS)  # refreshed: other packs may add roots
    return _models_in(paths.get_filename_list(key))


def _models_in(files: list[str]) -> list[str]:
    """Listed files → what a loader can read: model files, and model folders (a folder below a root
    that holds a config.json) instead of the files inside them."""
    paths = {f: PurePath(f) for f in files}
    folders = {p.parent for p in paths.values() if p.name == "config.json" and p.parent != PurePath(".")}
    outermost = [f for f in folders if not any(parent in folders for parent in f.parents)]
    loose = [f for f, p in paths.items() if p.suffix != ".json" and not any(q in folders for q in p.parents)]
    return sorted({*map(str, outermost), *loose})


def model_path(folders: Sequence[str], name: str) -> Path:
    """The file or folder `name` under the first of ComfyUI's `folders` that has it."""
    roots = [Path(root) for root in _roots(folders)]
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
