"""Video extension helpers (overlap selection, the condition, joining), and the pipeline's keyframe and
extension entry points on tiny 0.9.5-layout and 0.9.1-layout checkpoints."""

from __future__ import annotations

import pytest
import torch

from ltx_core.extension import extension_condition, join_frames, join_latents, overlap_frames, overlap_latents
from ltx_core.pipeline import Keyframe, Models, Settings, extend_video, keyframes_to_video
from ltx_core.types import latent_frames
from tiny import write_tiny_checkpoints


def _frames(count: int) -> torch.Tensor:
    return torch.arange(count, dtype=torch.float32)[:, None, None, None].expand(count, 2, 2, 3)


def test_overlap_and_join_frames():
    old = _frames(25)
    assert overlap_frames(old, 9, "forward")[:, 0, 0, 0].tolist() == list(range(16, 25))
    assert overlap_frames(old, 9, "backward")[:, 0, 0, 0].tolist() == list(range(9))
    new = _frames(33) + 100
    forward = join_frames(old, new, 9, "forward")
    assert forward.shape[0] == 25 + 33 - 9 and torch.equal(forward[:25], old) and forward[25, 0, 0, 0] == 109
    backward = join_frames(old, new, 9, "backward")
    assert backward.shape[0] == 49 and torch.equal(backward[24:], old) and backward[23, 0, 0, 0] == 123
    with pytest.raises(ValueError, match=r"1 \+ 8·k frames"):
        overlap_frames(old, 8)
    with pytest.raises(ValueError, match="at least that many frames, got 25"):
        overlap_frames(old, 33)
    with pytest.raises(ValueError, match="direction must be one of forward, backward"):
        overlap_frames(old, 9, "sideways")


def test_extension_condition_and_latent_join():
    old = torch.randn(1, 4, 4, 1, 2)  # 25 frames
    shared = overlap_latents(old, 9, "forward")
    assert torch.equal(shared, old[:, :, -2:]) and torch.equal(overlap_latents(old, 9, "backward"), old[:, :, :2])
    assert extension_condition(shared, 33, "forward").frame == 0
    assert extension_condition(shared, 33, "backward", 0.5).frame == 24
    new = torch.randn(1, 4, 5, 1, 2)  # 33 frames
    for direction in ("forward", "backward"):
        joined = join_latents(old, new, 9, direction)
        assert joined.shape[2] == latent_frames(25 + 33 - 9)
    assert torch.equal(join_latents(old, new, 9, "forward"), torch.cat([old, new[:, :, 2:]], dim=2))
    assert torch.equal(join_latents(old, new, 9, "backward"), torch.cat([new[:, :, :4], old[:, :, 1:]], dim=2))


SMALL = Settings(width=64, height=96, frames=17, steps=2, device="cpu")


@pytest.fixture(scope="module")
def models_095(tmp_path_factory):
    files = write_tiny_checkpoints(tmp_path_factory.mktemp("models095"), layout="0.9.5")
    models = Models.load(files["checkpoint"], files["text_encoder"], dtype=torch.float32)
    assert models.release.name == "0.9.5" and models.release.alike == ("0.9.6-dev",)
    return models


def test_keyframes_and_extension_run_with_the_appended_layout(models_095, monkeypatch):
    from ltx_core import pipeline

    seen = []
    original = pipeline.sample

    def spy(*args, **kwargs):
        seen.append(
            (kwargs["layout"], kwargs["cond_noise_scale"], [(c.frame, c.strength) for c in kwargs["conditions"]])
        )
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "sample", spy)
    image, clip = torch.rand(40, 30, 3), torch.rand(9, 96, 64, 3)
    keys = [Keyframe(image, 0), Keyframe(image, 5, 0.5), Keyframe(clip, -9), Keyframe(image, -1)]
    frames = keyframes_to_video(models_095, keys, "a red fox", settings=SMALL)
    assert frames.shape == (1, 17, 96, 64, 3)
    assert seen[-1] == ("appended", 0.15, [(0, 1.0), (5, 0.5), (8, 1.0), (16, 1.0)])

    old = torch.rand(25, 96, 64, 3)
    forward = extend_video(models_095, old, "a red fox", settings=SMALL, overlap=9)
    assert forward.shape == (1, 25 + 17 - 9, 96, 64, 3) and torch.equal(forward[0, :25], old)
    backward = extend_video(models_095, old, "a red fox", settings=SMALL, overlap=9, direction="backward")
    assert backward.shape == (1, 33, 96, 64, 3) and torch.equal(backward[0, 8:], old)
    assert seen[-1][2] == [(8, 1.0)]  # the first 9 old frames end the new 17-frame video


def test_in_place_releases_refuse_keyframes_between_latent_frames(tmp_path):
    files = write_tiny_checkpoints(tmp_path, layout="0.9.1")
    models = Models.load(files["checkpoint"], files["text_encoder"], dtype=torch.float32)
    with pytest.raises(ValueError, match="a condition can start at frame 0 or a multiple of 8, got 5: use 0 or 8"):
        keyframes_to_video(models, [Keyframe(torch.rand(30, 30, 3), 5)], "a red fox", settings=SMALL)
