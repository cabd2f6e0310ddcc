"""Shared test setup.

Parity tests carry the `parity` marker. With LTX_REQUIRE_ORACLES=1 (set by CI) a skipped parity
test is reported as a failure, so a missing reference package can never pass silently.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ORACLES = os.environ.get("LTX_REQUIRE_ORACLES") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ORACLES and report.skipped and item.get_closest_marker("parity") is not None:
        report.outcome = "failed"
        report.longrepr = f"parity test skipped but LTX_REQUIRE_ORACLES=1: {report.longrepr}"


@pytest.fixture(scope="session")
def comfy_root(tmp_path_factory):
    """A ComfyUI base folder with the tiny model files under models/ and the workflows' images under
    input/, written once for the whole run."""
    from tiny_comfy import write_comfy_models, write_input_images

    root = tmp_path_factory.mktemp("comfy")
    write_comfy_models(root / "models")
    write_input_images(root / "input")
    return root


@pytest.fixture
def comfy(monkeypatch, comfy_root, tmp_path):
    """The fake ComfyUI modules installed over `comfy_root`, writing outputs to a fresh folder."""
    from comfy_fake import install

    fake = install(monkeypatch, comfy_root)
    fake.output = tmp_path / "output"
    return fake
