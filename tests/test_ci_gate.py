"""With LTX_REQUIRE_ORACLES=1 a skipped parity test fails the run; without it, it is only skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

SKIPPING_PARITY_TEST = """
import pytest

@pytest.mark.parity
def test_needs_a_missing_reference():
    pytest.importorskip("a_reference_package_that_is_not_installed")
"""


@pytest.mark.parametrize(("require", "failed", "skipped"), [("1", 1, 0), ("", 0, 1)])
def test_skipped_parity_test_fails_when_oracles_are_required(pytester, monkeypatch, require, failed, skipped):
    monkeypatch.setenv("LTX_REQUIRE_ORACLES", require)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(SKIPPING_PARITY_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "markers=parity")
    result.assert_outcomes(failed=failed, skipped=skipped)
