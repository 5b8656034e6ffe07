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
from typing import TYPE_CHECKING, Callable, Collection, Optional, Set, Tuple, TypeVar

from ..core.backoff import Backoff
from ..core.component import Component

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

REST_FIRST = 1.0
REST_CAP = 60.0
T = TypeVar("T")
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

    def watched_fds(self) -> Collection[int]:
        if self.resting_until is not None:
            return NO_FDS
        return self._call("watched_fds", lambda: self.inner.watched_fds(), NO_FDS)

    def on_readable(self, fd: int) -> None:
        self._call("on_readable", lambda: self.inner.on_readable(fd), None, succeeded=True)

    def fd_failed(self, fd: int, exc: OSError) -> None:
        self._call("fd_failed", lambda: self.inner.fd_failed(fd, exc), None)

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
        self._call("run_due", lambda: self.inner.run_due(now), None, succeeded=True)

    def reconfigure(self, old: Config, new: Config) -> bool:
        return self._call("reconfigure", lambda: self.inner.reconfigure(old, new), False)

    def close(self) -> None:
        self._call("close", lambda: self.inner.close(), None)

    def _call(self, where: str, call: Callable[[], T], failed: T, succeeded: bool = False) -> T:
        """`call()`, or `failed` once the bug is logged; `succeeded`: a call that succeeds
        ends the rest's growth."""
        try:
            result = call()
        except Exception as exc:
            self._bug(where, exc)
            return failed
        if succeeded:
            self._backoff.failures = 0
        return result

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
