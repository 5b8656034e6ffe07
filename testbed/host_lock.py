"""One machine-wide lock for everything that uses the host's shared kernel state.

The real-kernel tests, the container tests and the benchmark's kernel
sections share the trace ring buffer (and the container tests the cgroup
tree): two of them at once corrupt each other's measurements or fail.  Each
holder takes an exclusive `flock` on one file for as long as it uses the
host; a second one waits (saying so once) instead of running beside it.
The lock dies with its holder, so a killed run never leaves it taken.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from typing import IO, Optional

LOCK_PATH = os.environ.get("GTP5G_HOST_LOCK", "/run/lock/gtp5g-operator-tests.host.lock")


class HostLock:
    def __init__(self, path: str = LOCK_PATH) -> None:
        self.path = path
        self._file: Optional[IO[bytes]] = None

    def acquire(self, who: str) -> float:
        """Take the lock (waiting as long as it takes); the seconds waited."""
        if self._file is not None:
            return 0.0
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        f = open(self.path, "a+b")  # noqa: SIM115 - held until release()
        start = time.monotonic()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"\n{who}: waiting for {self.path} (another run uses the host's ring "
                  "buffer or containers)", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        self._file = f
        return time.monotonic() - start

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
