"""The pipeline and the command-line generator end to end on tiny checkpoints: an mp4 comes out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ltx_core.generate import main
from ltx_core.media import read_video
from ltx_core.pipeline import Models, Settings, image_to_video, text_to_video, video_to_video
from tiny import write_tiny_checkpoints

SMALL = Settings(width=64, height=96, frames=9, steps=2, device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_tiny_checkpoints(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def models(files):
    return Models.load(files["checkpoint"], files["text_encoder"], dtype=torch.float32)


def test_text_to_video_is_seeded(models):
    assert models.release == "0.9.1"
    first = text_to_video(models, "a red fox", settings=SMALL)
    assert first.shape == (1, 9, 96, 64, 3) and first.dtype == torch.float32
    assert 0 <= first.min() and first.max() <= 1 and first.std() > 0.01
    assert torch.equal(first, text_to_video(models, "a red fox", settings=SMALL))
    other = text_to_video(models, "a red fox", settings=Settings(**{**SMALL.__dict__, "seed": 1}))
    assert not torch.equal(first, other)


def test_image_and_video_to_video_run(models):
    image = torch.rand(50, 70, 3, generator=torch.Generator().manual_seed(0))
    frames = image_to_video(models, image, "a red fox", settings=SMALL, strength=1.0)
    assert frames.shape == (1, 9, 96, 64, 3)
    again = video_to_video(models, frames[0], "a red fox", settings=SMALL, denoise=0.5)
    assert again.shape == frames.shape
    with pytest.raises(ValueError, match="expected \\(frames, height, width, 3\\) with 9 frames"):
        video_to_video(models, frames[0, :5], "a red fox", settings=SMALL)


def test_bad_settings_are_explained(models):
    with pytest.raises(ValueError, match="use 9 or 17"):
        text_to_video(models, "x", settings=Settings(width=64, height=96, frames=10, steps=1, device="cpu"))
    with pytest.raises(ValueError, match="use 64 or 96"):
        text_to_video(models, "x", settings=Settings(width=70, height=96, frames=9, steps=1, device="cpu"))


def test_command_line_writes_an_mp4(files, tmp_path, capsys):
    out = tmp_path / "fox.mp4"
    common = ["--checkpoint", str(files["checkpoint"]), "--text-encoder", str(files["text_encoder"])]
    size = ["--width", "64", "--height", "96", "--frames", "17", "--steps", "2", "--device", "cpu"]
    assert main(["--prompt", "a red fox", *common, *size, "--dtype", "fp32", "--output", str(out)]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (17, 96, 64, 3) and fps == pytest.approx(25.0)
    assert "sampling 2/2" in capsys.readouterr().err

    image = tmp_path / "start.png"
    Image.fromarray((np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)).save(image)
    out_i2v = tmp_path / "i2v.mp4"
    args = [
        "--prompt",
        "a fox",
        *common,
        *size,
        "--image",
        str(image),
        "--memory",
        "low_vram",
        "--output",
        str(out_i2v),
    ]
    assert main(args) == 0
    assert read_video(out_i2v)[0].shape == (17, 96, 64, 3)


def test_command_line_without_weights_says_what_to_get(tmp_path, capsys):
    assert main(["--prompt", "a red fox", "--checkpoint", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "--text-encoder" in err and "nope.safetensors" in err
    assert "ltx-video-2b-v0.9.1.safetensors" in err and "t5xxl_fp16.safetensors" in err


def test_command_line_reports_bad_settings(files, capsys):
    common = ["--checkpoint", str(files["checkpoint"]), "--text-encoder", str(files["text_encoder"])]
    assert main(["--prompt", "x", *common, "--width", "64", "--height", "96", "--frames", "12"]) == 1
    assert "use 9 or 17" in capsys.readouterr().err


def test_on_device_visits_and_returns_without_copying_back(monkeypatch):
    from ltx_core import memory

    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    pointers = lambda: [t.data_ptr() for t in (*module.parameters(), *module.buffers())]  # noqa: E731
    home = pointers()
    with memory.on_device(module, "cpu"):  # already there: untouched
        assert pointers() == home
    monkeypatch.setattr(memory, "same_device", lambda a, b: False)  # pretend the CPU is elsewhere
    with memory.on_device(module, "cpu"):  # every parameter and buffer visits as a copy
        assert all(a != b for a, b in zip(pointers(), home, strict=True))
    assert pointers() == home  # and points back at the same home copies afterwards
    monkeypatch.undo()
    assert memory.same_device("cpu", torch.device("cpu"))
    assert not memory.same_device("cpu", "meta")
