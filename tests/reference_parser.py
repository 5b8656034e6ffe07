"""The complete, slow parser of ftrace's default line layout — a reference for
the tests: the daemon's scanner must find exactly the TIDs this finds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

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
