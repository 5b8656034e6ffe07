"""sd_notify plumbing that cannot fail silently.

The `sdnotify` package swallows every error unless built with debug=True; a
broken notify socket would then go unnoticed until systemd's watchdog kills
us.  Here errors are logged once (and again only after recovering), and the
daemon runs the same without NOTIFY_SOCKET.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Optional

from ..core.once import StateLog

log = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str], pid: int) -> Optional[float]:
    """Ping period in seconds (half of WATCHDOG_USEC), or None when disabled.

    Mirrors sd_watchdog_enabled(): WATCHDOG_PID, when set, must be our PID.
    """
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wd_pid = env.get("WATCHDOG_PID", "")
    if wd_pid and (not wd_pid.isdigit() or int(wd_pid) != pid):
        return None
    return int(usec) / 2e6


SEND_TIMEOUT = 0.5  # seconds a notification may wait for room in systemd's queue


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._notifier = None
        self._state = StateLog(log)
        if env.get("NOTIFY_SOCKET"):
            import sdnotify

            try:
                self._notifier = sdnotify.SystemdNotifier(debug=True)
            except OSError as exc:
                log.error("cannot connect to NOTIFY_SOCKET: %s; systemd will not hear "
                          "from us", exc)

    def send(self, *fields: str) -> None:
        if self._notifier is None:
            return
        # sdnotify sends a str as latin-1 (raising on anything else), systemd reads UTF-8,
        # and STATUS= may carry any character (a path, a server's words): hand it the
        # UTF-8 bytes as latin-1 text
        message = "\n".join(fields).encode("utf-8", "backslashreplace").decode("latin-1")
        # A datagram waits while systemd's queue is full (net.unix.max_dgram_qlen, 10 by
        # default): briefly, as a burst (a reload's RELOADING=1, READY=1) must arrive whole;
        # once one has timed out (PID 1 hung), none waits until one gets through again,
        # so the loop goes on
        self._notifier.socket.settimeout(0.0 if self._state.failing else SEND_TIMEOUT)
        try:
            self._notifier.notify(message)
        except OSError as exc:
            full = isinstance(exc, (TimeoutError, BlockingIOError))  # one problem, not two
            self._state.problem("queue full" if full else str(exc), logging.ERROR,
                                "sd_notify failed: %s (will keep trying)", exc)
            return
        self._state.recovered("sd_notify works again")
