"""Pure parsing of ftrace `trace_pipe` text.

ftrace prints every event as::

    <comm, right-aligned in 16>-<TID, left-aligned in 7> [(TGID)] [CPU] FLAGS SECS.USECS: EVENT: MSG

The TGID column exists only with `options/record-tgid` and reads `(-------)`
when unknown; the comm may be `<...>`, may contain `-` and spaces, and leading
spaces may have been stripped.  The TID is the digits after the last `-`
before the spaces that precede `(` or `[`.

The hot path (`scan_tids`) runs one compiled pattern over a whole chunk with
`findall` and returns the distinct TIDs as a set of bytes: no Python code runs
per line.  The pattern is not anchored at line starts (an anchored multi-line
pattern costs three times as much); instead it demands the header's shape
`-TID␠␠(TGID` or `-TID␠␠[CPU`, which a message body does not contain in
practice, and anything it picks up by accident is only a candidate —
identity is decided from /proc, never from the text.

`parse_line` is the complete, slower parser used by tests and debug logging; a
test checks that both agree on every captured sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Set, Union

Buffer = Union[bytes, bytearray, memoryview]

# "-TID", spaces, then "(" of the TGID column or "[" of the CPU column, and one
# character of their content.  The shortest shape that still rejects prose
# like "1-5 (inclusive)": each extra element costs ~10 % of the scan.
_TID_PATTERN = re.compile(rb"-(\d+) +[(\[][\d -]")

_LINE_PATTERN = re.compile(
    rb"^ *(?P<comm>.*?)-(?P<tid>\d+) +"
    rb"(?:\( *(?P<tgid>\d+|-+)\) +)?"
    rb"\[(?P<cpu>\d+)\] +(?P<flags>\S+) +(?P<ts>\d+\.\d+): "
    rb"(?P<event>[^:\s]+): ?(?P<msg>.*)$",
    re.DOTALL,
)


@dataclass(frozen=True)
class TraceLine:
    comm: str  # as printed: may be "<...>" and is never authoritative
    tid: int
    tgid: Optional[int]  # None without record-tgid or when printed as (-------)
    cpu: int
    flags: str
    timestamp: float
    event: str
    message: str


def scan_tids(buf: Buffer, start: int = 0, end: Optional[int] = None) -> Set[bytes]:
    """Distinct task IDs (as ASCII digits) in buf[start:end], at C speed."""
    return set(scan_lines(buf, start, len(buf) if end is None else end))


def scan_lines(buf: Buffer, start: int, end: int) -> List[bytes]:
    """The task ID of every trace line in buf[start:end], in order.

    Its length is the number of trace lines: counting them this way is free,
    while a separate count of newlines would cost a third of the scan.
    """
    return _TID_PATTERN.findall(buf, start, end)  # type: ignore[call-overload,no-any-return]


def parse_line(line: bytes) -> Optional[TraceLine]:
    """Parse one line (without its newline); None if it is not an ftrace line."""
    m = _LINE_PATTERN.match(line.rstrip(b"\r\n"))
    if m is None:
        return None
    tgid = m.group("tgid")
    return TraceLine(
        comm=m.group("comm").decode("utf-8", "replace"),
        tid=int(m.group("tid")),
        tgid=int(tgid) if tgid and tgid[:1] != b"-" else None,
        cpu=int(m.group("cpu")),
        flags=m.group("flags").decode("ascii", "replace"),
        timestamp=float(m.group("ts")),
        event=m.group("event").decode("utf-8", "replace"),
        message=m.group("msg").decode("utf-8", "replace"),
    )


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

    def flush_partial(self) -> tuple[int, int]:
        """At EOF: treat a kept incomplete line as complete (region to scan)."""
        if self._skipping or self.filled == 0:
            self.filled, self._skipping = 0, False
            return 0, 0
        self.buf[self.filled:self.filled + 1] = b"\n"
        end = self.filled + 1
        self.filled = 0
        return 0, end
