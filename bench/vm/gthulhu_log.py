"""What Gthulhu's scheduler says it boosted, from its log (pure; also runs in the guest).

In kernel mode the scheduler applies each change of the strategies it fetched
to its BPF priority map and logs it (Go's slog text handler):

    time=2026-12-06T13:21:42.123Z level=INFO msg="Updated priority task" pid=1234 \
        executionTime=20000000 priority=1      (one line)
    time=2026-12-06T13:21:49.456Z level=INFO msg="Removed priority task" pid=1234

Replaying those lines gives the set of PIDs (kernel task IDs) in the map at any
time, and when each entered and left it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, Iterable, List, Optional, Set

_LINE = re.compile(
    r'^time=(?P<time>\S+) level=\S+ msg="(?P<msg>Updated|Removed) priority task" pid=(?P<pid>\d+)')
_ENABLED = re.compile(r'msg="scheduler started"')


@dataclass(frozen=True)
class MapChange:
    at: float      # seconds since the epoch (the guest's wall clock)
    pid: int
    added: bool    # True: entered the priority map; False: left it


def parse_time(text: str) -> Optional[float]:
    """RFC 3339 with fractions and Z or an offset, as slog writes it."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def map_changes(lines: Iterable[str]) -> List[MapChange]:
    """Every successful change of the priority map, in log order."""
    changes = []
    for line in lines:
        m = _LINE.match(line)
        if m is None:
            continue
        at = parse_time(m["time"])
        if at is not None:
            changes.append(MapChange(at, int(m["pid"]), m["msg"] == "Updated"))
    return changes


def boosted_at(changes: Iterable[MapChange], at: Optional[float] = None) -> Set[int]:
    """The PIDs in the map after every change up to `at` (all changes: None)."""
    live: Set[int] = set()
    for c in changes:
        if at is not None and c.at > at:
            break
        if c.added:
            live.add(c.pid)
        else:
            live.discard(c.pid)
    return live


def first_added(changes: Iterable[MapChange], after: float = 0.0) -> Dict[int, float]:
    """When each PID first entered the map at or after `after`."""
    out: Dict[int, float] = {}
    for c in changes:
        if c.added and c.at >= after and c.pid not in out:
            out[c.pid] = c.at
    return out


def last_removed(changes: Iterable[MapChange], after: float = 0.0) -> Dict[int, float]:
    """When each PID last left the map at or after `after`."""
    return {c.pid: c.at for c in changes if not c.added and c.at >= after}


def started(lines: Iterable[str]) -> bool:
    return any(_ENABLED.search(line) for line in lines)
