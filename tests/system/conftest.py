"""The .deb, built once per test session, for every suite's container."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from tests.system.container import why_unavailable

REPO = Path(__file__).resolve().parent.parent.parent

# What the walks measured, printed at the end of the run: suite -> lines.
FINDINGS: Dict[str, List[str]] = {}


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = why_unavailable(None)
    if why:
        pytest.skip(f"system tests: {why}")
    for tool in ("dpkg-buildpackage", "lintian"):
        if shutil.which(tool, path="/usr/bin:/usr/sbin:/bin") is None and os.geteuid() != 0:
            pytest.skip(f"system tests: {tool} missing and not root to install it")
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run([str(REPO / "packaging" / "build-deb"), str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    debs = list(out.glob("gtp5g-operator_*_all.deb"))
    assert len(debs) == 1
    lintian = [ln for ln in r.stdout.splitlines() if ln[:2] in ("E:", "W:")]
    assert lintian == [], lintian
    return debs[0]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FINDINGS:
        terminalreporter.section("packaged service: measured per suite")
        for suite, lines in FINDINGS.items():
            for line in lines:
                terminalreporter.write_line(f"{suite}: {line}")
