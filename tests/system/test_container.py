"""The test bed's container leaves the host as it found it.

The containers share the host's network namespace, so what their systemd sets
there is the host's: PID 1 raises net.unix.max_dgram_qlen to 512 at start, which
would change later tests' (and the host's) notify-socket queue for good."""

from __future__ import annotations

import time

import pytest

from tests.system.container import DGRAM_QLEN, Container

pytestmark = pytest.mark.system


def test_a_container_puts_back_the_host_sysctl_its_systemd_raised(suite: str) -> None:
    before = DGRAM_QLEN.read_text()
    unusual = "17\n" if before != "17\n" else "19\n"  # a value systemd would not set
    DGRAM_QLEN.write_text(unusual)
    c = Container(name="gtp5g-sysctl", suite=suite)
    try:
        c.boot()
        deadline = time.monotonic() + 60
        while DGRAM_QLEN.read_text() == unusual and time.monotonic() < deadline:
            time.sleep(0.2)
        raised = DGRAM_QLEN.read_text()
        if raised == unusual:
            pytest.skip(f"{suite}'s systemd left net.unix.max_dgram_qlen alone: "
                        "nothing to put back")
    finally:
        c.stop()
        after = DGRAM_QLEN.read_text()
        DGRAM_QLEN.write_text(before)
    assert after == unusual, f"the container left max_dgram_qlen at {after.strip()} " \
                             f"(systemd inside set {raised.strip()})"
