"""The FIFO sections' stream: the corpus with a live gNB's task IDs, and its writer."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import termios
from pathlib import Path

from testbed.harness import REPO, GnbProcess

F_SETPIPE_SZ = 1031


def make_stream(lines: int, gnb: GnbProcess) -> bytes:
    """bench/gen_trace.py's corpus, its gNB's task IDs replaced by `gnb`'s (so identity
    checks run on a live process)."""
    gen = subprocess.run([sys.executable, str(REPO / "bench" / "gen_trace.py"),
                          "--lines", str(lines), "--seed", "1"],
                         check=True, capture_output=True).stdout
    live = [gnb.pid, *gnb.threads.values()]
    recorded = [1150348] + [1150348 + 3 + i for i in range(7)]
    for rec, tid in zip(recorded, live, strict=False):
        gen = gen.replace(b"%d" % rec, b"%d" % tid)
    return gen


def open_writer(fifo: Path) -> int:
    fd = os.open(fifo, os.O_WRONLY)
    fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)  # same pipe size for every reader
    return fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[: 1 << 20]):]


def unread(fd: int) -> int:
    """Bytes written to a pipe and not yet read."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)
