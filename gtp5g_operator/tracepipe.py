"""The trace source: non-blocking reads of trace_pipe into a LineFramer.

Opening, reading and re-opening with backoff live here; what the bytes mean
is `traceparse`'s job.  The kernel's trace_pipe never returns EOF, but the
FIFO that tests and the demo use does when its writer closes, so EOF means
"reopen" — after a backoff, so a source that keeps failing never spins.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Callable, Optional, Sequence, Set, Tuple

from .backoff import Backoff
from .config import TRACE_PIPE_CANDIDATES
from .traceparse import LineFramer, scan_lines

log = logging.getLogger(__name__)

def resolve_pipe(setting: str, candidates: Sequence[str] = TRACE_PIPE_CANDIDATES) -> str:
    if setting != "auto":
        return setting
    for path in candidates:
        if os.path.exists(path):
            return path
    return candidates[0]  # report the modern path when neither exists


class TraceSource:
    """Owns the trace_pipe fd; `read_turn()` returns the TIDs of one turn."""

    def __init__(self, setting: str, clock: Callable[[], float],
                 candidates: Sequence[str] = TRACE_PIPE_CANDIDATES,
                 framer: Optional[LineFramer] = None) -> None:
        self.setting = setting
        self._candidates = candidates
        self.path = resolve_pipe(setting, candidates)
        self._clock = clock
        self.framer = framer or LineFramer()
        self.fd: Optional[int] = None
        self._backoff = Backoff(0.1, 5.0)
        self.retry_at = 0.0  # monotonic time of the next open attempt
        self._last_error = ""
        self.lines = 0
        self.bytes = 0
        self.reopens = 0
        self._warned_long = False

    # --- open / close ------------------------------------------------------

    def open(self) -> bool:
        """Try to open; on failure log (once per distinct error) and schedule a retry."""
        self.path = resolve_pipe(self.setting, self._candidates)
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self._fail(f"cannot open trace source {self.path}: {exc.strerror}")
            return False
        if self._last_error:
            log.info("trace source %s open again", self.path)
        else:
            log.info("reading trace source %s", self.path)
        self._last_error = ""
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _fail(self, message: str) -> None:
        self.close()
        delay = self._backoff.next_delay()
        if message != self._last_error:
            log.warning("%s; retrying with backoff (next in %.1f s)", message, delay)
        self._last_error = message
        self.retry_at = self._clock() + delay
        self.reopens += 1

    def set_setting(self, setting: str) -> bool:
        """New trace.pipe: True if the resolved path changed (and we reopened)."""
        self.setting = setting
        if resolve_pipe(setting, self._candidates) == self.path and self.fd is not None:
            return False
        self.close()
        self._backoff.reset()
        self.open()
        return True

    # --- reading -------------------------------------------------------------

    def read_turn(self) -> Tuple[Set[bytes], bool]:
        """Read until EAGAIN or the buffer is full; (distinct TIDs, still open).

        Bounded per turn by the framer's capacity so a flood cannot starve the
        watchdog or the push.
        """
        assert self.fd is not None
        framer, fd = self.framer, self.fd
        eof = False
        got = 0
        while framer.filled < len(framer.buf):
            try:
                n = os.readv(fd, [framer.space()])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self._fail(f"reading trace source {self.path} failed: {exc.strerror}")
                return self._scan(), False
            if n == 0:
                eof = True
                break
            framer.commit(n)
            got += n
        self.bytes += got
        tids = self._scan()
        if eof:
            start, end = framer.flush_partial()
            tids |= self._count_and_scan(start, end)
            self._fail(f"trace source {self.path} reached end of file")
            return tids, False
        if got:
            self._backoff.reset()
        return tids, True

    def _scan(self) -> Set[bytes]:
        framer = self.framer
        dropped = framer.dropped_lines
        start, end = framer.frame()
        tids = self._count_and_scan(start, end)
        framer.release()
        if framer.dropped_lines != dropped and not self._warned_long:
            self._warned_long = True
            log.warning("dropped a trace line longer than %d bytes (counted in "
                        "trace_dropped_lines; warning once)", framer.max_line)
        return tids

    def _count_and_scan(self, start: int, end: int) -> Set[bytes]:
        if end <= start:
            return set()
        found = scan_lines(self.framer.buf, start, end)
        self.lines += len(found)  # trace lines recognised (malformed ones are not counted)
        return set(found)
