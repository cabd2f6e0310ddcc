"""Frames → an H.264 mp4 in ComfyUI's output folder, with the workflow embedded, shown in the UI."""

from __future__ import annotations

import torch

from ..ltx_core.media import write_mp4
from . import comfy_bridge as bridge
from .types import CATEGORY


class LTXPackSaveVideo:
    DESCRIPTION = "Saves frames as an mp4 (H.264) in ComfyUI's output folder, with the workflow as metadata."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("VIDEO",)
    OUTPUT_TOOLTIPS = ("The saved video, for ComfyUI's video nodes.",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames, in order (from the LTX VAE decode node)."}),
                "frame_rate": (
                    "FLOAT",
                    {
                        "default": 25.0,
                        "min": 1.0,
                        "max": 120.0,
                        "step": 0.01,
                        "tooltip": "Frames per second of the file; match the sampler's frame rate.",
                    },
                ),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "LTXVideo",
                        "tooltip": "File name start; may contain "
                        "sub-folders (video/ltx) and ComfyUI's %date:yyyy-MM-dd% tokens.",
                    },
                ),
                "crf": (
                    "INT",
                    {
                        "default": 19,
                        "min": 0,
                        "max": 51,
                        "tooltip": "H.264 quality: 0 lossless, 19 "
                        "visually clean, 51 worst; lower values make larger files.",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(
        self, images: torch.Tensor, frame_rate: float, filename_prefix: str, crf: int, prompt=None, extra_pnginfo=None
    ) -> dict:
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images of shape {tuple(images.shape)}: expected frames (count, height, width, 3)")
        height, width = images.shape[1:3]
        path, file, subfolder = bridge.save_path(filename_prefix, width, height, "mp4")
        metadata = bridge.video_metadata(prompt, extra_pnginfo)
        write_mp4(path, images[..., :3], frame_rate, crf=crf, metadata=metadata)
        preview = {"filename": file, "subfolder": subfolder, "type": "output"}
        return {"ui": {"images": [preview], "animated": (True,)}, "result": (bridge.video_from_file(path),)}
