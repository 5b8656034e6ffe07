"""Signals, as a loop component: the handlers only note the signal and wake the loop.

`signal.set_wakeup_fd` writes a byte to a socket the loop watches, which wakes
it; which signals came is what the handlers noted (a set), not those bytes: a
full socket drops them, and a burst of SIGHUPs while the loop waited on a hung
API (some 300 fill it) made it drop a SIGTERM's, a stop never taken.  The
signals of one turn are handled together, so a burst of SIGHUPs is one reload.
Every signal whose default action would end the process is caught, so none
leaves a stale state.json behind (SIGKILL cannot be, SIGABRT is left to
systemd's watchdog, which sends it to get a core dump, and a crash's SIGSEGV,
SIGBUS, SIGILL, SIGFPE, SIGTRAP and SIGSYS keep theirs: the README and the man
page say so).
`close()` restores the handlers and the wakeup fd found at `install()`.

One exception: the first stop signal that finds an API exchange waiting on the
network also ends that wait (gthulhu/http.py's StopRequested, which fails the
exchange as its deadline would), else the stop would wait up to `api.timeout`
(60 s allowed, past the unit's TimeoutStopSec); so does every wait that begins
before the loop takes the stop (http.py's stop_pending).  Later
stop signals never raise, so the clear on stop is not cut short.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from typing import Any, Callable, Collection, Dict, Optional, Set, Tuple

from ..core.component import Component
from ..gthulhu.http import StopRequested, in_network_wait, stop_pending

log = logging.getLogger(__name__)

RELOAD = signal.SIGHUP
REPORT = signal.SIGUSR1  # log the state
DEBUG_TOGGLE = signal.SIGUSR2  # switch debug logging on / back
STOP = tuple(s for s in (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGALRM, signal.SIGVTALRM,
    signal.SIGPROF, signal.SIGIO, signal.SIGPWR, signal.SIGXCPU,
    getattr(signal, "SIGSTKFLT", None),
    # the real-time signals end a process by default too
    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1)) if s is not None)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # the enum names only SIGRTMIN and SIGRTMAX
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
HANDLED = (RELOAD, REPORT, DEBUG_TOGGLE, *STOP)
CLEAN_STOP = (signal.SIGTERM, signal.SIGINT)  # a stop on purpose (systemd's own is SIGTERM)


def stop_status(signum: Optional[int]) -> int:
    """The exit status after the clean stop signal `signum` asked for: 0 for SIGTERM and
    SIGINT (a stop on purpose), 128 + N for any other signal N, as a shell reports a death
    by it.  systemd took an exit 0 after SIGQUIT, SIGXCPU (LimitCPU=), SIGPWR or a
    real-time signal for an end on purpose: Restart=on-failure left the service stopped,
    its gNB unboosted.  A status, not the signal raised again: SIGQUIT and SIGXCPU would
    dump the core of a process that stopped cleanly (its memory holds the credentials)."""
    return 0 if signum is None or signum in CLEAN_STOP else 128 + signum


class SignalWaker(Component):
    name = "signals"

    def __init__(self, on_reload: Callable[[], None], on_stop: Callable[[str], None],
                 on_report: Callable[[], None], on_debug_toggle: Callable[[], None]) -> None:
        self._actions = (on_reload, on_stop, on_report, on_debug_toggle)
        self._r: Optional[socket.socket] = None
        self._w: Optional[socket.socket] = None
        self._fds: Tuple[int, ...] = ()  # the same object while unchanged (daemon.py)
        self._previous: Dict[int, Any] = {}
        self._previous_fd = -1
        self._stop_seen = False
        self._noted: Set[int] = set()  # the signals that came since the last dispatch
        self.stopped_by: Optional[int] = None  # the stop signal taken

    def install(self) -> None:
        self._r, self._w = socket.socketpair()
        for sock in (self._r, self._w):
            sock.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self._fds = (self._r.fileno(),)
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        stop_pending("")  # none pending from an earlier daemon of this process (tests)
        # held since the start (cli.py): any that came meanwhile reach the handlers now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._noted.add(signum)
        if signum in STOP and not self._stop_seen:
            self._stop_seen = True
            why = f"stopped by {signal_name(signum)}"
            stop_pending(why)
            if in_network_wait():
                raise StopRequested(why)

    def watched_fds(self) -> Collection[int]:
        return self._fds

    def on_readable(self, fd: int) -> None:
        assert self._r is not None
        with contextlib.suppress(BlockingIOError):
            while self._r.recv(4096):  # the bytes only woke the loop
                pass
        # A signal noted after this swap wrote its byte after the reads: the next turn.
        noted, self._noted = self._noted, set()
        self.dispatch(noted)

    def dispatch(self, signums: Collection[int]) -> None:
        on_reload, on_stop, on_report, on_debug_toggle = self._actions
        stops = [s for s in STOP if s in signums]
        if stops:
            stop_pending("")  # taken
            self.stopped_by = stops[0]
            on_stop(signal_name(stops[0]))
            return
        if RELOAD in signums:
            on_reload()  # once, however many SIGHUPs came in this turn
        if REPORT in signums:
            on_report()
        if DEBUG_TOGGLE in signums:
            on_debug_toggle()

    def close(self) -> None:
        if self._r is None:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
        signal.set_wakeup_fd(self._previous_fd)
        for sock in (self._r, self._w):
            if sock is not None:
                sock.close()
        self._r = self._w = None
        self._fds = ()
