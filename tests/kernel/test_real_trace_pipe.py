"""The real kernel: lines written to trace_marker by a process named nr-gnb are
found through the real trace_pipe.  Needs root and a mountable tracefs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from testbed.harness import GnbProcess
from tests.conftest import Env

TRACING = Path("/sys/kernel/tracing")

pytestmark = pytest.mark.kernel


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


def test_trace_marker_lines_of_nr_gnb_reach_the_api(
        tracefs: Path, env: Env, gnb: Callable[..., GnbProcess]) -> None:
    env.start(trace={"pipe": "auto"})  # auto finds /sys/kernel/tracing/trace_pipe
    g = gnb(threads=("nr-gnb-rlc",))
    decoy = gnb(name="nr-gnbx", threads=())
    decoy.mark("nr-gnbx", str(tracefs / "trace_marker"))
    g.mark("nr-gnb", str(tracefs / "trace_marker"))
    g.mark("nr-gnb-rlc", str(tracefs / "trace_marker"))
    post = env.api.wait_post(lambda s: {x["pid"] for x in s} == set(g.tids), timeout=5)
    assert decoy.pid not in {x["pid"] for x in post.body["strategies"]}
