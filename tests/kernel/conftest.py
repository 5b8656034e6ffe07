"""The real tracefs for the kernel tests: mounted here if it is not, unmounted after."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

TRACING = Path("/sys/kernel/tracing")


@pytest.fixture
def tracefs() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to read trace_pipe and write trace_marker")
    mounted_here = False
    if not (TRACING / "trace_pipe").exists():
        r = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"tracefs cannot be mounted here: {r.stderr.strip()}")
        mounted_here = True
    if not os.access(TRACING / "trace_marker", os.W_OK):
        pytest.skip("trace_marker is not writable")
    yield TRACING
    if mounted_here:
        subprocess.run(["umount", str(TRACING)], check=False)
