"""Framing of a byte stream into complete lines in one fixed buffer: pure."""

from __future__ import annotations


class LineFramer:
    """A fixed buffer that frames reads into complete lines without re-copying.

    The caller reads straight into `space()`, calls `commit(n)`, then
    `frame()` to get the region [start, end) holding only complete lines, scans
    it in place, and calls `release()`.  An incomplete last line is kept for the
    next read; one longer than `max_line` is dropped (and counted) up to its
    newline, so memory stays fixed whatever comes down the pipe.  (A long line
    that arrives whole within one buffer is simply scanned: that costs no
    memory, and checking every line's length would cost Python work per line.)
    """

    def __init__(self, capacity: int = 256 * 1024, max_line: int = 16 * 1024) -> None:
        if capacity <= max_line:
            raise ValueError("capacity must exceed max_line")
        self.buf = bytearray(capacity)
        self._view = memoryview(self.buf)
        self.max_line = max_line
        self.filled = 0
        self._keep_from = 0
        self._skipping = False  # inside an over-long line: drop up to its newline
        self.dropped_lines = 0

    def space(self) -> memoryview:
        return self._view[self.filled:]

    def commit(self, n: int) -> None:
        self.filled += n

    def frame(self) -> tuple[int, int]:
        start = 0
        if self._skipping:
            nl = self.buf.find(b"\n", 0, self.filled)
            if nl < 0:
                self._keep_from = self.filled  # still inside the long line: drop it all
                return 0, 0
            start, self._skipping = nl + 1, False
        end = self.buf.rfind(b"\n", start, self.filled) + 1 or start
        self._keep_from = end
        if self.filled - end >= self.max_line:
            self.dropped_lines += 1
            self._skipping = True
            self._keep_from = self.filled
        return start, end

    def release(self) -> None:
        keep = self.filled - self._keep_from
        if keep:
            self.buf[:keep] = self._view[self._keep_from:self.filled]
        self.filled, self._keep_from = keep, 0

    def reset(self) -> None:
        """Forget everything buffered (the stream it came from is gone)."""
        self.filled, self._keep_from, self._skipping = 0, 0, False

    def flush_partial(self) -> tuple[int, int]:
        """At EOF: treat a kept incomplete line as complete (region to scan)."""
        if self._skipping or self.filled == 0:
            self.filled, self._skipping = 0, False
            return 0, 0
        self.buf[self.filled:self.filled + 1] = b"\n"
        end = self.filled + 1
        self.filled = 0
        return 0, end
