"""`make demo`, the README's first set-up command, works for every flavor: it exits 0,
says it succeeded, and the daemon it runs neither fails nor warns of the demo's own
ending (the FIFO is closed after the daemon stops).  Not a timing test: the demo waits
for each step with its own generous deadline."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testbed.harness import REPO


@pytest.mark.parametrize("flavor", ["v0", "decision-maker", "manager"])
def test_make_demo_succeeds(flavor: str) -> None:
    out = subprocess.run([sys.executable, "-m", "testbed.demo", "--flavor", flavor],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "==> demo succeeded" in text and "NOT OK" not in text
    # README: it shows what the operator itself read back, at each step with a gNB
    # (the Manager's first step showed none: state.json was not yet rewritten)
    assert text.count("    operator read back: ") == 2, text[-3000:]
    assert "Traceback" not in text and "end of file" not in text
    # the one ERROR the demo shows on purpose: its Decision Maker scans like Gthulhu
    # v1.3.0's (README), and the operator's read-back says so
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert all("matches thread-group leaders only" in line for line in errors), errors
