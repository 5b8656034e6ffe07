"""The last line of defence: no single component's turn can end the process.

Every component already turns the failures it expects (an API down, a
trace source gone, a file it cannot write) into a logged state and a retry
with backoff.  Anything else that escapes a component is a bug — a decode
that was not total, a race nobody thought of.  Under `Restart=on-failure` an
exception out of the loop would be a crash loop, and the gNB would lose its
boost each time; so the loop calls every component through a guard, which

* logs the bug once per place, with its traceback, at ERROR,
* lets that one component rest (backoff: 1 s doubling to a minute; its fds
  unwatched meanwhile, so a broken reader cannot spin the loop),
* and lets the loop, the watchdog pings and every other component go on.

A call that succeeds again ends the rest's growth.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Callable, Collection, Optional, Set, Tuple

from ..core.backoff import Backoff
from ..core.component import Component

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

REST_FIRST = 1.0
REST_CAP = 60.0
NO_FDS: Tuple[int, ...] = ()  # one object: the loop compares watched fds by identity


class GuardedComponent(Component):
    def __init__(self, inner: Component, clock: Callable[[], float]) -> None:
        self.inner = inner
        self.name = inner.name
        self._clock = clock
        self._backoff = Backoff(REST_FIRST, REST_CAP)
        self.resting_until: Optional[float] = None
        self._reported: Set[Tuple[str, str, str]] = set()

    # --- the component's face, guarded ------------------------------------------------
    # Each call is guarded in place rather than through one helper taking a lambda: these
    # run every loop turn, and a closure per call would double the guard's cost.

    def watched_fds(self) -> Collection[int]:
        if self.resting_until is not None:
            return NO_FDS
        try:
            return self.inner.watched_fds()
        except Exception as exc:
            self._bug("watched_fds", exc)
            return NO_FDS

    def on_readable(self, fd: int) -> None:
        try:
            self.inner.on_readable(fd)
        except Exception as exc:
            self._bug("on_readable", exc)
        else:
            self._backoff.failures = 0

    def fd_failed(self, fd: int, exc: OSError) -> None:
        try:
            self.inner.fd_failed(fd, exc)
        except Exception as bug:
            self._bug("fd_failed", bug)

    def next_deadline(self) -> float:
        if self.resting_until is not None:
            return self.resting_until
        try:
            return self.inner.next_deadline()
        except Exception as exc:
            self._bug("next_deadline", exc)
            return self.resting_until or self._clock()

    def run_due(self, now: float) -> None:
        if self.resting_until is not None:
            if now < self.resting_until:
                return
            self.resting_until = None  # each component checks its own deadline in run_due
        try:
            self.inner.run_due(now)
        except Exception as exc:
            self._bug("run_due", exc)
        else:
            self._backoff.failures = 0

    def reconfigure(self, old: Config, new: Config) -> bool:
        try:
            return self.inner.reconfigure(old, new)
        except Exception as exc:
            self._bug("reconfigure", exc)
            return False

    def close(self) -> None:
        try:
            self.inner.close()
        except Exception as exc:
            self._bug("close", exc)

    # --- a bug ------------------------------------------------------------------------------

    def _bug(self, where: str, exc: Exception) -> None:
        delay = self._backoff.next_delay()
        self.resting_until = self._clock() + delay
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        place = f"{frame[0].filename}:{frame[0].lineno}" if frame else "?"
        key = (where, type(exc).__name__, place)
        if key in self._reported:
            log.debug("%s: %s again (%s); resting %.1f s", self.name, type(exc).__name__,
                      place, delay)
            return
        self._reported.add(key)
        log.error("bug: %s.%s raised %s: %s; this part rests %.1f s (then longer while it "
                  "keeps failing) and everything else goes on; please report this with the "
                  "traceback", self.name, where, type(exc).__name__, exc, delay,
                  exc_info=(type(exc), exc, exc.__traceback__))
