"""Compatibility checks: library version matrices and the minimum Python."""

from __future__ import annotations

import os
from typing import List

import pytest

# Lines printed at the end of the run (installed versions per matrix entry).
FINDINGS: List[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # also in pyproject.toml; repeated here so this folder runs on its own
    config.addinivalue_line("markers", "compat: library version matrices and the minimum "
                                       "Python check (slow: builds cached venvs)")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FINDINGS:
        terminalreporter.section("compatibility: what was tested")
        for line in FINDINGS:
            terminalreporter.write_line(line)


def missing(reason: str) -> None:
    """A missing tool or interpreter skips on a developer's machine, but fails in
    CI (CI=true): there the check is the point."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: this check must run in CI)")
    pytest.skip(reason)
