"""Pixel-side helpers: VAE tensors ↔ frames, mp4 and image files, CRF compression, resize-and-crop.

Frames and images are float32 in [0, 1], channels last (ComfyUI's IMAGE layout); the VAE works on
(B, 3, T, H, W) in [-1, 1]. `av` (PyAV, which bundles ffmpeg and x264) and `PIL` are imported
where they are used, so `ltx_core` imports without them.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _import_av() -> Any:
    try:
        import av
    except ImportError as err:
        raise ImportError("reading and writing video needs PyAV: pip install av") from err
    return av


def _import_pil_image() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError as err:
        raise ImportError("reading images needs Pillow: pip install pillow") from err
    return Image, ImageOps


# ---------------------------------------------------------------------------------------------
# VAE tensors ↔ frames


def frames_from_video_tensor(video: torch.Tensor) -> torch.Tensor:
    """VAE output (B, 3, T, H, W) in [-1, 1] → frames (B, T, H, W, 3) float32 in [0, 1] (clamped)."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"expected a video tensor (B, 3, T, H, W), got shape {tuple(video.shape)}")
    frames = video.float().permute(0, 2, 3, 4, 1)  # b c t h w -> b t h w c
    return ((frames + 1) / 2).clamp(0, 1)


def video_tensor_from_frames(frames: torch.Tensor) -> torch.Tensor:
    """Frames (T, H, W, 3) or (B, T, H, W, 3) in [0, 1] → VAE input (B, 3, T, H, W) float32 in [-1, 1]."""
    if frames.ndim == 4:
        frames = frames.unsqueeze(0)  # t h w c -> 1 t h w c
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3) or (B, T, H, W, 3), got shape {tuple(frames.shape)}")
    video = frames.float().permute(0, 4, 1, 2, 3)  # b t h w c -> b c t h w
    return video * 2 - 1


# ---------------------------------------------------------------------------------------------
# mp4 writing


def _fps_fraction(fps: float | Fraction) -> Fraction:
    """fps as an exact rational; NTSC rates (23.976, 29.97, 59.94) become n·1000/1001."""
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}. Use e.g. 24, 25 or 30.")
    if isinstance(fps, Fraction):
        return fps
    ntsc = round(fps * 1.001)
    if abs(fps - ntsc / 1.001) < 1e-3 and abs(fps - ntsc) > 1e-3:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def _to_uint8_frames(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """(T, H, W, 3) float in [0, 1] or uint8 → uint8 numpy (T, H, W, 3); floats are rounded."""
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got shape {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"cannot write an empty video: frames have shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return array
    return (np.clip(array.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) → (T, H + H%2, W + W%2, 3), repeating the last row / column.

    4:2:0 chroma covers 2×2 pixel blocks, so x264 needs even sizes; padding keeps every input pixel.
    """
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(
    path: str | Path,
    frames: torch.Tensor | np.ndarray,
    fps: float | Fraction,
    *,
    crf: int = 19,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write frames (T, H, W, 3), float in [0, 1] or uint8, as an mp4 with exactly T frames.

    fps is stored as a fraction (23.976 → 24000/1001). Odd heights/widths are padded to even by
    repeating the last row/column (yuv420p needs even sizes), so such a file is one pixel larger.
    `crf` is the x264/x265 quality (0 = lossless in YUV, 51 = worst). `metadata` becomes container
    tags readable with `av.open(path).metadata` (any key, e.g. "comment" or "prompt").
    Returns the path written; missing parent folders are created.
    """
    av = _import_av()
    path = Path(path)
    rate = _fps_fraction(fps)
    pixels = _pad_to_even(_to_uint8_frames(frames))
    path.parent.mkdir(parents=True, exist_ok=True)
    # the mp4 muxer only keeps a fixed set of tag names unless asked to keep arbitrary ones
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as container:
        container.metadata.update(metadata or {})
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = pixels.shape[1], pixels.shape[2]
        stream.pix_fmt = pix_fmt
        stream.options = {"crf": str(crf)}
        for index, pixel_frame in enumerate(pixels):
            frame = av.VideoFrame.from_ndarray(pixel_frame, format="rgb24")
            frame.pts = index
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the frames the encoder still holds
    return path


# ---------------------------------------------------------------------------------------------
# reading


def read_video(path: str | Path, *, max_frames: int | None = None) -> tuple[torch.Tensor, float]:
    """Decode the first video stream of `path` → (frames (T, H, W, 3) float32 in [0, 1], fps).

    `max_frames` stops decoding after that many frames.
    """
    av = _import_av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    decoded: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: has no video stream. Give a video file (mp4, webm, mov, …).")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            for frame in container.decode(stream):
                if max_frames is not None and len(decoded) >= max_frames:
                    break
                decoded.append(frame.to_ndarray(format="rgb24"))
    except av.FFmpegError as err:
        raise ValueError(f"{path}: cannot be decoded as video ({err}). Check that it is a valid video file.") from err
    if not decoded:
        raise ValueError(f"{path}: contains no decodable video frames")
    frames = torch.from_numpy(np.stack(decoded)).float() / 255  # t h w c
    return frames, float(rate) if rate else 0.0


def _pil_to_rgb_array(image: Any) -> np.ndarray:
    """PIL image of any mode → (H, W, 3) float32 in [0, 1]; alpha is dropped, greyscale repeated."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit greyscale: keep the full range
        grey = np.asarray(image, dtype=np.float32) / 65535
        return np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


def read_image(path: str | Path) -> torch.Tensor:
    """Read an image file → (H, W, 3) float32 in [0, 1].

    EXIF rotation is applied; RGBA/LA/palette images lose their alpha, greyscale becomes RGB.
    """
    Image, ImageOps = _import_pil_image()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return torch.from_numpy(_pil_to_rgb_array(image).copy())
    except (OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: cannot be decoded as an image ({err}). Give a PNG, JPEG or WebP.") from err


# ---------------------------------------------------------------------------------------------
# conditioning-image preprocessing


def _h264_round_trip(pixels: np.ndarray, crf: int) -> np.ndarray:
    """Encode one uint8 (H, W, 3) frame (even H, W) with libx264 at `crf` and decode it back."""
    av = _import_av()
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.height, stream.width = pixels.shape[0], pixels.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def compress_like_h264(image: torch.Tensor, crf: int) -> torch.Tensor:
    """Give a conditioning image the look of an H.264 video frame, as LTX-Video's preprocessing does.

    image: (H, W, 3) or (B, H, W, 3) float in [0, 1] → same rank, float32 in [0, 1]. Each image is
    cropped to even H and W (like the reference, so the output can be one pixel smaller), rounded to
    uint8, encoded as one libx264 frame (yuv420p, preset veryfast, `crf`) and decoded back.
    crf 0 returns the input unchanged (no crop). Defaults elsewhere: official 29, ComfyUI 35.
    """
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51 (0 = no compression), got {crf}")
    if image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(f"expected an image (H, W, 3) or (B, H, W, 3), got shape {tuple(image.shape)}")
    if crf == 0:
        return image
    batch = image.unsqueeze(0) if image.ndim == 3 else image  # b h w c
    h, w = batch.shape[1] // 2 * 2, batch.shape[2] // 2 * 2
    if h == 0 or w == 0:
        raise ValueError(f"image of shape {tuple(image.shape)} is too small to compress (needs H, W ≥ 2)")
    pixels = (batch[:, :h, :w].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = np.stack([_h264_round_trip(p, crf) for p in pixels])
    result = torch.from_numpy(out).float().div(255).to(image.device)
    return result[0] if image.ndim == 3 else result


def resize_and_crop(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Scale (B, H, W, 3) so it covers width × height (aspect kept), then centre-crop → (B, height, width, 3).

    Bilinear with antialiasing, so downscaling does not alias.
    """
    if image.ndim != 4:
        raise ValueError(f"expected images (B, H, W, C), got shape {tuple(image.shape)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got width {width}, height {height}")
    _, h, w, _ = image.shape
    scale = max(width / w, height / h)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    x = image.float().permute(0, 3, 1, 2)  # b h w c -> b c h w
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    x = x[:, :, top : top + height, left : left + width]
    return x.permute(0, 2, 3, 1).contiguous()  # b c h w -> b h w c
