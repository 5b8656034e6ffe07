"""sd_notify plumbing that cannot fail silently.

The `sdnotify` package swallows every error unless built with debug=True; a
broken notify socket would then go unnoticed until systemd's watchdog kills
us.  Here errors are logged once (and again only after recovering), and the
daemon runs the same without NOTIFY_SOCKET.
"""

from __future__ import annotations

import logging
import os
import select
import socket
from typing import Mapping, Optional

from ..core.once import StateLog
from ..core.words import decimal

log = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str], pid: int) -> Optional[float]:
    """Ping period in seconds (half of WATCHDOG_USEC), or None when disabled.

    Mirrors sd_watchdog_enabled(): WATCHDOG_PID, when set, must be our PID; a value
    that is not an unsigned 64-bit decimal (as systemd parses it) means no watchdog.
    """
    usec = _u64(env.get("WATCHDOG_USEC", ""))
    if not usec:
        return None
    wd_pid = env.get("WATCHDOG_PID", "")
    if wd_pid and _u64(wd_pid) != pid:
        return None
    return usec / 2e6


def _u64(text: str) -> Optional[int]:
    """An ASCII decimal below 2**64, else None.  str.isdigit() alone takes "²" (which
    int() refuses) and any length (too large for a float): either crashed the start."""
    if not decimal(text) or len(text) > 20:
        return None
    value = int(text)
    return value if value < 2**64 else None


SEND_WAIT = 0.5  # seconds a notification may wait for room in systemd's queue


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._socket: Optional[socket.socket] = None
        self._state = StateLog(log)
        if env.get("NOTIFY_SOCKET"):
            import sdnotify

            try:
                self._socket = sdnotify.SystemdNotifier(debug=True).socket  # connected
            except OSError as exc:
                log.error("cannot connect to NOTIFY_SOCKET: %s; systemd will not hear "
                          "from us", exc)
            else:
                self._socket.setblocking(False)  # see _send

    def send(self, *fields: str) -> None:
        if self._socket is None:
            return
        # systemd reads UTF-8, and STATUS= may carry any character (a path, a server's
        # words); sdnotify's own send would encode latin-1, raising on anything else
        message = "\n".join(fields).encode("utf-8", "backslashreplace")
        try:
            self._send(self._socket, message)
        except OSError as exc:
            full = isinstance(exc, BlockingIOError)
            self._state.problem("full" if full else str(exc), logging.ERROR,
                                "sd_notify failed: %s (will keep trying)",
                                "systemd's queue is full" if full else exc)
            return
        self._state.recovered("sd_notify works again")

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
