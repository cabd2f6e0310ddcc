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
