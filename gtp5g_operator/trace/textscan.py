"""Task IDs from trace_pipe text: pure, one compiled pattern per layout.

ftrace's default layout prints every event as::

    <comm, right-aligned in 16>-<TID, left-aligned in 7> [(TGID)] [CPU] FLAGS SECS.USECS: EVENT: MSG

The TGID column exists only with `options/record-tgid`; the comm may be
`<...>`, may contain `-`, spaces and anything a user can `prctl()` into a
name, and leading spaces may have been stripped.  Other tracefs options
change the layout (see `LAYOUTS`); the layout is a property of the tracing
instance, so whichever layout recognises lines in a chunk is used for it.

The hot path runs one compiled pattern over a whole chunk with `findall`
and returns every line's TID: no Python code runs per line.  The default
pattern is not anchored at line starts (an anchored multi-line pattern cannot
use the search's literal prefix and costs several times as much); it demands
the header's shape `-TID␠␠(` or `-TID␠␠[` instead, and one character of the
column's content.  No `-` is ever consumed, so a thread named e.g. `x-9 [`
cannot hide the real `-TID [` that follows it; the look-ahead that ensures
that is left to the rare TGID column, since a look-ahead on every line is a
measurable share of the scan (the figures: bench/results/, dated).  Anything
picked up by accident is only a candidate: identity is decided from /proc.

TIDs are returned as ints: a zero-padded "0042" and "42" are the same task,
and at most 7 digits are accepted (PID_MAX_LIMIT is 4,194,304), so a run of
5,000 digits from a FIFO is not a TID and cannot overflow int().
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Set, Tuple, Union

Buffer = Union[bytes, bytearray, memoryview]


@dataclass(frozen=True)
class Layout:
    name: str
    pattern: re.Pattern[bytes]
    base: int  # 10, or 16 for the hex layout
    option: str  # the tracefs option that produces it ("" for the default)


# "[0-9]" (what "\d" means in a bytes pattern) compiles to a range test, "\d" to a
# category look-up.  The CPU column's "[" is consumed with the digit or space after
# it; after the TGID column's "(" ("(-------)" when unknown) the pattern only looks.
DEFAULT = Layout("default", re.compile(rb"-([0-9]{1,7}) +(?:\[[0-9 ]|\((?=[0-9 -]))"), 10, "")
LAYOUTS: Tuple[Layout, ...] = (
    DEFAULT,  # also record-tgid, irq-info off, funcgraph-*, ...
    # options/latency-format: "%8.8s-%-7d %3d" (comm cut to 8, TID, CPU), then the
    # latency flags glued to the CPU number; the first is irqs-off: one of d D b X .
    # ('b': bottom halves off, e.g. inside dev_queue_xmit — seen on 6.18).
    Layout("latency-format", re.compile(rb"-(\d{1,7}) +\d{1,4}(?=[bdDX.])"), 10,
           "latency-format"),
    # options/raw: "%d %d %llu " (TID, CPU, timestamp) at the start of the line.
    Layout("raw", re.compile(rb"^ *(\d{1,7}) \d{1,4} \d+ ", re.M), 10, "raw"),
    # options/hex: the same three fields as hex of their bytes, each followed by a space.
    Layout("hex", re.compile(rb"^([0-9a-f]{8}) [0-9a-f]{8} [0-9a-f]{16} ", re.M), 16, "hex"),
    # options/context-info off: no header at all; the gtp5g tracer's own "PID=" is all
    # there is (the task the probe ran in, which is what the header would show).
    Layout("payload PID", re.compile(rb"\bPID=(\d{1,7})\b"), 10, "context-info"),
)


def scan(buf: Buffer, start: int, end: int) -> Tuple[Set[int], int, Optional[Layout]]:
    """(distinct TIDs, lines recognised, layout used) for the complete lines in buf[start:end].

    Layouts are tried in order of preference until one recognises a line; a
    chunk in the default layout costs one `findall`.
    """
    for layout in LAYOUTS:
        found = layout.pattern.findall(buf, start, end)
        if found:  # the distinct matches first: few per chunk
            return {int(t, layout.base) for t in set(found)}, len(found), layout
    return set(), 0, None
