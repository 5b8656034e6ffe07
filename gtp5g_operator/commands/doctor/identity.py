"""Whom the access checks judge as, and what the kernel answers for that identity.

The service reads the trace source and other users' /proc/PID/exe as its own
identity: the running service's (its /proc/PID/status), else the shipped
unit's (a dynamic user with CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE; nobody
stands in for it).  Whether that identity may do so is asked of the kernel —
faccessat(AT_EACCESS) and readlink — so that ACLs, capabilities and security
modules count exactly as they will for the service.  Nothing is opened: a
second reader of trace_pipe gets EBUSY, and a read takes lines from the
service.

As root, a forked child takes the identity (setgroups, setresgid,
PR_SET_KEEPCAPS, setresuid, capset — every result checked, and the result
verified with getresuid and capget), asks, and reports through a pipe.  Not
as root, doctor can only ask for itself, and the checks say so.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import pwd
import select
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ...files import read_small_text

CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2  # read any file, search any directory
CAP_SYS_PTRACE = 19  # read /proc/PID/exe of other users' processes
UNIT_CAPS = 1 << CAP_DAC_READ_SEARCH | 1 << CAP_SYS_PTRACE  # AmbientCapabilities= of the unit
NAMED_CAPS = {CAP_DAC_OVERRIDE: "CAP_DAC_OVERRIDE", CAP_DAC_READ_SEARCH: "CAP_DAC_READ_SEARCH",
              CAP_SYS_PTRACE: "CAP_SYS_PTRACE"}
ASK_TIMEOUT = 5.0  # a path on a hung network file system must not hold doctor up
MAX_ANSWER = 1 << 20

_PR_SET_KEEPCAPS = 8
_CAP_VERSION_3 = 0x20080522


# --- the identity ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: Tuple[int, ...]
    caps: int  # effective capabilities
    who: str  # whose identity it is, in words
    switch: bool = True  # a child takes it; False: doctor's own, asked in this process

    def describe(self) -> str:
        named = [n for bit, n in sorted(NAMED_CAPS.items()) if self.caps >> bit & 1]
        others = bin(self.caps).count("1") - len(named)
        caps = ", ".join(named) + (f" and {others} other capabilities" if others else "")
        return f"{self.who}, uid {self.uid} {'with ' + caps if caps else 'without capabilities'}"


def _field(text: str, name: str) -> Tuple[str, ...]:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return tuple(line.split()[1:])
    return ()


def parse_status(text: str, who: str) -> Optional[Identity]:
    """The effective uid, gid, groups and capabilities of /proc/PID/status's text."""
    uids, gids, caps = _field(text, "Uid"), _field(text, "Gid"), _field(text, "CapEff")
    try:
        return Identity(int(uids[1]), int(gids[1]),
                        tuple(int(g) for g in _field(text, "Groups")), int(caps[0], 16), who)
    except (IndexError, ValueError):
        return None


def unit_identity() -> Identity:
    """The shipped unit's: DynamicUser= (here nobody) with its two capabilities."""
    try:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    except KeyError:
        uid = gid = 65534
    return Identity(uid, gid, (), UNIT_CAPS, "as the shipped unit runs it (a dynamic user; "
                                             "nobody here)")


def judge_as(proc: str, service_pid: Optional[int], euid: Optional[int] = None) -> Identity:
    """The running service's identity, else the unit's; doctor's own when not root."""
    if (os.geteuid() if euid is None else euid) != 0:
        me = "as doctor itself (not root: it cannot take the service's identity)"
        own = parse_status(read_small_text(os.path.join(proc, "self", "status")) or "", me)
        return dataclasses.replace(own or Identity(os.geteuid(), os.getegid(),
                                                   tuple(os.getgroups()), 0, me), switch=False)
    if service_pid is not None:
        found = parse_status(read_small_text(os.path.join(proc, str(service_pid), "status"))
                             or "", f"as the running service (PID {service_pid})")
        if found is not None:
            return found
    return unit_identity()


# --- the questions, answered by whoever runs them -------------------------------------------


@dataclass(frozen=True)
class Questions:
    paths: Tuple[str, ...]  # may the identity open each for reading?
    other: Optional[int] = None  # a process of another user: visible, its exe readable?
    proc: str = "/proc"


@dataclass(frozen=True)
class Answers:
    blocked: Dict[str, str] = field(default_factory=dict)  # path -> "" or where it stops
    sees_other: Optional[bool] = None  # None: not asked
    exe_error: Optional[str] = None  # "" when /proc/PID/exe could be read; None: not asked
    error: str = ""  # the identity could not be taken or asked: why


def _readable(path: str, mode: int) -> bool:
    return os.access(path, mode, effective_ids=True)  # faccessat(AT_EACCESS)


def blocked_at(path: str) -> str:
    """"" when the identity may read `path`; else the first directory on the way it may
    not search, or the path itself."""
    if _readable(path, os.R_OK):
        return ""
    parts = os.path.abspath(path).split("/")[1:-1]
    for i in range(len(parts) + 1):
        directory = "/" + "/".join(parts[:i])
        if not _readable(directory, os.X_OK):
            return directory
    return path


def answer(q: Questions) -> Dict[str, Any]:
    """What the kernel says to the identity this process has now."""
    out: Dict[str, Any] = {"blocked": {p: blocked_at(p) for p in q.paths}}
    if q.other is not None:
        out["sees_other"] = _readable(os.path.join(q.proc, str(q.other), "stat"), os.R_OK)
        try:
            os.readlink(os.path.join(q.proc, str(q.other), "exe"))
            out["exe_error"] = ""
        except OSError as exc:
            out["exe_error"] = exc.strerror or str(exc)
    return out


def answers_from(data: Dict[str, Any]) -> Answers:
    return Answers(dict(data.get("blocked") or {}), data.get("sees_other"),
                   data.get("exe_error"), str(data.get("error") or ""))


# --- taking the identity (in a child) ---------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _checked(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def capget() -> Tuple[int, int]:
    """(effective, permitted) capabilities of this process."""
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    _checked(_libc().capget(ctypes.byref(header), data), "capget")
    return (data[0].effective | data[1].effective << 32,
            data[0].permitted | data[1].permitted << 32)


def capset(caps: int) -> None:
    """Effective and permitted = `caps`, nothing inheritable."""
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    for i in (0, 1):
        data[i].effective = data[i].permitted = caps >> 32 * i & 0xFFFFFFFF
    _checked(_libc().capset(ctypes.byref(header), data), "capset")


def become(who: Identity) -> None:
    """Take `who`'s identity for good (in a child).  Capabilities this process lacks
    cannot be taken; they are dropped (the service, on this host, cannot have them
    either)."""
    caps = who.caps & capget()[1]
    os.setgroups(list(who.groups))
    os.setresgid(who.gid, who.gid, who.gid)
    keep = ctypes.c_ulong(1)
    _checked(_libc().prctl(_PR_SET_KEEPCAPS, keep, ctypes.c_ulong(0), ctypes.c_ulong(0),
                           ctypes.c_ulong(0)), "prctl(PR_SET_KEEPCAPS)")
    os.setresuid(who.uid, who.uid, who.uid)
    capset(caps)
    if os.getresuid() != (who.uid,) * 3 or capget()[0] != caps:
        raise OSError(f"the identity did not take (uids {os.getresuid()}, capabilities "
                      f"{capget()[0]:#x})")


def ask(who: Identity, q: Questions, timeout: float = ASK_TIMEOUT) -> Answers:
    """The kernel's answers to `q` for `who`."""
    if not who.switch:
        return answers_from(answer(q))
    read_end, write_end = os.pipe()
    try:
        child = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        return Answers(error=f"cannot fork a child to take the identity: {exc.strerror}")
    if child == 0:
        _child(who, q, read_end, write_end)
    os.close(write_end)
    data: Optional[bytes] = None
    try:
        data = _read_until_eof(read_end, time.monotonic() + timeout)
    finally:
        os.close(read_end)
        if data is None:
            os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    if data is None:
        return Answers(error=f"no answer within {timeout:g} s (a hung file system?)")
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return Answers(error="the child that took the identity ended without an answer")
    return answers_from(parsed)


def _child(who: Identity, q: Questions, read_end: int, write_end: int) -> None:
    """Never returns: takes the identity, asks, writes the answers, exits."""
    try:
        os.close(read_end)
        try:
            become(who)
            out = answer(q)
        except Exception as exc:  # reported to the parent, which says it in a check
            out = {"error": f"cannot take the identity: {exc}"}
        data = json.dumps(out).encode()
        while data:
            data = data[os.write(write_end, data):]
    finally:
        os._exit(0)


def _read_until_eof(fd: int, deadline: float) -> Optional[bytes]:
    chunks: List[bytes] = []
    size = 0
    while size < MAX_ANSWER:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    return None
