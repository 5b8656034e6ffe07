"""Where the kernel's trace_pipe is, and what a configured trace path points at.

The one reader of the mount table (/proc/self/mountinfo): which file system
holds a path, with which options (the trace readers, the configuration's
checks and `doctor` all ask here).  Reads only: the mount table and `stat`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..files import file_kind

TRACE_PIPE_CANDIDATES = (
    "/sys/kernel/tracing/trace_pipe",
    "/sys/kernel/debug/tracing/trace_pipe",
)
TRACEFS_TYPES = ("tracefs", "debugfs")
# What makes each of those places appear.  debugfs brings tracefs along at debug/tracing
# (an automount); tracefs alone cannot be mounted there: without debugfs, sysfs has no
# such directory ("mount point does not exist").
MOUNT_COMMANDS = {TRACE_PIPE_CANDIDATES[0]: "mount -t tracefs nodev /sys/kernel/tracing",
                  TRACE_PIPE_CANDIDATES[1]: "mount -t debugfs nodev /sys/kernel/debug"}


# --- the mount table ------------------------------------------------------------------------


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
        if not sep or len(fields) < 6 or not tail:
            continue
        super_options = tail[2] if len(tail) > 2 else ""
        mounts.append(Mount(_unescape(fields[4]), tail[0], _options(fields[5], super_options)))
    return mounts


def read_mounts(proc: str = "/proc") -> Optional[List[Mount]]:
    """The mount table as this process sees it, None when it cannot be read."""
    try:
        with open(os.path.join(proc, "self", "mountinfo"), encoding="utf-8",
                  errors="replace") as f:
            return parse_mountinfo(f.read(1 << 20))
    except OSError:
        return None


def mount_of(path: str, mounts: Sequence[Mount]) -> Optional[Mount]:
    """The mount holding `path`: the last-mounted of the longest matching mount points."""
    real = os.path.realpath(path)
    best: Optional[Mount] = None
    for m in mounts:
        inside = real == m.point or real.startswith(m.point.rstrip("/") + "/")
        if inside and (best is None or len(m.point) >= len(best.point)):
            best = m
    return best


def fs_type(path: str, proc: str = "/proc") -> Optional[str]:
    """File system type of the mount holding `path` (None when unknown)."""
    mount = mount_of(path, read_mounts(proc) or [])
    return mount.fstype if mount is not None else None


# --- the trace source ------------------------------------------------------------------------


def resolve_pipe(setting: str) -> str:
    """The path `trace.pipe` names: itself, or for "auto" the first that exists."""
    if setting != "auto":
        return setting
    # the modern path, to report, when neither exists
    return next(filter(os.path.exists, TRACE_PIPE_CANDIDATES), TRACE_PIPE_CANDIDATES[0])


def is_tracefs_pipe(path: str, st: os.stat_result, proc: str = "/proc") -> bool:
    """Is `path` (with status `st`) the kernel's trace_pipe on a tracefs mount?"""
    return (stat.S_ISREG(st.st_mode) and os.path.basename(path) == "trace_pipe"
            and fs_type(path, proc) in TRACEFS_TYPES)


def mode_problem(path: str, st: os.stat_result) -> str:
    """Why the file `path` with status `st` cannot be followed like trace_pipe, or ""."""
    if stat.S_ISFIFO(st.st_mode) or is_tracefs_pipe(path, st):
        return ""
    name = os.path.basename(path)
    if stat.S_ISREG(st.st_mode) and fs_type(path) in TRACEFS_TYPES:
        return (f"{path} is the tracefs file {name!r}, which cannot be followed; "
                f"use {os.path.join(os.path.dirname(path), 'trace_pipe')}")
    return (f"{path} is {file_kind(st.st_mode)}, which cannot be followed like trace_pipe "
            "(expected the kernel's trace_pipe or a FIFO)")


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
    except OSError:  # absent (the daemon waits), or not allowed to look (it says so later)
        return ""
    return mode_problem(setting, st)


def unmounted_tracefs_hint(path: str, proc: str = "/proc") -> str:
    """What to do when `path` (one of the places trace_pipe is looked for, or its
    directory) does not exist because no tracefs is mounted there ("" otherwise)."""
    pipe = path if path in TRACE_PIPE_CANDIDATES else os.path.join(path, "trace_pipe")
    if pipe not in TRACE_PIPE_CANDIDATES or os.path.lexists(pipe):
        return ""
    directory = os.path.dirname(pipe)
    if fs_type(directory, proc) in TRACEFS_TYPES:
        return ""
    return (f"no tracefs is mounted at {directory}: {MOUNT_COMMANDS[pipe]} "
            "(the service waits for it; gtp5g-operator doctor checks the rest)")


# --- what the unit hides from the service --------------------------------------------------

# systemd/gtp5g-operator.service: PrivateTmp=yes gives the service /tmp and /var/tmp of its
# own; ProtectHome=yes makes /home, /root and /run/user empty.  A file there is seen from a
# shell (check-config, doctor) and not by the service: "No such file or directory" for a
# file that exists, or a textfile node-exporter never sees.
PRIVATE_TMP = ("/tmp", "/var/tmp")
PROTECTED_HOME = ("/home", "/root", "/run/user")
UNIT_HIDDEN = tuple([(top, "PrivateTmp=yes") for top in PRIVATE_TMP]
                    + [(top, "ProtectHome=yes") for top in PROTECTED_HOME])


def hidden_by_unit(path: str, hidden: Sequence[Tuple[str, str]] = UNIT_HIDDEN) -> str:
    """The setting (of `hidden`: (directory, setting) pairs) that hides `path` from the
    service, or "".  The path as written and as its symlinks resolve are both judged:
    /etc/x.pem linking into /tmp is as hidden as /tmp/x.pem."""
    return next((setting for top, setting in hidden
                 for full in (os.path.abspath(path), os.path.realpath(path))
                 if full == top or full.startswith(top + "/")), "")


def unit_hiding_hint(path: str, env: Mapping[str, str]) -> str:
    """For the service's error about a file it cannot find: under systemd (INVOCATION_ID),
    which setting of the shipped unit may hide it (empty when none)."""
    setting = hidden_by_unit(path) if env.get("INVOCATION_ID") else ""
    return (f" (if it exists: the unit's {setting} hides it from the service; keep it under "
            "/etc/gtp5g-operator)") if setting else ""
