"""Thin reader of /proc: who a task ID really is.

The root is injectable so unit tests can point it at a fake tree; the daemon
uses the real /proc.  Every function returns None when the task is gone (or
unreadable): a vanished task is an ordinary event, not an error.  A read that
failed for want of this service's own fds or memory is counted in `starved`.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import List, Optional, Set

# Failures of this service's own resources: such a read says nothing about the task.
STARVED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


@dataclass(frozen=True)
class TaskStat:
    start_time: int  # clock ticks since boot: with the ID, a unique identity
    state: str  # R, S, D, Z, X, ...

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X", "x")


@dataclass(frozen=True)
class TaskInfo:
    tid: int
    tgid: int
    start_time: int


@dataclass(frozen=True)
class ProcessInfo:
    tgid: int
    start_time: int
    comm: str  # the thread-group leader's name
    exe: str  # "" when unreadable (kernel threads, other namespaces)
    uid: int  # real uid


# Each byte that is not UTF-8 (surrogateescape makes it one of these) is one U+FFFD, as
# Go reads it: the Decision Maker matches the rule against the comm so.  Python's
# "replace" makes one U+FFFD of a cut-off sequence ("\xe2\x80": a UTF-8 name the kernel
# truncated to 15 bytes), and a rule naming that thread matched nothing there.
_NOT_UTF8 = {0xDC80 + i: 0xFFFD for i in range(128)}


def parse_comm(data: bytes) -> str:
    """The name in a comm file: the kernel adds exactly one newline.  A name may end
    in newlines of its own (prctl allows them): "nr-gnb\\n" is not "nr-gnb"."""
    name = data[:-1] if data.endswith(b"\n") else data
    return name.decode("utf-8", "surrogateescape").translate(_NOT_UTF8)


def parse_stat(data: bytes) -> Optional[TaskStat]:
    # The comm field is in parentheses and may itself contain ") ": split after
    # the LAST ')'.  Fields after it start at field 3 (state); starttime is 22.
    close = data.rfind(b")")
    if close < 0:
        return None
    fields = data[close + 2:].split()
    if len(fields) < 20:
        return None
    try:
        return TaskStat(start_time=int(fields[19]), state=fields[0].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


def parse_status(data: bytes) -> tuple[Optional[int], Optional[int]]:
    """(Tgid, real Uid) from /proc/PID/status."""
    tgid = uid = None
    for line in data.splitlines():
        if line.startswith(b"Tgid:"):
            tgid = _first_int(line)
        elif line.startswith(b"Uid:"):
            uid = _first_int(line)
            break  # Uid: comes after Tgid:
    return tgid, uid


def _first_int(line: bytes) -> Optional[int]:
    # at most 10 digits (ids are 32-bit): int() raises on over 4,300 of them
    fields = line.split()
    ok = len(fields) > 1 and fields[1].isdigit() and len(fields[1]) <= 10
    return int(fields[1]) if ok else None


class ProcFS:
    def __init__(self, root: str = "/proc") -> None:
        self.root = root
        # Reads that failed for want of our own fds or memory (STARVED), counted: a
        # caller compares it around a look-up to tell "gone" from "could not look".
        self.starved = 0
        self._last_pid_fd: Optional[int] = None

    def last_pid(self) -> Optional[int]:
        """The last task ID the kernel handed out in this PID namespace (ns_last_pid),
        None when it cannot be read.  One pread(2) of a file kept open: the tracker
        asks at most once in AGE_EVERY (10 ms) of trace turns (TaskTracker._age)."""
        try:
            if self._last_pid_fd is None:
                self._last_pid_fd = os.open(f"{self.root}/sys/kernel/ns_last_pid",
                                            os.O_RDONLY | os.O_CLOEXEC)
            return int(os.pread(self._last_pid_fd, 16, 0))
        except (OSError, ValueError):
            return None

    def _read(self, path: str) -> Optional[bytes]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return os.read(fd, 4096)
            finally:
                os.close(fd)
        except OSError as exc:
            self._failed(exc)
            return None

    def _failed(self, exc: OSError) -> None:
        if exc.errno in STARVED:
            self.starved += 1

    def stat(self, tid: int, tgid: Optional[int] = None) -> Optional[TaskStat]:
        """The task's own stat.  With its tgid known, /proc/TGID/task/TID/stat is
        read: /proc/TID/stat sums over every thread of the process, which costs
        O(threads) per read in a 1,000-thread gNB."""
        path = f"{self.root}/{tgid}/task/{tid}/stat" if tgid else f"{self.root}/{tid}/stat"
        data = self._read(path)
        return parse_stat(data) if data else None

    def present(self, tid: int, tgid: int) -> bool:
        """Does /proc still list TID as a thread of TGID?  Asked with stat(2), which
        needs no file descriptor: when `stat()` returned None because this process
        has none left (EMFILE, ENFILE) or no memory, the task may well be alive, and
        only "not found" says that it is gone."""
        try:
            os.stat(f"{self.root}/{tgid}/task/{tid}")
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: not proof that it exited
        return True

    def task(self, tid: int) -> Optional[TaskInfo]:
        """TGID and start time of a thread (works for any TID, listed or not)."""
        status = self._read(f"{self.root}/{tid}/status")
        tgid = parse_status(status)[0] if status else None
        if tgid is None:
            return None
        st = self.stat(tid, tgid)  # via /proc/TGID/task/TID: fails unless TID is in TGID
        if st is None or not st.alive:
            return None
        return TaskInfo(tid=tid, tgid=tgid, start_time=st.start_time)

    def process(self, tgid: int) -> Optional[ProcessInfo]:
        st = self.stat(tgid, tgid)
        status = self._read(f"{self.root}/{tgid}/status")
        comm = self._read(f"{self.root}/{tgid}/comm")
        if st is None or status is None or comm is None:
            return None
        _, uid = parse_status(status)
        exe = self.exe(tgid)
        again = self.stat(tgid, tgid)
        if again is None or again.start_time != st.start_time:
            return None  # the ID was reused while we read: what we read is mixed
        return ProcessInfo(
            tgid=tgid,
            start_time=st.start_time,
            comm=parse_comm(comm),
            exe=exe.removesuffix(" (deleted)"),  # replaced on disk (e.g. upgraded) since exec
            uid=uid if uid is not None else -1,
        )

    def exe(self, tgid: int) -> str:
        """The process's executable, "" when unreadable.  A leader that called
        pthread_exit() is a zombie without a memory map while its workers run:
        its own `exe` link fails, so read it through a live thread."""
        try:
            return os.readlink(f"{self.root}/{tgid}/exe")
        except OSError as exc:
            self._failed(exc)
        for tid in self.task_ids(tgid)[:MAX_EXE_PROBES]:
            try:
                return os.readlink(f"{self.root}/{tgid}/task/{tid}/exe")
            except OSError as exc:
                self._failed(exc)
        return ""

    def task_ids(self, tgid: int) -> List[int]:
        """The IDs of every thread of a process now, sorted (empty when it is gone)."""
        try:
            names = os.listdir(f"{self.root}/{tgid}/task")
        except OSError as exc:
            self._failed(exc)
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def thread_names(self, tgid: int) -> Set[str]:
        """The names of every thread of a process now (empty when it is gone)."""
        names = (self.thread_name(tgid, tid) for tid in self.task_ids(tgid))
        return {n for n in names if n is not None}

    def thread_name(self, tgid: int, tid: int) -> Optional[str]:
        """/proc/TGID/task/TID/comm: the thread's own name."""
        data = self._read(f"{self.root}/{tgid}/task/{tid}/comm")
        return None if data is None else parse_comm(data)


MAX_EXE_PROBES = 8  # threads tried when the leader's exe cannot be read

INITIAL_PID_NS_INODE = 0xEFFFFFFC  # PROC_PID_INIT_INO: the kernel's fixed inode of init_pid_ns


def in_initial_pid_namespace(root: str = "/proc") -> Optional[bool]:
    """True/False, or None when it cannot be told (no /proc/self/ns/pid)."""
    try:
        link = os.readlink(f"{root}/self/ns/pid")
    except OSError:
        return None
    return link == f"pid:[{INITIAL_PID_NS_INODE}]"


def namespace_refusal(allowed: bool) -> str:
    """Why `run` refuses to start (and a reload is rejected) with
    trace.allow_pid_namespace = `allowed` in this PID namespace ("" if it may run)."""
    if allowed or in_initial_pid_namespace() is not False:
        return ""
    return ("this process is not in the initial PID namespace, but trace_pipe reports task "
            "IDs of that namespace, so /proc here would name other processes and the wrong "
            "ones would be boosted; run it on the host (or set trace.allow_pid_namespace = "
            "true for a trace source of this namespace)")
