"""The mount table (/proc/self/mountinfo), parsed: which file system holds a path, and
with which options.  Read from the injected /proc root, so tests can fake it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    options: Dict[str, str]  # mount and super-block options together: {"hidepid": "2"}


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return field.encode().decode("unicode_escape") if "\\" in field else field


def _options(*fields: str) -> Dict[str, str]:
    found: Dict[str, str] = {}
    for field in fields:
        for item in field.split(","):
            key, _, value = item.partition("=")
            if key:
                found[key] = value
    return found


def parse_mountinfo(text: str) -> List[Mount]:
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        super_options = tail[2] if len(tail) > 2 else ""
        mounts.append(Mount(_unescape(fields[4]), tail[0], _options(fields[5], super_options)))
    return mounts


def read_mounts(proc: str) -> Optional[List[Mount]]:
    try:
        with open(os.path.join(proc, "self", "mountinfo"), encoding="utf-8",
                  errors="replace") as f:
            return parse_mountinfo(f.read(1 << 20))
    except OSError:
        return None


def mount_of(path: str, mounts: List[Mount]) -> Optional[Mount]:
    """The mount holding `path`: the last-mounted of the longest matching mount points."""
    real = os.path.realpath(path)
    best: Optional[Mount] = None
    for m in mounts:
        inside = real == m.point or real.startswith(m.point.rstrip("/") + "/")
        if inside and (best is None or len(m.point) >= len(best.point)):
            best = m
    return best
