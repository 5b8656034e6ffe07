"""Where the kernel's tracing files are and what a trace path points at.

Reads only: the mount table, `stat`, and small tracefs files.  Nothing here
consumes trace data.
"""

from __future__ import annotations

import os
import stat
from typing import Optional, Sequence

from ..config.schema import TRACE_PIPE_CANDIDATES

TRACEFS_TYPES = ("tracefs", "debugfs")


def resolve_pipe(setting: str, candidates: Sequence[str] = TRACE_PIPE_CANDIDATES) -> str:
    """The path `trace.pipe` names: itself, or for "auto" the first that exists."""
    if setting != "auto":
        return setting
    for path in candidates:
        if os.path.exists(path):
            return path
    return candidates[0]  # report the modern path when neither exists


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return field.encode().decode("unicode_escape") if "\\" in field else field


def fs_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """File system type of the mount holding `path` (None when unknown)."""
    try:
        real = os.path.realpath(path)
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        point = _unescape(fields[4])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, right.split()[0]
    return best_type


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file"


def trace_pipe_problem(setting: str) -> str:
    """Why `setting` cannot be followed like trace_pipe, or "" when it can (or may).

    Accepted: a FIFO (tests, replays) or a file named trace_pipe on tracefs.
    A regular file, /dev/null or tracefs's non-pipe `trace` file cannot be
    polled; a path that does not exist (yet) is accepted, the daemon waits.
    """
    if setting == "auto":
        return ""
    try:
        st = os.stat(setting)
    except FileNotFoundError:
        return ""
    except OSError:
        return ""  # e.g. not allowed to look: the daemon reports it when it opens it
    return mode_problem(setting, st)


def mode_problem(path: str, st: os.stat_result) -> str:
    """Why the file `path` with status `st` cannot be followed like trace_pipe, or ""."""
    if stat.S_ISFIFO(st.st_mode):
        return ""
    name = os.path.basename(path)
    on_tracefs = stat.S_ISREG(st.st_mode) and fs_type(path) in TRACEFS_TYPES
    if on_tracefs and name == "trace_pipe":
        return ""
    if on_tracefs:
        return (f"{path} is the tracefs file {name!r}, which cannot be followed; "
                f"use {os.path.join(os.path.dirname(path), 'trace_pipe')}")
    return (f"{path} is {_kind(st.st_mode)}, which cannot be followed like trace_pipe "
            "(expected the kernel's trace_pipe or a FIFO)")


OPTIONS_OF_NOTE = (("bin", "1"), ("hex", "1"), ("raw", "1"), ("context-info", "0"),
                   ("latency-format", "1"), ("verbose", "1"))


def unusual_options(tracing_dir: str) -> list[str]:
    """Output options of a tracing instance that change trace_pipe's text layout."""
    found = []
    for name, unusual in OPTIONS_OF_NOTE:
        try:
            with open(os.path.join(tracing_dir, "options", name), encoding="ascii") as f:
                value = f.read(8).strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value == unusual:
            found.append(f"options/{name} = {value}")
    return found
