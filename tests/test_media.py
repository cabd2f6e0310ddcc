"""ltx_core.media: frame/tensor conversions, mp4 round trips, image reading, CRF compression, resize."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from ltx_core.media import (
    compress_like_h264,
    frames_from_video_tensor,
    read_image,
    read_video,
    resize_and_crop,
    video_tensor_from_frames,
    write_mp4,
)

av = pytest.importorskip("av")
Image = pytest.importorskip("PIL.Image")


def moving_gradient(frames: int, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 3) in [0, 1]: a red ramp scrolling 2 px/frame, a vertical green ramp, a blue wave."""
    t = torch.arange(frames).view(frames, 1, 1)
    y = torch.arange(height).view(1, height, 1)
    x = torch.arange(width).view(1, 1, width)
    red = ((x + 2 * t) % width / (width - 1)).expand(frames, height, width)
    green = (y / (height - 1)).expand(frames, height, width)
    blue = 0.5 + 0.4 * torch.sin((x + y + 3 * t) / 9.0)
    return torch.stack([red, green, blue], dim=-1).float()


def probe(path) -> tuple[int, int, int, Fraction, dict[str, str]]:
    """(decoded frame count, height, width, average rate, container tags) read with PyAV directly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, stream.height, stream.width, stream.average_rate, dict(container.metadata)


# --- tensor conversions ---------------------------------------------------------------------


def test_tensor_conversions_are_inverses():
    video = torch.rand(2, 3, 9, 8, 12) * 2 - 1
    frames = frames_from_video_tensor(video)
    assert frames.shape == (2, 9, 8, 12, 3) and frames.dtype == torch.float32
    assert frames.min() >= 0 and frames.max() <= 1
    torch.testing.assert_close(video_tensor_from_frames(frames), video, atol=1e-6, rtol=0)
    single = frames[0]  # t h w c: a batch of one is added
    torch.testing.assert_close(video_tensor_from_frames(single), video[:1], atol=1e-6, rtol=0)


def test_frames_from_video_tensor_clamps_and_checks_shape():
    video = torch.full((1, 3, 1, 2, 2), 3.0)
    assert frames_from_video_tensor(video).max() == 1
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\).*\(1, 4, 1, 2, 2\)"):
        frames_from_video_tensor(torch.zeros(1, 4, 1, 2, 2))
    with pytest.raises(ValueError, match="got shape"):
        video_tensor_from_frames(torch.zeros(2, 4, 4, 4))


# --- mp4 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("crf, bound", [(0, 0.02), (19, 0.03)])
def test_write_mp4_round_trip(tmp_path, crf, bound):
    frames = moving_gradient(17, 64, 96)
    path = write_mp4(tmp_path / "out" / "clip.mp4", frames, 25, crf=crf)
    assert probe(path)[:4] == (17, 64, 96, Fraction(25))
    decoded, fps = read_video(path)
    assert decoded.shape == (17, 64, 96, 3) and decoded.dtype == torch.float32 and fps == 25.0
    # measured: 0.009 at crf 0 (yuv420p chroma subsampling, RGB↔YUV rounding), 0.012 at crf 19
    assert (decoded - frames).abs().mean() < bound


@pytest.mark.parametrize("fps, rate", [(24, Fraction(24)), (30, Fraction(30)), (23.976, Fraction(24000, 1001))])
def test_write_mp4_frame_rates(tmp_path, fps, rate):
    path = write_mp4(tmp_path / "clip.mp4", moving_gradient(9, 32, 32), fps)
    count, _, _, average_rate, _ = probe(path)
    assert (count, average_rate) == (9, rate)
    assert read_video(path)[1] == pytest.approx(float(rate))


def test_write_mp4_metadata_round_trips(tmp_path):
    workflow = '{"nodes": [{"id": 1, "type": "LTXVSampler"}]}'
    path = write_mp4(
        tmp_path / "clip.mp4", moving_gradient(1, 32, 32), 24, metadata={"comment": "hi", "prompt": workflow}
    )
    tags = probe(path)[4]
    assert tags["comment"] == "hi" and tags["prompt"] == workflow


def test_write_mp4_pads_odd_sizes_with_edge_pixels(tmp_path):
    frames = (moving_gradient(3, 33, 47) * 255).round().to(torch.uint8).numpy()  # uint8 input path
    path = write_mp4(tmp_path / "odd.mp4", frames, 24, crf=0)
    assert probe(path)[:3] == (3, 34, 48)
    decoded, _ = read_video(path)
    original = torch.from_numpy(frames).float() / 255
    assert (decoded[:, :33, :47] - original).abs().mean() < 0.02
    assert (decoded[:, 33, :47] - original[:, 32]).abs().mean() < 0.03  # padded row repeats the last one


def test_read_video_max_frames(tmp_path):
    path = write_mp4(tmp_path / "clip.mp4", moving_gradient(9, 32, 32), 24)
    assert read_video(path, max_frames=4)[0].shape == (4, 32, 32, 3)


@pytest.mark.parametrize(
    "frames, fps, message",
    [
        (torch.rand(2, 8, 8, 3), 0, "fps must be a positive number, got 0"),
        (torch.rand(2, 8, 8, 3), -24.0, "fps must be a positive number"),
        (torch.rand(0, 8, 8, 3), 24, r"empty video.*\(0, 8, 8, 3\)"),
        (torch.rand(8, 8, 3), 24, r"expected frames \(T, H, W, 3\), got shape \(8, 8, 3\)"),
        (torch.rand(2, 8, 8, 4), 24, r"got shape \(2, 8, 8, 4\)"),
    ],
)
def test_write_mp4_rejects_bad_input(tmp_path, frames, fps, message):
    with pytest.raises(ValueError, match=message):
        write_mp4(tmp_path / "bad.mp4", frames, fps)


def test_read_errors_name_the_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="junk.mp4"):
        read_video(junk)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    fake_png = tmp_path / "junk.png"
    fake_png.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk.png"):
        read_image(fake_png)


# --- images ---------------------------------------------------------------------------------


def test_read_image_rgba_and_greyscale(tmp_path):
    rgba = np.zeros((5, 7, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10  # red, nearly transparent: alpha is dropped
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert image.shape == (5, 7, 3) and image.dtype == torch.float32
    torch.testing.assert_close(image, torch.tensor([1.0, 0.0, 0.0]).expand(5, 7, 3))

    grey = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    image = read_image(tmp_path / "grey.png")
    assert image.shape == (5, 7, 3)
    torch.testing.assert_close(image, torch.from_numpy(grey).float().div(255)[..., None].expand(5, 7, 3))


# --- conditioning-image preprocessing -------------------------------------------------------


def test_compress_like_h264_changes_a_little():
    image = moving_gradient(1, 64, 96)[0]
    compressed = compress_like_h264(image, 35)
    assert compressed.shape == image.shape and compressed.dtype == torch.float32
    diff = (compressed - image).abs().mean()
    assert 0.001 < diff < 0.05  # measured 0.017
    assert compress_like_h264(image, 0) is image  # crf 0 bypasses


def test_compress_like_h264_batches_and_crops_odd_sizes():
    images = moving_gradient(2, 33, 47)  # used as a batch of 2 images
    compressed = compress_like_h264(images, 29)
    assert compressed.shape == (2, 32, 46, 3)
    assert (compressed - images[:, :32, :46]).abs().mean() < 0.05
    with pytest.raises(ValueError, match="crf must be in 0..51"):
        compress_like_h264(images, 60)


@pytest.mark.parametrize("source, target", [((90, 160), (64, 96)), ((40, 30), (96, 64)), ((64, 96), (64, 96))])
def test_resize_and_crop_keeps_centre(source, target):
    (h, w), (height, width) = source, target
    image = torch.zeros(1, h, w, 3)
    image[:, h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4] = 1  # bright square in the middle
    out = resize_and_crop(image, width, height)
    assert out.shape == (1, height, width, 3)
    weight = out[0, :, :, 0]
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    centre_y, centre_x = (weight * ys).sum() / weight.sum(), (weight * xs).sum() / weight.sum()
    assert abs(centre_y - (height - 1) / 2) < 1.0 and abs(centre_x - (width - 1) / 2) < 1.0


def test_resize_and_crop_rejects_bad_input():
    with pytest.raises(ValueError, match=r"got shape \(8, 8, 3\)"):
        resize_and_crop(torch.zeros(8, 8, 3), 4, 4)
    with pytest.raises(ValueError, match="width 0"):
        resize_and_crop(torch.zeros(1, 8, 8, 3), 0, 4)
