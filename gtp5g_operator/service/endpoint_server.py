"""The endpoint process: /metrics and /health from what the daemon published.

The daemon (service/endpoint.py) binds the listening socket before READY=1
and starts this process with it (`--fd N`), a pipe on stdin that ends when
the daemon does, and a pipe on stdout for one status line: "serving", or
"error: ..." just before it exits.  It serves only files — metrics.prom,
health.json and the heartbeat the loop updates every turn — so it answers
while the daemon's loop is stalled or the daemon stopped.  GET and HEAD of
/metrics and /health; anything else is 404.

Bounded whatever clients do, in one thread and one `selectors` loop:

* at most MAX_CONNECTIONS at a time, and one more closes the oldest.  A
  probe sends its request in one segment and is answered in the turn it
  arrives, so the oldest connection is one still trickling its request or
  not reading its answer: dropping it keeps /health answering.  (A 503 to
  the newcomer instead would let a slow-loris turn into failed health
  checks, the one thing /health must not report.)
* one deadline per connection for its whole exchange — DEADLINE from accept
  to the answer's last byte — not a timeout per read: a request trickled a
  byte at a time is dropped at the deadline, without an answer;
* a request head of at most MAX_HEAD bytes; /metrics' body is read once per
  change of the file and shared by every connection sending it;
* at most CPU_SHARE of one CPU on average, whatever the rate of requests: this
  process shares the unit's CPUQuota= with the daemon, and a flood of requests
  from any local user made it take most of that quota (the daemon's trace
  reading slowed 2-3x).  Past its share it rests, and new connections wait in
  the listener's backlog.

It imports little (no http.server, threads, logging, argparse, nor typing at
run time): its memory counts against the unit's MemoryMax beside the
daemon's.  It serves with no capability or refuses to; as root (the daemon
run by hand) it first becomes nobody.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import stat
import sys
import time

from .endpoint_http import MAX_HEAD, BadRequest, head_length, parse_request_line, response
from .health import health_answer
from .runtime_names import HEALTH_FILE, HEARTBEAT_FILE, METRICS_FILE, decode_heartbeat

TYPE_CHECKING = False  # `typing` costs this process about 2 MB: for the type checker only
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

MAX_CONNECTIONS = 64
DEADLINE = 5.0  # seconds from accept to the last byte of the answer
ACCEPTS_PER_TURN = 16  # a flood of connections cannot starve the ones already accepted
LISTENER_REST = 0.5  # seconds without accepting after accept() failed for want of resources
CPU_SHARE = 0.1  # of one CPU, on average: the rest of the unit's CPUQuota= is the daemon's
CPU_BURST = 0.05  # CPU seconds it may spend at once beyond its share (a scrape, a burst)
METRICS_LIMIT = 1 << 20  # the exposition text is a few KiB
HEALTH_LIMIT = 64 << 10
NOBODY = 65534  # the overflow uid/gid: nobody/nogroup
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
PARENT_FD = 0  # the daemon's pipe: EOF when the daemon is gone
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY


# --- what is served ---------------------------------------------------------------------


class Published:
    """The daemon's runtime directory, opened once: as root, before becoming
    nobody, so that only this directory (not those above it) must be
    searchable by nobody."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._metrics: Tuple[Any, bytes] = (None, b"")  # (file identity, content)

    def read(self, name: str, limit: int, cached: bool = False) -> Optional[bytes]:
        """A published file's content; None when it is missing, not a regular
        file or larger than `limit` (the daemon's own files: each request says
        so in its answer, nothing to log).  `cached`: reread only when the file
        was replaced (the daemon replaces, never rewrites, metrics.prom)."""
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return self.read(name, limit, cached) if self._reopen() else None
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                return None
            key = (name, st.st_ino, st.st_mtime_ns, st.st_size)
            if cached and key == self._metrics[0]:
                return self._metrics[1]
            data = _read_to_end(fd, limit)
        except OSError:
            return None
        finally:
            os.close(fd)
        if cached and data is not None:
            self._metrics = (key, data)
        return data

    def _reopen(self) -> bool:
        """Open the directory again when the one we hold is no longer at its path:
        removed under the running daemon (systemd removes RuntimeDirectory= when a
        refused start of the unit stops) and made again by the daemon's next write,
        which this process would otherwise never see (/health: 503 for good).  Only
        after a missing file, so it costs nothing while all is well.  As nobody now:
        fails where only root may search the path, and we keep the old one."""
        try:
            st, ours = os.stat(self.directory), os.fstat(self.fd)
            if (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino):
                return False
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        os.close(self.fd)
        self.fd = fd
        return True

    def check_readable(self) -> None:
        """The heartbeat (made by the daemon before this process starts) must be
        readable, else every /health would say `stalled`: refuse to serve."""
        try:
            os.close(os.open(HEARTBEAT_FILE, _OPEN_FLAGS, dir_fd=self.fd))
        except FileNotFoundError:
            return  # the daemon could not make it and has said why
        except OSError as exc:
            raise OSError(exc.errno, f"cannot read {self.directory}/{HEARTBEAT_FILE} as uid "
                          f"{os.getuid()}: {exc.strerror}") from None


def _read_to_end(fd: int, limit: int) -> Optional[bytes]:
    chunks: List[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def answer(method: str, path: str, files: Published, now: float, wall: float
           ) -> Tuple[bytes, ...]:
    """The whole answer to one request (monotonic `now`, wall-clock `wall`)."""
    with_body = method != "HEAD"
    if method not in ("GET", "HEAD") or path not in ("/metrics", "/health"):
        return response(404, "text/plain", b"not found\n", with_body, wall)
    if path == "/metrics":
        text = files.read(METRICS_FILE, METRICS_LIMIT, cached=True)
        if text is None:
            return response(503, "text/plain", b"no metrics published yet\n", with_body, wall)
        return response(200, PROMETHEUS_TEXT, text, with_body, wall)
    heartbeat = decode_heartbeat(files.read(HEARTBEAT_FILE, 64))
    code, doc = health_answer(_health_doc(files), heartbeat, now)
    body = (json.dumps(doc, sort_keys=True) + "\n").encode()
    return response(code, "application/json", body, with_body, wall)


def _health_doc(files: Published) -> Optional[Dict[str, Any]]:
    data = files.read(HEALTH_FILE, HEALTH_LIMIT)
    try:
        doc = json.loads(data) if data is not None else None
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


# --- the loop ------------------------------------------------------------------------------


class Connection:
    __slots__ = ("deadline", "draining", "fd", "head", "open", "out", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.deadline = deadline
        self.head = bytearray()  # the request head as it arrives
        self.out: List[memoryview] = []  # what is left to send
        self.draining = False  # answered: read and drop until the client closes
        self.open = True


class Server:
    """Accepts, reads one request head, answers, closes: see the module's bounds."""

    def __init__(self, listener: socket.socket, files: Published, parent_fd: int = PARENT_FD,
                 max_connections: int = MAX_CONNECTIONS, deadline: float = DEADLINE) -> None:
        self._listener = listener
        self._max_connections = max_connections
        self._deadline = deadline
        self._files = files
        self._parent_fd = parent_fd
        self._conns: Dict[int, Connection] = {}  # oldest first: all have the same deadline
        self._resting_until: Optional[float] = None  # the listener's rest after accept failed
        # The CPU this thread (the process's only one) may still spend: CPU_SHARE of
        # the time that passes, at most CPU_BURST saved up.
        self._cpu_credit = CPU_BURST
        self._paced_at, self._cpu_at = time.monotonic(), time.thread_time()
        self._sel = selectors.DefaultSelector()
        listener.setblocking(False)
        self._sel.register(listener, selectors.EVENT_READ)
        self._sel.register(parent_fd, selectors.EVENT_READ)

    def run(self) -> None:
        """Serve until the daemon is gone (its pipe ends)."""
        while True:
            for key, events in self._sel.select(self._timeout()):
                if key.fd == self._parent_fd:
                    if not _parent_alive(self._parent_fd):
                        return
                elif key.data is None:
                    self._accept()
                elif key.data.open:  # not closed earlier in this turn
                    self._ready(key.data, events)
            self._expire()
            self._pace()

    def _timeout(self) -> Optional[float]:
        due = [self._resting_until] if self._resting_until is not None else []
        if self._conns:
            due.append(next(iter(self._conns.values())).deadline)
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _accept(self) -> None:
        for turn in range(ACCEPTS_PER_TURN):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # that client is gone; the next one waits
                if exc.errno not in (errno.EMFILE, errno.ENFILE) or not self._conns:
                    self._rest_listener()  # out of memory or fds: no busy loop
                elif turn == 0:  # the listener was ready: someone waits, make room
                    self._close(next(iter(self._conns.values())))
                    continue
                return  # accept() claims an fd before it knows whether anyone waits
            if len(self._conns) >= self._max_connections:
                self._close(next(iter(self._conns.values())))
            sock.setblocking(False)
            conn = Connection(sock, time.monotonic() + self._deadline)
            self._conns[conn.fd] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _ready(self, conn: Connection, events: int) -> None:
        if conn.out:
            if events & selectors.EVENT_WRITE:
                self._send(conn)
            return
        try:
            data = conn.sock.recv(4096 if conn.draining else MAX_HEAD + 1 - len(conn.head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)  # the client is done, or gave up
        elif not conn.draining:
            self._received(conn, data)

    def _received(self, conn: Connection, data: bytes) -> None:
        searched = len(conn.head)
        conn.head += data
        if conn.head.startswith((b"\r", b"\n")):  # RFC 9112 2.2: ignore empty lines before
            del conn.head[:len(conn.head) - len(conn.head.lstrip(b"\r\n"))]  # a request
            searched = 0
        try:
            end = head_length(conn.head, searched)
            if not end:
                return
            method, path = parse_request_line(conn.head[:end])
            out = answer(method, path, self._files, time.monotonic(), time.time())
        except BadRequest as bad:
            out = response(bad.status, "text/plain", f"{bad}\n".encode(), True, time.time())
        conn.head = bytearray()
        conn.out = [memoryview(b) for b in out]
        self._send(conn)

    def _send(self, conn: Connection) -> None:
        while conn.out:
            try:
                sent = conn.sock.sendmsg(conn.out)
            except (BlockingIOError, InterruptedError):
                self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)
                return
            except OSError:
                self._close(conn)
                return
            while sent and conn.out:
                first = conn.out[0]
                if sent < len(first):
                    conn.out[0] = first[sent:]
                    break
                sent -= len(first)
                conn.out.pop(0)
        # Answered.  Closing now, with a request body or pipelined bytes unread,
        # would send a reset that can destroy the answer in the client's buffer:
        # end our side, then read and drop until the client closes (or the deadline).
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.draining = True
        self._sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def _pace(self) -> None:
        """Rest while the clients have made this process spend more than its share
        of a CPU (a turn is bounded, so a rest is short: the daemon's EOF and the
        connections' deadlines are seen right after it)."""
        now, cpu = time.monotonic(), time.thread_time()
        self._cpu_credit = min(CPU_BURST, self._cpu_credit + (now - self._paced_at) * CPU_SHARE
                               - (cpu - self._cpu_at))
        self._paced_at, self._cpu_at = now, cpu
        if self._cpu_credit < 0:
            time.sleep(-self._cpu_credit / CPU_SHARE)

    def _rest_listener(self) -> None:
        """Stop accepting for LISTENER_REST: the listener stays ready while accept()
        fails, and the loop must not spin on it."""
        self._sel.unregister(self._listener)
        self._resting_until = time.monotonic() + LISTENER_REST

    def _expire(self) -> None:
        now = time.monotonic()
        if self._resting_until is not None and now >= self._resting_until:
            self._resting_until = None
            self._sel.register(self._listener, selectors.EVENT_READ)
        while self._conns:
            oldest = next(iter(self._conns.values()))
            if oldest.deadline > now:
                return
            self._close(oldest)

    def _close(self, conn: Connection) -> None:
        conn.open = False
        del self._conns[conn.fd]
        self._sel.unregister(conn.sock)
        conn.sock.close()


def _parent_alive(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))  # the daemon never writes: data is ignored
    except BlockingIOError:
        return True
    except OSError:
        return False


# --- the process -------------------------------------------------------------------------


def parse_arguments(argv: List[str]) -> Tuple[int, str]:
    """(listening fd, runtime directory) from `--fd N --dir PATH`."""
    if len(argv) != 4 or argv[0] != "--fd" or argv[2] != "--dir" or not argv[1].isdigit():
        raise ValueError(f"usage: {__name__} --fd N --dir PATH (got {' '.join(argv)!r})")
    return int(argv[1]), argv[3]


def leave_root() -> None:
    """As root (the daemon run by hand, not by the unit), become nobody: no
    capability left, and no file of root's within reach."""
    if os.getuid() != 0 and os.geteuid() != 0:
        return
    step = "setgroups"
    try:
        os.setgroups([])
        step = "setgid"
        os.setgid(NOBODY)
        step = "setuid"
        os.setuid(NOBODY)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot leave root: {step}(): {exc.strerror}") from None


def held_capabilities(status: str) -> Dict[str, int]:
    """The non-empty permitted, effective and ambient sets in /proc/PID/status text."""
    held = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("CapPrm", "CapEff", "CapAmb") and int(value, 16):
            held[name] = int(value, 16)
    return held


def refuse_capabilities() -> None:
    """Serve with no capability, or not at all: the outcome is checked, not assumed."""
    # os.open/os.read and bytes.decode, not open(..., encoding=): the child runs with -S as
    # nobody, where a text file's codec lookup fails (LookupError; two endpoint tests saw it)
    fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(fd, 1 << 16).decode("ascii", "replace")
    finally:
        os.close(fd)
    held = held_capabilities(text)
    if held:
        sets = ", ".join(f"{name}={value:#x}" for name, value in held.items())
        raise OSError(errno.EPERM, f"the endpoint process holds capabilities ({sets}): "
                      "refusing to serve with them")


def say(line: str) -> None:
    """One status line to the daemon."""
    try:
        os.write(1, line.encode("utf-8", "replace") + b"\n")
    except OSError:
        return  # the daemon is gone already: nobody to tell


def start(argv: List[str]) -> Tuple[socket.socket, Published]:
    fd, directory = parse_arguments(argv)
    try:
        listener = socket.socket(fileno=fd)
    except OSError as exc:
        raise OSError(exc.errno, f"fd {fd}: {exc.strerror}") from None
    if not listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise OSError(errno.EINVAL, f"fd {fd} is not a listening socket")
    try:
        files = Published(directory)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open {directory}: {exc.strerror}") from None
    leave_root()
    refuse_capabilities()
    files.check_readable()
    return listener, files


def main(argv: Optional[List[str]] = None) -> int:
    try:
        listener, files = start(sys.argv[1:] if argv is None else argv)
    except (OSError, ValueError) as exc:
        say(f"error: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")
        return 2
    say("serving")
    try:
        with listener:  # closed, not left to the exit (python -X dev: ResourceWarning)
            Server(listener, files).run()
    except Exception as exc:  # one line for the daemon's log, not a traceback in the journal
        say(f"error: the endpoint process failed: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
