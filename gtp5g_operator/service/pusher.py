"""When to push the desired state: coalescing, resync, backoff — a loop component.

What is pushed and how is the writer's business (gthulhu/); the Pusher only
decides when, bounds each push by one deadline (`api.timeout`), retries once
with fresh credentials after a 401, and backs off after failures (no sooner than
a 429's or 503's Retry-After, up to the resync interval).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, FrozenSet, List, Optional, Tuple

from ..core.backoff import Backoff
from ..core.component import NEVER, Component
from ..core.once import StateLog
from ..core.readback import Comparison
from ..core.tracker import ProcessView
from ..gthulhu.errors import ApiError
from ..gthulhu.writer import ApiWriter

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

COALESCE = 0.02  # a change waits this long for more changes (bursts of new threads)
# ... and, after a push, this many times the CPU the push cost (prune, write, read-back;
# not the waits for the server): a push is O(tracked tasks), and with 8,000 tracked (8
# gNBs of 1,000 threads) and a new thread every 50 ms the daemon pushed 7 times a second,
# 76 % of a CPU (the unit allows 50 %, shared with reading the trace).  Pushes now take
# at most 1/(1+PACE) of a CPU; a small host's push (a few ms) is paced below COALESCE.
PACE = 3.0
FIRST_RETRY = 0.5  # first retry delay after a failed push


@dataclass
class PushResult:
    ok: bool
    count: int  # entries written (or attempted)
    at_mono: float
    duration: float
    tids: FrozenSet[int] = frozenset()  # the tracked tasks this push covered
    error: str = ""
    error_kind: str = ""
    comparison: Optional[Comparison] = None  # what the scheduler lists, compared
    readback_source: str = ""  # where that was read
    readback_problem: str = ""  # why there is no comparison


def _server_identity(config: Config) -> Tuple[object, ...]:
    """What the writer's server, credentials and kind depend on."""
    return (dataclasses.replace(config.api, timeout=0.0), config.public_key_pem,
            config.ca_pem, config.password, config.node_name, config.strategy.mode)


def _obtained(writer: ApiWriter) -> int:
    value = writer.describe().get("credentials_obtained")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Pusher(Component):
    name = "pusher"

    def __init__(self, writer: ApiWriter, resync_interval: float,
                 snapshot: Callable[[], List[ProcessView]],
                 clock: Callable[[], float] = time.monotonic,
                 backoff: Optional[Backoff] = None, first_push_delay: float = 0.0,
                 make_writer: Optional[Callable[[Config], ApiWriter]] = None,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        self.writer = writer
        self._cpu_clock = cpu_clock  # the CPU of the thread that pushes (the loop)
        self.resync_interval = resync_interval
        self._snapshot = snapshot  # prunes dead tasks, then lists the tracked ones
        self._make_writer = make_writer
        self._clock = clock
        self._backoff = backoff or Backoff(FIRST_RETRY, resync_interval)
        # Push once soon after start, even an empty set: the API may hold stale strategies.
        self._next = clock() + first_push_delay
        self._quiet_until = 0.0  # no change is pushed before (see PACE)
        self._state = StateLog(log)
        self.on_pushed: Callable[[PushResult], None] = lambda result: None
        self.before_push: Callable[[], None] = lambda: None  # e.g. a watchdog ping
        self.stopping = False
        self.last: Optional[PushResult] = None
        self._readback = StateLog(log)
        self.credentials_before = 0  # obtained by the writers a reload replaced

    def credentials_obtained(self) -> int:
        """Credentials obtained since start, across writers (a counter: never goes back)."""
        return self.credentials_before + _obtained(self.writer)

    # --- the component's face -----------------------------------------------------------

    def next_deadline(self) -> float:
        return NEVER if self.stopping else self._next

    def run_due(self, now: float) -> None:
        if not self.stopping and now >= self._next:
            self.push()

    def reconfigure(self, old: Config, new: Config) -> bool:
        if _server_identity(old) != _server_identity(new) and self._make_writer is not None:
            if self.writer.place(old) != self.writer.place(new):
                self._leave(old)
            self.set_writer(self._make_writer(new))  # new credentials: a new token
        else:
            self.writer.timeout = new.api.timeout
            self.writer.strategy = new.strategy
        if old.strategy.resync_interval != new.strategy.resync_interval:
            self.resync_interval = new.strategy.resync_interval
            self._backoff.cap = self.resync_interval
            self._next = min(self._next, self._clock() + self.resync_interval)
        values = ("priority", "execution_time_ns", "targets")
        return any(getattr(old.strategy, v) != getattr(new.strategy, v) for v in values)

    def _leave(self, old: Config) -> None:
        """A reload moves this host to another server, node or user: the new writer
        never looks at the old place again, so what this host wrote there is removed
        now (as on stop, within api.timeout), or said to be left behind."""
        where = ", ".join(self.writer.place(old))
        error = self.clear(self.writer.timeout)
        if error is None:
            log.info("moving away from %s: removed what this host wrote there", where)
        else:
            log.warning("moving away from %s: could not remove what this host wrote there "
                        "(%s); it is left behind and no longer maintained: remove it by hand "
                        "(%s)", where, error.summary, self.writer.left_behind())

    def close(self) -> None:
        self.writer.close()

    # --- scheduling ---------------------------------------------------------

    def mark_changed(self) -> None:
        """The set changed: push soon, unless we are backing off after a failure."""
        if not self._state.failing:
            self._next = min(self._next, max(self._clock() + COALESCE, self._quiet_until))

    def push_now(self) -> None:
        """Strategy values changed: push at the next turn, backoff or not."""
        self._next = self._clock()

    def set_writer(self, writer: ApiWriter) -> None:
        """New server, key or flavor: start afresh with it, now."""
        self.credentials_before += _obtained(self.writer)
        self.writer.close()
        self.writer = writer
        self._backoff.reset()
        self._state.recovered()
        self._next = self._clock()

    # --- the push -------------------------------------------------------------

    def push(self) -> PushResult:
        """Write the desired state now; schedules the next push from the outcome."""
        begin = self._cpu_clock()
        self.before_push()
        views = self._snapshot()
        start = self._clock()
        tids = frozenset(t for v in views for t in v.tids)
        deadline = start + self.writer.timeout
        try:
            count = self._with_credentials(lambda d: self.writer.write(views, d), deadline) or 0
        except ApiError as exc:
            result = self._failed(exc, start, tids)
        else:
            result = self._read_back(self._succeeded(count, start, tids), views, deadline)
        self._quiet_until = self._clock() + PACE * (self._cpu_clock() - begin)
        self.on_pushed(result)
        return result

    def _read_back(self, result: PushResult, views: List[ProcessView],
                   deadline: float) -> PushResult:
        """What the scheduler will boost, within the same push deadline (one GET)."""
        problem, comparison = self.writer.verify_problem(), None
        if not problem:
            try:
                comparison = self.writer.read_back(views, deadline)
            except ApiError as exc:
                problem = f"read-back failed: {exc.summary}"
                self._readback.problem(exc.kind, logging.WARNING, "cannot read back what the "
                                       "scheduler boosts: %s", exc.summary)
            else:
                self._readback.recovered("reading back what the scheduler boosts works "
                                         "again (%s)", self.writer.readback_source)
        self.last = dataclasses.replace(
            result, comparison=comparison, readback_source=self.writer.readback_source,
            readback_problem=problem or ("" if comparison is not None else "not verified"))
        return self.last

    def clear(self, budget: float) -> Optional[ApiError]:
        """Remove this host's state within `budget` seconds (on stop); the error, if any."""
        self.before_push()
        deadline = self._clock() + min(budget, self.writer.timeout)
        try:
            self._with_credentials(self.writer.clear, deadline)
        except ApiError as exc:
            return exc
        return None

    def _with_credentials(self, call: Callable[[float], Optional[int]],
                          deadline: float) -> Optional[int]:
        """Credentials (if due), the call, and one retry after a 401 — one deadline."""
        fresh = self.writer.authenticate(deadline)
        try:
            return call(deadline)
        except ApiError as exc:
            if exc.kind != "unauthorized" or fresh:
                raise
        log.info("the API refused our credentials (HTTP 401): getting new ones")
        self.writer.drop_credentials()
        self.writer.authenticate(deadline)
        return call(deadline)

    def _succeeded(self, count: int, start: float, tids: FrozenSet[int]) -> PushResult:
        now = self._clock()
        # The recovery names the server as the failure did ("push failed: ... URL"): a
        # journal searched for that URL found the outage and not its end.
        if not self._state.recovered("API reachable again at %s: pushed %d entries",
                                     self.writer.http.base_url, count):
            log.debug("pushed %d entries in %.1f ms", count, (now - start) * 1e3)
        self._backoff.reset()
        self._next = now + self.resync_interval
        self.last = PushResult(True, count, now, now - start, tids)
        return self.last

    def _failed(self, exc: ApiError, start: float, tids: FrozenSet[int]) -> PushResult:
        now = self._clock()
        # A server's Retry-After (429, 503) is the floor of the next try, capped as the
        # backoff is (the resync interval): a hostile or confused one cannot park us.
        delay = max(self._backoff.next_delay(), min(exc.retry_after or 0.0, self._backoff.cap))
        if exc.kind == "stopped":  # no retry follows, and no fault
            log.info("push cut short by the stop (%s)", exc.summary)
        elif not self._state.problem(exc.kind, exc.level, "push failed: %s (retrying "
                                     "with backoff, first in %.1f s)", exc.summary, delay):
            log.debug("push still failing: %s; next try in %.1f s", exc.summary, delay)
        if exc.kind in ("unauthorized", "bad-answer"):
            self.writer.drop_credentials()
        self._next = now + delay
        self.last = PushResult(False, 0, now, now - start, tids,
                               error=str(exc), error_kind=exc.kind)
        return self.last
