"""Shared test setup.

Parity tests carry the `parity` marker, real-ComfyUI tests the `comfyui` marker. With
LTX_REQUIRE_ORACLES=1 (set by CI) a skipped parity test is reported as a failure, and with
LTX_REQUIRE_COMFYUI=1 (set by CI) a skipped real-ComfyUI test is, so a missing reference package or
a missing ComfyUI can never pass silently.
"""

from __future__ import annotations

import os

import pytest

REQUIRED_MARKERS = {
    "parity": os.environ.get("LTX_REQUIRE_ORACLES") == "1",
    "comfyui": os.environ.get("LTX_REQUIRE_COMFYUI") == "1",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        for marker, required in REQUIRED_MARKERS.items():
            if required and item.get_closest_marker(marker) is not None:
                report.outcome = "failed"
                report.longrepr = f"{marker} test skipped, but CI requires it: {report.longrepr}"


@pytest.fixture(scope="session")
def comfy_root(tmp_path_factory):
    """A ComfyUI base folder with the tiny model files under models/ and the workflows' images and
    video under input/, written once for the whole run."""
    from tiny_comfy import write_bundled_tokenizer, write_comfy_models, write_input_images, write_input_video

    root = tmp_path_factory.mktemp("comfy")
    write_comfy_models(root / "models")
    write_input_images(root / "input")
    write_input_video(root / "input")
    write_bundled_tokenizer(root / "bundled_tokenizer")
    return root


@pytest.fixture
def comfy(monkeypatch, comfy_root, tmp_path):
    """The fake ComfyUI modules installed over `comfy_root`, writing outputs to a fresh folder."""
    from comfy_fake import install

    fake = install(monkeypatch, comfy_root)
    fake.output = tmp_path / "output"
    fake.tokenizer = comfy_root / "bundled_tokenizer" / "spiece.model"
    return fake


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """A real ComfyUI server (see comfy_server.py) over a base folder holding the pack, the test nodes,
    the input images and video, and two sets of tiny model files: written by the pack's tests under the
    names the workflows use, and written with ComfyUI's own model classes under models/*/comfy_written/.
    The T5 files lie alone in models/text_encoders, as a user puts them (no tokenizer beside them)."""
    from comfy_server import COMFYUI, SKIP_REASON, Server, prepare_base
    from tiny_comfy import write_comfy_models, write_input_images, write_input_video

    if not COMFYUI:
        pytest.skip(SKIP_REASON)
    base = prepare_base(tmp_path_factory.mktemp("comfy_base"))
    write_comfy_models(base / "models")
    write_input_images(base / "input")
    write_input_video(base / "input")
    from comfy_written import write_with_comfy_classes

    write_with_comfy_classes(base / "models")
    server = Server(base)
    yield server
    server.stop()
