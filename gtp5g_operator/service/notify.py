"""sd_notify plumbing that cannot fail silently.

The `sdnotify` package swallows every error unless built with debug=True; a
broken notify socket would then go unnoticed until systemd's watchdog kills
us.  Here errors are logged once (and again only after recovering), and the
daemon runs the same without NOTIFY_SOCKET.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
from typing import Mapping, Optional, Sequence

from ..core.once import StateLog
from ..core.words import u64

log = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str], pid: int) -> Optional[float]:
    """Ping period in seconds (half of WATCHDOG_USEC), or None when disabled.

    Mirrors sd_watchdog_enabled(): WATCHDOG_PID, when set, must be our PID; a value
    that is not an unsigned 64-bit decimal (as systemd parses it) means no watchdog.
    """
    usec = u64(env.get("WATCHDOG_USEC", ""))
    if not usec:
        return None
    wd_pid = env.get("WATCHDOG_PID", "")
    if wd_pid and u64(wd_pid) != pid:
        return None
    return usec / 2e6


SEND_WAIT = 0.5  # seconds a notification may wait for room in systemd's queue
# systemd reads a notification into a buffer of PIPE_BUF bytes (NOTIFY_BUFFER_MAX) and
# ignores a longer one whole: a STATUS= of 4,909 bytes (CPU wait of 120 gNB processes
# of distinct names) took the WATCHDOG=1 (or READY=1) beside it along, and systemd
# killed the service (or timed its start out).  STATUS= is cut to fit instead.
MAX_DATAGRAM = 4095
CUT = "…".encode()


def datagram(fields: Sequence[str]) -> bytes:
    """The fields as one notification of at most MAX_DATAGRAM bytes, in UTF-8 (systemd
    reads UTF-8, and STATUS= may carry any character: a path, a server's words); a
    STATUS= too long for it ends in "…" (a cut character is left out)."""
    data = [f.encode("utf-8", "backslashreplace") for f in fields]
    over = len(b"\n".join(data)) - MAX_DATAGRAM
    for i, field in enumerate(data):
        if over > 0 and field.startswith(b"STATUS="):
            keep = max(len(b"STATUS="), len(field) - over - len(CUT))
            data[i] = field[:keep].decode("utf-8", "ignore").encode() + CUT
    return b"\n".join(data)


def _peer_gone(exc: OSError) -> bool:
    """The socket we are connected to is closed, or none is at the address: only then
    is another socket made (one that works is kept: out of file descriptors, a new one
    could not be had)."""
    return isinstance(exc, (ConnectionRefusedError, ConnectionResetError,
                            FileNotFoundError)) or exc.errno == errno.ENOTCONN


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address  # abstract
        self._socket: Optional[socket.socket] = None
        self._state = StateLog(log)
        if self._address:  # now, while file descriptors are to be had (else at the first send)
            with contextlib.suppress(OSError):
                self._connected()

    def send(self, *fields: str) -> None:
        if not self._address:
            return
        message = datagram(fields)
        fresh = self._socket is None
        try:
            try:
                self._send(self._connected(), message)
            except OSError as exc:
                if fresh or not _peer_gone(exc):
                    raise
                # The socket we connected to is gone (ECONNREFUSED, then ENOTCONN for
                # good, even once one listens there again): connect anew, as sd_notify()
                # does by sending every datagram to the address.
                self.close()
                self._send(self._connected(), message)
        except OSError as exc:
            full, gone = isinstance(exc, BlockingIOError), _peer_gone(exc)
            if gone:
                self.close()
            # One line an episode: a socket going away refuses (ECONNREFUSED), then, once
            # its file is removed too, is not found (ENOENT): the same problem.
            self._state.problem("full" if full else "gone" if gone else str(exc), logging.ERROR,
                                "sd_notify to %s failed: %s (will keep trying)",
                                self._address.replace("\0", "@"),
                                "systemd's queue is full" if full else exc)
            return
        self._state.recovered("sd_notify works again")

    def _connected(self) -> socket.socket:
        if self._socket is None:
            import sdnotify

            # sdnotify connects to $NOTIFY_SOCKET of this process (as systemd set it);
            # its own send is not used (latin-1, and a full queue would block the loop)
            sock = sdnotify.SystemdNotifier(debug=True).socket
            sock.setblocking(False)  # see _send
            self._socket = sock
        return self._socket

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, sock: socket.socket, message: bytes) -> None:
        """A datagram waits while systemd's queue is full (net.unix.max_dgram_qlen, or
        our send buffer): briefly, as a burst (a reload's RELOADING=1, READY=1) must
        arrive whole, and not at all while that fails (PID 1 hung), so that the loop
        goes on.  Sent first and polled after: a socket with a timeout polls first, and
        poll() may say "not writable" while a send would pass (each such send waited
        its whole timeout)."""
        try:
            sock.send(message)
        except BlockingIOError:
            if self._state.failing:
                raise
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            poller.poll(SEND_WAIT * 1e3)
            sock.send(message)
