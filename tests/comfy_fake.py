"""A stand-in for ComfyUI's services: the pack's `comfy_bridge` functions replaced by plain ones
over temporary folders, a progress log, an interrupt flag and an output folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from workflows.build import import_pack

FOLDERS = ("checkpoints", "diffusion_models", "vae", "text_encoders", "upscale_models", "loras")
# what ComfyUI 0.3.64 lacks and the pack registers (comfy_bridge.NEWER_FOLDERS)
NEWER_FOLDERS = ("latent_upscale_models",)


class Interrupted(Exception):
    """What ComfyUI's InterruptProcessingException is to the nodes."""


@dataclass
class FakeManaged:
    module: torch.nn.Module
    device: str
    memory: str = "default"
    loads: list[str | None] = field(default_factory=list)  # the memory mode asked for by each load
    activations: list[int] = field(default_factory=list)  # the room asked for by each load, besides weights

    def load(self, memory: str | None = None, activations: int = 0) -> torch.device:
        self.loads.append(memory)
        self.activations.append(activations)
        return torch.device("cpu")


@dataclass
class FakeComfy:
    models: Path
    output: Path
    input: Path
    progress: list[tuple[int, int]] = field(default_factory=list)
    interrupt_after: int | None = None  # raise at the n-th interrupt check
    checks: int = 0
    tokenizer: Path | None = None  # ComfyUI's bundled T5 tokenizer (None: this ComfyUI lacks it)

    def check_interrupt(self) -> None:
        self.checks += 1
        if self.interrupt_after is not None and self.checks >= self.interrupt_after:
            raise Interrupted


def install(monkeypatch: pytest.MonkeyPatch, root: Path) -> FakeComfy:
    """Replace the bridge's functions; the real `list_models` / `model_path` run over fake folder_paths."""
    fake = FakeComfy(root / "models", root / "output", root / "input")
    bridge = import_pack().nodes.comfy_bridge

    class FolderPaths:
        """folder_paths' listing: registered (roots, extensions), files below the roots, relative paths."""

        folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
        models_dir = str(fake.models)
        supported_pt_extensions = {".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt"}

        @staticmethod
        def get_folder_paths(name: str) -> list[str]:
            if name in NEWER_FOLDERS:  # KeyError for a folder not registered, as folder_paths
                return list(FolderPaths.folder_names_and_paths[name][0])
            return [str(fake.models / name)] if name in FOLDERS else []

        @staticmethod
        def add_model_folder_path(name: str, path: str) -> None:
            FolderPaths.folder_names_and_paths[name][0].append(path)

        @staticmethod
        def get_filename_list(name: str) -> list[str]:
            roots, extensions = FolderPaths.folder_names_and_paths[name]
            files = {
                str(path.relative_to(root))
                for root in map(Path, roots)
                if root.is_dir()
                for path in root.rglob("*")
                if path.is_file() and path.suffix.lower() in extensions
            }
            return sorted(files)

    counters: dict[str, int] = {}

    def save_path(prefix: str, width: int, height: int, extension: str):
        counters[prefix] = counters.get(prefix, 0) + 1
        sub, _, name = prefix.rpartition("/")
        file = f"{name}_{counters[prefix]:05}_.{extension}"
        return fake.output / sub / file, file, sub

    def step_callback(total: int, channels: int):
        return lambda step, steps, denoised: (fake.check_interrupt(), fake.progress.append((step + 1, steps)))

    def video_metadata(prompt, extra_pnginfo):
        tags = {k: json.dumps(v) for k, v in (extra_pnginfo or {}).items()}
        return {**tags, "prompt": json.dumps(prompt)} if prompt is not None else tags

    monkeypatch.setattr(bridge, "_folder_paths", lambda: FolderPaths)
    monkeypatch.setattr(
        bridge, "manage", lambda module, device, role, memory="default": FakeManaged(module, device, memory)
    )
    monkeypatch.setattr(bridge, "default_tokenizer", lambda: fake.tokenizer)
    monkeypatch.setattr(bridge, "check_interrupt", fake.check_interrupt)
    monkeypatch.setattr(bridge, "step_callback", step_callback)
    monkeypatch.setattr(bridge, "save_path", save_path)
    monkeypatch.setattr(bridge, "video_metadata", video_metadata)
    monkeypatch.setattr(bridge, "video_from_file", lambda path: Path(path))
    return fake
