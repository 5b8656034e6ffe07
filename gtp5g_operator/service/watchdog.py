"""systemd watchdog pings — a loop component — and the bound they must keep.

Pings are due every `interval` = WatchdogSec / 2.  The loop is synchronous,
so the longest gap between two pings is set by the longest thing a turn can
do between them: a push, which may block for up to `api.timeout`.  Pinging
right before each push (when the last ping is older than `PRE_PUSH`) means
a push can follow a ping by at most PRE_PUSH, so

    gap <= max(interval, PRE_PUSH + api.timeout + TURN_MARGIN)

where TURN_MARGIN covers the rest of a turn (a liveness pass over 10,000
tasks takes about 0.13 s).  systemd kills the service when a gap exceeds
WatchdogSec, and interval < WatchdogSec always, so the condition is

    PRE_PUSH + api.timeout + TURN_MARGIN < WatchdogSec.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Callable, Optional

from ..core.component import NEVER, Component
from .notify import Notifier

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

TURN_MARGIN = 0.5
# Pings at most this often: a WatchdogSec of microseconds (a typo for seconds) made the
# loop spin, tens of thousands of datagrams a second.  budget_problem() warns of it.
MIN_PING_GAP = 0.01


def pre_push_threshold(interval: float) -> float:
    # Ping before a push if the last ping is older than this; bounded so that
    # a burst of pushes does not become a burst of pings.
    return min(1.0, interval / 4)


def budget_problem(interval: Optional[float], api_timeout: float) -> str:
    """Why api.timeout could get the service killed by the watchdog, or ""."""
    if interval is None:
        return ""
    watchdog_sec = 2 * interval
    gap = max(interval, pre_push_threshold(interval) + api_timeout + TURN_MARGIN)  # the bound
    if gap < watchdog_sec:
        return ""
    limit = watchdog_sec - pre_push_threshold(interval) - TURN_MARGIN
    # The least WatchdogSec=W for this timeout: W - min(1, W/8) - TURN_MARGIN > api.timeout.
    needed = 8 * (api_timeout + TURN_MARGIN) / 7
    if needed > 8:
        needed = api_timeout + 1.0 + TURN_MARGIN
    raise_it = f"raise WatchdogSec= to {(math.floor(needed * 10) + 1) / 10:g}s or more"
    # Rounded down (every value under it fits) to hundredths: to tenths, a limit from
    # 0.1 to 0.2 s read "below 0.1 s", under api.timeout's least value (0.1 s), which
    # itself fits there.  When not even that fits, only WatchdogSec= is advised (not
    # "below -0.5 s").
    below = math.floor(limit * 100) / 100
    keep = (f"keep api.timeout below {below:g} s" if below > 0.1 else
            "set api.timeout = 0.1 (its least)" if limit > 0.1 else "")
    advice = f"{keep} or {raise_it}" if keep else raise_it
    return (f"api.timeout ({api_timeout:g} s) is too long for WatchdogSec={watchdog_sec:g}s: a "
            f"hung API could hold the loop so that pings come {gap:.1f} s apart and systemd "
            f"kills the service; {advice}")


class WatchdogPinger(Component):
    name = "watchdog"

    def __init__(self, notifier: Notifier, interval: Optional[float],
                 clock: Callable[[], float], status: Callable[[], str]) -> None:
        self.notifier = notifier
        self.interval = interval  # None: no watchdog
        self._clock = clock
        self._status = status
        self._next = clock()
        self._last = -NEVER

    def next_deadline(self) -> float:
        return NEVER if self.interval is None else self._next

    def run_due(self, now: float) -> None:
        if self.interval is not None and now >= self._next:
            self.ping(now)

    def ping(self, now: float) -> None:
        self.notifier.send("WATCHDOG=1", "STATUS=" + self._status())
        self._last = now
        if self.interval is not None:
            self._next = now + max(self.interval, MIN_PING_GAP)

    def ping_if_stale(self) -> None:
        """Before work that may block for up to api.timeout."""
        if self.interval is not None:
            now = self._clock()
            if now - self._last >= pre_push_threshold(self.interval):
                self.ping(now)

    def check_budget(self, api_timeout: float) -> None:
        problem = budget_problem(self.interval, api_timeout)
        if problem:
            log.warning("%s", problem)

    def reconfigure(self, old: Config, new: Config) -> bool:
        if old.api.timeout != new.api.timeout:
            self.check_budget(new.api.timeout)
        return False
